package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog/gguf"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	localreg "github.com/ollama-ecs/ollama-ecs/local/registry"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/planner"
	"github.com/ollama-ecs/ollama-ecs/test/tools"
)

// syntheticModels are the synthetic llama models (F16) the registry and model image benchmarks use: 0.23, 279
// and 1,099 MB.
var syntheticModels = []tinymodel.Options{
	{Name: "tiny", ContextLength: 8192},
	{Name: "s", BlockCount: 12, EmbeddingLength: 1024, FeedForwardLength: 2816, HeadCount: 16, HeadCountKV: 4, VocabSize: 2000, ContextLength: 8192},
	{Name: "m", BlockCount: 12, EmbeddingLength: 2048, FeedForwardLength: 5632, HeadCount: 32, HeadCountKV: 8, VocabSize: 2000, ContextLength: 8192},
}

// BenchmarkRegistrySizing sizes synthetic llama models (F16, 0.7 MB to 1.1 GB) from a registry on loopback: the
// bytes of the model layer read to size it against its size (target: the header only, well under 1% for a real
// model), and the memory estimate at the default context against what the real `ollama ps` reports once the
// same model is loaded.
//
//	go test -run '^$' -bench RegistrySizing -benchtime 1x ./test/
func BenchmarkRegistrySizing(b *testing.B) {
	tools.Require(b, tools.Ollama)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	reg, err := localreg.Start(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	sizes := syntheticModels
	b.ReportMetric(0, "ns/op")
	for b.Loop() {
		for _, opts := range sizes {
			raw, err := tinymodel.Bytes(opts)
			if err != nil {
				b.Fatal(err)
			}
			if err := reg.Push(ctx, "library/synthetic-"+opts.Name, "f16", []localreg.Layer{{MediaType: registry.MediaModel, Data: raw}}, nil); err != nil {
				b.Fatal(err)
			}
			c := registry.NewClient(reg.Host, "")
			start := time.Now()
			res, err := c.Resolve(ctx, "synthetic-"+opts.Name+":f16")
			if err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			n := opts.Name
			b.ReportMetric(float64(len(raw))/1e6, n+"-model-MB")
			b.ReportMetric(float64(res.HeaderBytes)/1e6, n+"-read-MB")
			b.ReportMetric(100*float64(res.HeaderBytes)/float64(len(raw)), n+"-read-%")
			b.ReportMetric(float64(took.Milliseconds()), n+"-resolve-ms")
			if len(raw) > 8*gguf.Block {
				b.ReportMetric(met(res.HeaderBytes*100 < int64(len(raw))), n+"-read-under-1%-target-met")
			}

			est, err := planner.EstimateMemory(res.Model, planner.DefaultContextLength)
			if err != nil {
				b.Fatal(err)
			}
			psMiB := loadedSizeMiB(ctx, b, opts.Name, raw)
			b.ReportMetric(float64(est.ModelMiB), n+"-estimate-MiB")
			b.ReportMetric(float64(psMiB), n+"-ollama-ps-MiB")
			b.ReportMetric(float64(est.ModelMiB)/float64(psMiB), n+"-estimate-ratio")
			fmt.Fprintf(os.Stderr, "%s: %.1f MB model, %.2f MB read to size it (%.3f%%) in %s; estimate %d MiB (weights %d + KV %d + graph %d) against ollama ps %d MiB (ratio %.2f)\n",
				n, float64(len(raw))/1e6, float64(res.HeaderBytes)/1e6, 100*float64(res.HeaderBytes)/float64(len(raw)), took.Round(time.Millisecond),
				est.ModelMiB, est.WeightsMiB, est.KVCacheMiB, est.GraphMiB, psMiB, float64(est.ModelMiB)/float64(psMiB))
		}
	}
}

// loadedSizeMiB loads a model in a real `ollama serve` (at its default context) and returns the size `ollama ps`
// reports for it.
func loadedSizeMiB(ctx context.Context, b *testing.B, name string, raw []byte) int {
	dir := b.TempDir()
	file := filepath.Join(dir, name+".gguf")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	srv, err := ollama.Start(ctx, ollama.Options{TempDir: dir, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Stop(context.WithoutCancel(ctx)) }()
	client := srv.Client()
	if err := ollama.CreateFromGGUF(ctx, client, name, file); err != nil {
		b.Fatal(err)
	}
	if err := ollama.Load(ctx, client, name); err != nil {
		b.Fatal(err)
	}
	ps, err := client.ListRunning(ctx)
	if err != nil || len(ps.Models) != 1 {
		b.Fatalf("ollama ps: %v %+v", err, ps)
	}
	return int(ps.Models[0].Size >> 20)
}
