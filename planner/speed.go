package planner

import (
	"fmt"
	"math"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

// Speed is how fast a placement is expected to serve a model.
//
// Generating a token reads every weight once (and the KV cache so far), so decoding is bound by memory bandwidth:
// tokens/s = efficiency × bandwidth / bytes per token. Processing a prompt is bound by compute: every prompt token
// costs two FLOPs per parameter, so the time to the first token is prompt × 2 × parameters / (efficiency ×
// FLOPS), plus one decode step. Bandwidth and FLOPS come from the catalog's hardware figures (hardware.json, each
// with its source); the efficiencies are calibrated in BENCHMARKS.md, "Speed estimate".
type Speed struct {
	// TokensPerSecond is the decode rate of one request.
	TokensPerSecond float64 `json:"tokensPerSecond"`
	// TTFTSeconds is the time to the first token for a prompt of PromptTokens tokens.
	TTFTSeconds  float64 `json:"ttftSeconds"`
	PromptTokens int     `json:"promptTokens"`
	// USDPerMillionTokens is the placement's hourly price over the tokens it generates in an hour at that rate.
	USDPerMillionTokens float64 `json:"usdPerMillionTokens"`
}

// DefaultPromptTokens is the prompt the time to first token is estimated for.
const DefaultPromptTokens = 512

// BytesPerToken is what one generated token reads: the weights (the active experts' of a mixture of experts), and
// the KV cache of a context of the given length (at f16).
func BytesPerToken(m catalog.Model, contextTokens int) float64 {
	kv := 2.0 * float64(contextTokens) * float64(m.BlockCount) * float64(m.KeyLength+m.ValueLength) * float64(m.HeadCountKV)
	weights := m.SizeBytes
	if m.ActiveSizeBytes > 0 {
		weights = m.ActiveSizeBytes // a mixture of experts reads only the experts it runs
	}
	return float64(weights) + kv
}

// DecodeTokensPerSecond is efficiency × bandwidth (GB/s) / bytes per token.
func DecodeTokensPerSecond(bytesPerToken, bandwidthGBs, efficiency float64) float64 {
	if bytesPerToken <= 0 {
		return 0
	}
	return efficiency * bandwidthGBs * 1e9 / bytesPerToken
}

// EstimateSpeed estimates a placement's speed for a model: a GPU placement (gpu set) from its GPU's figures, a
// CPU one from the CPU figures for its vCPUs.
func EstimateSpeed(hw catalog.Hardware, m catalog.Model, gpu *catalog.GPU, vcpu float64, hourlyUSD float64) Speed {
	s := Speed{PromptTokens: DefaultPromptTokens}
	bpt := BytesPerToken(m, DefaultPromptTokens)
	var bandwidth, gflops, decodeEff, prefillEff float64
	if gpu != nil {
		g, ok := hw.GPUs[gpu.Model]
		if !ok {
			return s
		}
		// Ollama splits a model's layers across the GPUs of an instance, so a token passes through them one after
		// another: one request sees one GPU's bandwidth and FLOPS, however many the instance has.
		bandwidth, gflops = g.BandwidthGBs, g.FP16TFLOPS*1000
		decodeEff, prefillEff = hw.Efficiency.GPUDecode, hw.Efficiency.GPUPrefill
	} else {
		bandwidth = math.Min(vcpu*hw.CPU.BandwidthGBsPerVCPU, hw.CPU.MaxBandwidthGBs)
		gflops = vcpu * hw.CPU.GFLOPSPerVCPU
		decodeEff, prefillEff = hw.Efficiency.CPUDecode, hw.Efficiency.CPUPrefill
	}
	s.TokensPerSecond = DecodeTokensPerSecond(bpt, bandwidth, decodeEff)
	if s.TokensPerSecond <= 0 {
		return s
	}
	params := float64(m.ParameterCount)
	if params <= 0 {
		params = float64(m.SizeBytes) / 2 // f16 when the count is unknown
	}
	if m.ActiveSizeBytes > 0 {
		params *= float64(m.ActiveSizeBytes) / float64(m.SizeBytes) // a prompt token runs only the active experts
	}
	if gflops > 0 && prefillEff > 0 {
		s.TTFTSeconds = float64(DefaultPromptTokens)*2*params/(prefillEff*gflops*1e9) + 1/s.TokensPerSecond
	}
	s.USDPerMillionTokens = hourlyUSD / (s.TokensPerSecond * 3600) * 1e6
	return s
}

// speedReject says why a candidate is slower than the request allows ("" when it is fast enough).
func speedReject(s Speed, req Request) string {
	switch {
	case req.MinTokensPerSecond > 0 && s.TokensPerSecond < req.MinTokensPerSecond:
		return fmt.Sprintf("est. %.1f tok/s < %g required", s.TokensPerSecond, req.MinTokensPerSecond)
	case req.MaxTTFTSeconds > 0 && s.TTFTSeconds > req.MaxTTFTSeconds:
		return fmt.Sprintf("est. %.1f s to the first token of a %d-token prompt > %g s allowed", s.TTFTSeconds, s.PromptTokens, req.MaxTTFTSeconds)
	}
	return ""
}

// TooSlowError is returned when placements fit the model but none is as fast as the request requires.
type TooSlowError struct {
	Model string
	// Fastest is the fastest placement that fits, and why it was refused.
	Fastest Reject
}

func (e *TooSlowError) Error() string {
	return fmt.Sprintf("%s: no placement that fits is fast enough; the fastest, %s, is %s", e.Model, e.Fastest.Placement, e.Fastest.Reason)
}

// speed estimates every candidate's speed and rejects those slower than the request requires.
func (p *planning) speed() {
	fits := len(p.plan.Candidates)
	var fastest Reject
	best := -1.0
	kept := p.plan.Candidates[:0]
	if p.req.Model.Embedding {
		return // an embedding model generates no tokens: there is no decode rate to estimate or require
	}
	for _, c := range p.plan.Candidates {
		var gpu *catalog.GPU
		if c.IsGPU() {
			if t, err := p.cat.InstanceType(c.InstanceType); err == nil {
				gpu = t.GPU
			}
		}
		s := EstimateSpeed(p.cat.Hardware, p.req.Model, gpu, float64(c.CPU)/1024, c.HourlyCostUSD)
		c.Speed = &s
		if why := speedReject(s, p.req); why != "" {
			p.reject(c.Placement, c.InstanceType, why)
			if s.TokensPerSecond > best {
				best, fastest = s.TokensPerSecond, Reject{Placement: c.Placement, InstanceType: c.InstanceType, Reason: why}
			}
			continue
		}
		kept = append(kept, c)
	}
	p.plan.Candidates = kept
	if fits > 0 && len(kept) == 0 {
		p.tooSlow = &TooSlowError{Model: p.req.Model.Name, Fastest: fastest}
	}
}

// speedOf is a candidate's speed (zero when it has none).
func speedOf(c Candidate) Speed {
	if c.Speed == nil {
		return Speed{}
	}
	return *c.Speed
}
