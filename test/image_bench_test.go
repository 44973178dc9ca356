package test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
)

// BenchmarkModelImageStart is the time to healthy (from "Run ECS task" to the last "Poll health") of one model
// deployed three ways in one run, on the real local workflow and real Ollama: pulled at start from its registry (a
// stack without model images), from its image the first time on this machine (the image's layers unpacked), and
// from its image again (layers already on the machine, as on a GPU host that ran the model before). Target: a
// start from the image at least 3x faster than a pull at start.
//
//	go test -run '^$' -bench ModelImageStart -benchtime 1x ./test/
func BenchmarkModelImageStart(b *testing.B) {
	sizes := syntheticModels[1:] // 279 and 1,099 MB
	b.ReportMetric(0, "ns/op")
	for b.Loop() {
		for _, opts := range sizes {
			raw, err := tinymodel.Bytes(opts)
			if err != nil {
				b.Fatal(err)
			}
			model := "synthetic-" + opts.Name + ":f16"
			pulled := startStack(b, local.Options{NoModelImages: true})
			baked := startStack(b, local.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			for _, s := range []*local.Stack{pulled, baked} {
				if _, err := s.PushModel(ctx, model, raw); err != nil {
					b.Fatal(err)
				}
			}
			pull := timeToHealthy(b, pulled, model, "pull")
			first := timeToHealthy(b, baked, model, "image-1")
			again := timeToHealthy(b, baked, model, "image-2")
			cancel()
			n := opts.Name
			b.ReportMetric(float64(len(raw))/1e6, n+"-model-MB")
			b.ReportMetric(pull.Seconds(), n+"-pull-s")
			b.ReportMetric(first.Seconds(), n+"-image-first-s")
			b.ReportMetric(again.Seconds(), n+"-image-s")
			b.ReportMetric(pull.Seconds()/again.Seconds(), n+"-x")
			met := 0.0
			if pull >= 3*again {
				met = 1
			}
			b.ReportMetric(met, n+"-target-met")
			fmt.Fprintf(os.Stderr, "%s: %.0f MB model: time to healthy %s pulled at start, %s from its image the first time, %s from its image again (%.1fx)\n",
				n, float64(len(raw))/1e6, pull.Round(time.Millisecond), first.Round(time.Millisecond), again.Round(time.Millisecond), pull.Seconds()/again.Seconds())
		}
	}
}

// timeToHealthy deploys model by name and returns the time from "Run ECS task" to the end of the last "Poll health".
func timeToHealthy(b *testing.B, s *local.Stack, model, id string) time.Duration {
	b.Helper()
	arn, err := s.Deploy(ctxFor(b, 10*time.Second), events.DeployRequest{Model: model, DeploymentID: id})
	if err != nil {
		b.Fatal(err)
	}
	ex := waitDone(b, s, arn)
	if ex.Status != engine.StatusSucceeded {
		b.Fatalf("%s: %s %s: %s", id, ex.Status, ex.Error, ex.Cause)
	}
	var start, end time.Time
	for _, r := range deployment.StateRuns(ex.Events) {
		switch r.Name {
		case "Run ECS task":
			if start.IsZero() {
				start = ex.StartDate.Add(r.Start)
			}
		case "Poll health":
			end = ex.StartDate.Add(r.Start + r.Duration)
		}
	}
	return end.Sub(start)
}
