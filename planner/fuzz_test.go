package planner

import (
	"errors"
	"testing"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

// FuzzPlan: any request either plans candidates that fit or fails with a typed error; never a panic.
func FuzzPlan(f *testing.F) {
	f.Add("llama2:7b", "dev", "auto", "cost", "", "", 0, int64(0), 0)
	f.Add("mistral:7b", "prod", "gpu", "seed", "ml.g4dn.xlarge", "EC2", 8192, int64(0), 0)
	f.Add("llama3.1:70b", "dev", "cpu", "cost", "g4dn.xlarge", "FARGATE", 1<<20, int64(1)<<50, -3)
	f.Fuzz(func(t *testing.T, name, env, prefer, policy, instanceType, launchType string, ctx int, size int64, heads int) {
		m, err := catalog.Default().Model(name)
		if err != nil {
			m, _ = catalog.Default().Model("llama2:7b")
		}
		if size != 0 {
			m.SizeBytes = size
		}
		if heads != 0 {
			m.HeadCountKV = heads
		}
		p, err := New(catalog.Default(), Request{Model: m, Env: env, Prefer: prefer, Policy: policy,
			InstanceType: instanceType, LaunchType: launchType, ContextLength: ctx})
		if err != nil {
			var (
				inv   *InvalidRequestError
				large *ModelTooLargeError
				gpu   *GPUOnFargateError
				typ   *catalog.UnknownInstanceTypeError
			)
			if !errors.As(err, &inv) && !errors.As(err, &large) && !errors.As(err, &gpu) && !errors.As(err, &typ) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		if len(p.Candidates) == 0 {
			t.Fatal("a plan with no candidates")
		}
		for _, c := range p.Candidates {
			if c.HeadroomMiB < 0 {
				t.Fatalf("candidate %s does not fit: headroom %d", c.Placement, c.HeadroomMiB)
			}
		}
	})
}
