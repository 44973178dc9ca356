package steps

import (
	"context"
	"strings"
	"testing"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// TestCapacityPassesOverSmallerGPUs: after a model did not fit wholly in one GPU type's memory, GPU candidates
// with no more GPU memory are passed over (with the reason), and the ladder goes on to the next placement.
func TestCapacityPassesOverSmallerGPUs(t *testing.T) {
	gpu := func(typ string, poolMiB int) planner.Candidate {
		return planner.Candidate{Placement: "EC2 " + typ, InstanceType: typ, LaunchType: planner.LaunchTypeEC2,
			TaskDefinition: planner.TaskDefinitionGPU, NeedMiB: 4000, HeadroomMiB: poolMiB - 4000}
	}
	fargate := planner.Candidate{Placement: "Fargate", LaunchType: planner.LaunchTypeFargate, TaskDefinition: planner.TaskDefinitionCPU}
	plan := &planner.Plan{Candidates: []planner.Candidate{gpu("g4dn.xlarge", 15000), gpu("g6.xlarge", 15000), fargate}}
	c := &Capacity{} // neither step below needs AWS: a passed-over GPU and Fargate
	st, err := c.Handle(context.Background(), deployment.State{Request: &deployment.Request{DeploymentID: "d"}, Plan: plan, Capacity: &deployment.CapacityState{
		Cursor: 0, Attempts: []deployment.Attempt{}, LastError: &deployment.StateError{Error: "ModelNotOnGPUError", Cause: "tiny loaded with 0 of 9 bytes in GPU memory"}}})
	if err != nil || !st.Available || st.Cursor != 2 || len(st.Attempts) != 2 ||
		!strings.Contains(st.Attempts[1].Reason, "no more than g4dn.xlarge's") {
		t.Fatalf("%+v %v", st, err)
	}
}
