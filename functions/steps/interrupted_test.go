package steps

import (
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// TestRestartRequest: a dead task's tags and overrides become its restart, carrying every placement avoided so
// far (through the tag, where a "," would become "_"), adding the placement only after a Spot interruption.
func TestRestartRequest(t *testing.T) {
	task := ecstypes.Task{
		Tags: []ecstypes.Tag{
			tag(deployment.TagEnv, "dev"), tag(deployment.TagRequester, "alice"), tag(deployment.TagPlacement, "EC2 g4dn.xlarge"), tag(deployment.TagRestart, "2"),
			tag(deployment.TagAvoid, "Fargate Spot"+deployment.AvoidSeparator+"EC2 g5.xlarge"),
		},
		Overrides: &ecstypes.TaskOverride{ContainerOverrides: []ecstypes.ContainerOverride{{Name: aws.String(deployment.ContainerName),
			Environment: []ecstypes.KeyValuePair{
				{Name: aws.String(deployment.EnvModel), Value: aws.String("team-a/tiny")},
				{Name: aws.String(deployment.EnvSource), Value: aws.String("s3://b/models/team-a/tiny.gguf")},
				{Name: aws.String(deployment.EnvContextLength), Value: aws.String("8192")},
			}}}},
	}
	req, why := restartRequest(task, "dep-1", string(ecstypes.TaskStopCodeSpotInterruption), 90*time.Minute)
	if why != "" || req.Restart != 3 || req.Model != "team-a/tiny" || req.Source != "s3://b/models/team-a/tiny.gguf" ||
		req.ContextLength != 8192 || req.TTL != "1h30m0s" || req.Requester != "alice" || !req.KeepRunning ||
		!slices.Equal(req.Avoid, []string{"Fargate Spot", "EC2 g5.xlarge", "EC2 g4dn.xlarge"}) {
		t.Fatalf("after a Spot interruption: %+v (%s)", req, why)
	}
	req, why = restartRequest(task, "dep-1", string(ecstypes.TaskStopCodeEssentialContainerExited), -1)
	if why != "" || req.TTL != "0" || !slices.Equal(req.Avoid, []string{"Fargate Spot", "EC2 g5.xlarge"}) {
		t.Fatalf("after a crash: %+v (%s)", req, why)
	}
	if _, why := restartRequest(task, "dep-1", "EssentialContainerExited", 30*time.Second); why == "" {
		t.Error("a restart due to stop within a minute should not happen")
	}
	task.Tags[3] = tag(deployment.TagRestart, "5")
	if _, why := restartRequest(task, "dep-1", "EssentialContainerExited", time.Hour); why == "" {
		t.Error("a sixth restart should not happen")
	}
}

// TestLostCapacity: a Spot interruption, or an EC2 Spot placement whose host went (whatever stop code ECS gives
// it), is lost capacity to avoid; a crash or a person's stop is not.
func TestLostCapacity(t *testing.T) {
	for _, tt := range []struct {
		placement, code string
		want            bool
	}{
		{"Fargate Spot", "SpotInterruption", true},
		{"EC2 Spot g4dn.xlarge", "TerminationNotice", true},
		{"EC2 Spot g4dn.xlarge", "", true},
		{"EC2 Spot g4dn.xlarge", "EssentialContainerExited", false},
		{"EC2 Spot g4dn.xlarge", "UserInitiated", false},
		{"EC2 g4dn.xlarge", "TerminationNotice", false},
		{"Fargate", "EssentialContainerExited", false},
	} {
		if got := lostCapacity(tt.placement, tt.code); got != tt.want {
			t.Errorf("lostCapacity(%q, %q) = %v, want %v", tt.placement, tt.code, got, tt.want)
		}
	}
}

// TestChoiceSurvivesARestart: how a request chose its placement goes into the task's tags and comes back in the
// request a restart or a wake rebuilds from them.
func TestChoiceSurvivesARestart(t *testing.T) {
	orig := &deployment.Request{Prefer: "gpu", Policy: "seed", LaunchType: "EC2", MinTokensPerSecond: 12.5, Optimize: "speed"}
	v := deployment.ChoiceTag(orig)
	if v != "prefer=gpu policy=seed launchType=EC2 minTokensPerSecond=12.5 optimize=speed" {
		t.Errorf("choice tag %q", v)
	}
	task := ecstypes.Task{Tags: []ecstypes.Tag{tag(deployment.TagEnv, "dev"), tag(deployment.TagModel, "tiny"), tag(deployment.TagChoice, v)}}
	req := requestFromTask(task, "dep-1")
	if req.Prefer != "gpu" || req.Policy != "seed" || req.LaunchType != "EC2" || req.MinTokensPerSecond != 12.5 ||
		req.Optimize != "speed" || req.InstanceType != "" || req.MaxTimeToFirstToken != 0 {
		t.Errorf("rebuilt request %+v", req)
	}
	if err := req.Validate(); err != nil {
		t.Errorf("the rebuilt request is refused: %v", err)
	}
}
