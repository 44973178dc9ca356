package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// readBandwidthGBs measures this machine's memory read bandwidth: one reader per CPU, each summing 512 MiB, the
// best of three.
func readBandwidthGBs() float64 {
	n := runtime.NumCPU()
	const words = 64 << 20
	bufs := make([][]uint64, n)
	for i := range bufs {
		bufs[i] = make([]uint64, words)
		for j := range bufs[i] {
			bufs[i][j] = uint64(j)
		}
	}
	best := 0.0
	for range 3 {
		var wg sync.WaitGroup
		sums := make([]uint64, n)
		start := time.Now()
		for i := range bufs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var s uint64
				b := bufs[i]
				for k := 0; k+3 < len(b); k += 4 {
					s += b[k] + b[k+1] + b[k+2] + b[k+3]
				}
				sums[i] = s
			}()
		}
		wg.Wait()
		best = max(best, float64(n*words*8)/time.Since(start).Seconds()/1e9)
	}
	return best
}

// BenchmarkMemoryBandwidth is this machine's read bandwidth, behind the CPU figure of catalog/data/hardware.json.
func BenchmarkMemoryBandwidth(b *testing.B) {
	var gbs float64
	for b.Loop() {
		gbs = readBandwidthGBs()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(gbs, "GB/s")
	b.ReportMetric(gbs/float64(runtime.NumCPU()), "GB/s/vCPU")
}

// BenchmarkSpeedEstimate (make bench-speed) calibrates the planner's CPU estimate against real Ollama on this machine: synthetic llama
// models (random weights run at a trained model's speed) written at F16 and quantized to Q4_K_M by Ollama itself, as
// the models people run are, from about 0.1 to 2 GB; each asked for 64 tokens a few times in a real `ollama serve`.
// It reports Ollama's own eval rate against planner.DecodeTokensPerSecond at this machine's measured bandwidth and
// the catalog's CPU efficiency (target: within 25%), and the efficiency each size implies.
//
// Sampling is at temperature 1: greedy decoding of random weights repeats one token, and Ollama ends such a stream
// after 30 repeats without a final response.
func BenchmarkSpeedEstimate(b *testing.B) {
	bin := os.Getenv("OLLAMA_ECS_SPEED_OLLAMA")
	if bin == "" {
		b.Skip("needs OLLAMA_ECS_SPEED_OLLAMA, an Ollama built with AVX2: run `make bench-speed` (the default local build has no SIMD and is compute-bound)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	bw := readBandwidthGBs()
	hw := catalog.Default().Hardware
	sizes := []tinymodel.Options{
		{Name: "s", BlockCount: 12, EmbeddingLength: 1024, FeedForwardLength: 2816, HeadCount: 16, HeadCountKV: 4, VocabSize: 2000},
		{Name: "m", BlockCount: 12, EmbeddingLength: 2048, FeedForwardLength: 5632, HeadCount: 32, HeadCountKV: 8, VocabSize: 2000},
		{Name: "l", BlockCount: 24, EmbeddingLength: 2048, FeedForwardLength: 5632, HeadCount: 32, HeadCountKV: 8, VocabSize: 2000},
		{Name: "xl", BlockCount: 32, EmbeddingLength: 3072, FeedForwardLength: 8192, HeadCount: 24, HeadCountKV: 8, VocabSize: 2000},
	}
	if only := os.Getenv("OLLAMA_ECS_SPEED_SIZES"); only != "" {
		sizes = slices.DeleteFunc(sizes, func(o tinymodel.Options) bool { return !slices.Contains(strings.Split(only, ","), o.Name) })
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(bw, "bandwidth-GB/s")
	for b.Loop() {
		for _, opts := range sizes {
			calibrate(ctx, b, bin, opts, bw, hw)
		}
	}
}

// calibrate measures one synthetic model's decode and prompt rates and reports them against the estimate.
func calibrate(ctx context.Context, b *testing.B, bin string, opts tinymodel.Options, bw float64, hw catalog.Hardware) {
	dir := b.TempDir()
	file := filepath.Join(dir, "model.gguf")
	raw, err := tinymodel.Bytes(opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	params := float64(len(raw)) / 2 // F16: two bytes a parameter
	raw = nil
	srv, err := ollama.Start(ctx, ollama.Options{Binary: bin, TempDir: dir, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Stop(context.WithoutCancel(ctx)) }()
	client := srv.Client()
	if err := ollama.CreateFromGGUF(ctx, client, opts.Name, file); err != nil {
		b.Fatal(err)
	}
	_ = os.Remove(file)
	q4 := opts.Name + "-q4"
	if err := client.Create(ctx, &api.CreateRequest{Model: q4, From: opts.Name, Quantize: "q4_K_M"}, func(api.ProgressResponse) error { return nil }); err != nil {
		b.Fatal(err)
	}
	if err := client.Delete(ctx, &api.DeleteRequest{Model: opts.Name}); err != nil {
		b.Fatal(err)
	}
	list, err := client.List(ctx)
	if err != nil {
		b.Fatal(err)
	}
	size := 0.0
	for _, m := range list.Models {
		if m.Name == q4+":latest" {
			size = float64(m.Size)
		}
	}
	if size == 0 {
		b.Fatalf("%s not listed", q4)
	}
	var decode, prefill []float64
	for i := range 4 {
		var resp api.GenerateResponse
		// A prompt of about 64 tokens, different each time so that no prompt cache helps.
		prompt := strings.Repeat(fmt.Sprintf("round %d: words of a prompt ", i), 8)
		err := client.Generate(ctx, &api.GenerateRequest{Model: q4, Prompt: prompt,
			Options: map[string]any{"num_predict": 64, "seed": i, "temperature": 1}}, func(r api.GenerateResponse) error {
			if r.Done {
				resp = r
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if !resp.Done || resp.EvalCount < 32 {
			b.Fatalf("%s: generation ended without its final response or early (%d tokens)", q4, resp.EvalCount)
		}
		if i == 0 {
			continue // the first request loads the model
		}
		decode = append(decode, float64(resp.EvalCount)/resp.EvalDuration.Seconds())
		prefill = append(prefill, float64(resp.PromptEvalCount)/resp.PromptEvalDuration.Seconds())
	}
	measured, measuredPrefill := median(decode), median(prefill)
	predicted := planner.DecodeTokensPerSecond(size, bw, hw.Efficiency.CPUDecode)
	flops := float64(runtime.NumCPU()) * hw.CPU.GFLOPSPerVCPU * 1e9
	predictedPrefill := hw.Efficiency.CPUPrefill * flops / (2 * params)
	n := opts.Name
	b.ReportMetric(size/1e9, n+"-q4-GB")
	b.ReportMetric(measured, n+"-decode-measured-tok/s")
	b.ReportMetric(predicted, n+"-decode-predicted-tok/s")
	b.ReportMetric(predicted/measured, n+"-decode-ratio")
	b.ReportMetric(met(predicted/measured >= 0.75 && predicted/measured <= 1.25), n+"-decode-within-25%-target-met")
	b.ReportMetric(measured*size/(bw*1e9), n+"-implied-decode-efficiency")
	b.ReportMetric(measuredPrefill, n+"-prefill-measured-tok/s")
	b.ReportMetric(predictedPrefill, n+"-prefill-predicted-tok/s")
	b.ReportMetric(predictedPrefill/measuredPrefill, n+"-prefill-ratio")
	b.ReportMetric(measuredPrefill*2*params/flops, n+"-implied-prefill-efficiency")
	fmt.Fprintf(os.Stderr, "%s: %.0fM params, %.2f GB at Q4_K_M; decode measured %.1f tok/s, predicted %.1f (ratio %.2f); prompt measured %.1f tok/s, predicted %.1f (ratio %.2f)\n",
		n, params/1e6, size/1e9, measured, predicted, predicted/measured, measuredPrefill, predictedPrefill, predictedPrefill/measuredPrefill)
}
