// Package planner decides where a model runs: it sizes the model (Ollama's own memory formula) and ranks every
// placement that fits, cheapest first, with the placements that do not fit and why. It takes plain values and
// imports no SDK, so the same decision runs in the CLI, in a Lambda step and in tests.
package planner

import (
	"fmt"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

const (
	mib = 1 << 20
	// DefaultContextLength is the context a request gets when it names none: Ollama's default num_ctx.
	DefaultContextLength = 4096
	// batchSize is Ollama's default num_batch, which sizes the compute graph.
	batchSize = 512
	// runtimeOverheadMiB is the host memory of the Ollama server and runner themselves (Go runtime, CUDA or CPU
	// backend libraries, buffers) beside the model.
	runtimeOverheadMiB = 1024
	// gpuOverheadMiB is what the CUDA context and allocator take from each GPU before any weights land
	// (Ollama reserves a similar minimum per GPU).
	gpuOverheadMiB = 512
	// cpuHeadroom is the share of RAM kept free on a CPU placement: the page cache and allocator spikes need room,
	// and a task that hits its memory limit is killed.
	cpuHeadroom = 0.10
	// ec2UsableShare is the share of an instance's nominal memory a GPU task reserves: ECS registers less than the
	// nominal size (the kernel and the agent keep some), and 90% stays below what it registers on these types.
	ec2UsableShare = 0.90
)

// Estimate is the memory a model needs at a given context length, following Ollama's llm/memory.go: weights, plus
// the KV cache, plus the compute graph, plus runtime overhead. Every figure is in MiB.
type Estimate struct {
	// ContextLength is the context the estimate is for.
	ContextLength int `json:"contextLength"`
	// WeightsMiB is the model file, which is loaded whole.
	WeightsMiB int `json:"weightsMiB"`
	// KVCacheMiB is 2 bytes (f16) x context x layers x (key + value width) x KV heads.
	KVCacheMiB int `json:"kvCacheMiB"`
	// GraphMiB is the compute graph scratch for one batch.
	GraphMiB int `json:"graphMiB"`
	// ModelMiB is weights + KV cache + graph: what must sit in one memory pool (GPU or RAM) for full speed.
	ModelMiB int `json:"modelMiB"`
	// GPUNeedMiB is ModelMiB plus the per-GPU overhead: the GPU memory a full offload needs.
	GPUNeedMiB int `json:"gpuNeedMiB"`
	// GPUHostMiB is the host memory a GPU placement still needs for the runtime.
	GPUHostMiB int `json:"gpuHostMiB"`
	// CPUNeedMiB is ModelMiB plus runtime overhead plus headroom: the task memory a CPU placement needs.
	CPUNeedMiB int `json:"cpuNeedMiB"`
}

// InvalidRequestError is a request the planner cannot size: a bad context length, env, preference or policy.
type InvalidRequestError struct{ Reason string }

func (e *InvalidRequestError) Error() string { return "invalid request: " + e.Reason }

// EstimateMemory sizes a model at a context length (0 means DefaultContextLength, capped at the model's own).
func EstimateMemory(m catalog.Model, contextLength int) (Estimate, error) {
	if err := m.Validate(); err != nil {
		return Estimate{}, &InvalidRequestError{Reason: err.Error()}
	}
	switch {
	case contextLength == 0:
		contextLength = min(DefaultContextLength, m.ContextLength)
	case contextLength < 256:
		return Estimate{}, &InvalidRequestError{Reason: fmt.Sprintf("context length %d is below the minimum of 256", contextLength)}
	case contextLength > m.ContextLength:
		return Estimate{}, &InvalidRequestError{Reason: fmt.Sprintf(
			"context length %d exceeds %s's trained context of %d", contextLength, m.Name, m.ContextLength)}
	}
	ctx := int64(contextLength)
	kv := 2 * ctx * int64(m.BlockCount) * int64(m.KeyLength+m.ValueLength) * int64(m.HeadCountKV)
	// Ollama's full-offload graph for llama-like models: the larger of the attention scores and the output layer.
	graph := max(
		4*batchSize*(1+4*int64(m.EmbeddingLength)+ctx*(1+int64(m.HeadCount))),
		4*batchSize*(int64(m.EmbeddingLength)+int64(m.VocabSize)),
	)
	e := Estimate{
		ContextLength: contextLength,
		WeightsMiB:    ceilMiB(m.SizeBytes),
		KVCacheMiB:    ceilMiB(kv),
		GraphMiB:      ceilMiB(graph),
	}
	e.ModelMiB = e.WeightsMiB + e.KVCacheMiB + e.GraphMiB
	e.GPUNeedMiB = e.ModelMiB + gpuOverheadMiB
	e.GPUHostMiB = runtimeOverheadMiB + e.GraphMiB
	e.CPUNeedMiB = int(float64(e.ModelMiB+runtimeOverheadMiB) * (1 + cpuHeadroom))
	return e, nil
}

func ceilMiB(b int64) int { return int((b + mib - 1) / mib) }
