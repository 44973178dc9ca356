package deployment

import (
	"fmt"
	"time"
)

// Record is a successful execution's output, built by the "Deployment ready" state: what a user needs to reach
// and account for the deployment.
type Record struct {
	DeploymentID string `json:"deploymentId"`
	Model        string `json:"model"`
	Env          string `json:"env"`
	Endpoint     string `json:"endpoint"`
	// KeyParameter is the SSM parameter holding the deployment's API key; empty when it needs none.
	KeyParameter string `json:"keyParameter"`
	TaskArn      string `json:"taskArn"`
	// ServiceArn is a prod deployment's ECS service (TaskArn is then empty).
	ServiceArn    string  `json:"serviceArn"`
	Placement     string  `json:"placement"`
	InstanceType  string  `json:"instanceType"`
	HourlyCostUSD float64 `json:"hourlyCostUSD"`
	// AutoStopAt and ScheduleName are empty when the deployment runs until stopped.
	AutoStopAt   string `json:"autoStopAt"`
	ScheduleName string `json:"scheduleName"`
	// GPUReadiness is the GPU rule's verdict on a GPU placement ("met", or "not applicable: why"), empty on CPU.
	GPUReadiness string `json:"gpuReadiness"`
	// Fallbacks are the candidates tried before this placement, and why each was refused.
	Fallbacks []Attempt `json:"fallbacks"`
	// Image is the model image the task runs (and whether this deployment built it), or why the task pulled its
	// model at start.
	Image *ImageState `json:"image"`
}

// ImageText says where the task got its model, in one line.
func (r Record) ImageText() string {
	switch im := r.Image; {
	case im == nil:
		return ""
	case im.PullAtStart != "" && im.Image != "":
		return "pulled at start (" + im.PullAtStart + "), on " + im.Image
	case im.PullAtStart != "":
		return "pulled at start: " + im.PullAtStart
	case im.Error != "":
		return "pulled at start: " + im.Error + ": " + ReadableCause(im.Cause)
	case im.Built:
		return fmt.Sprintf("%s (built now, in %s)", im.Image, time.Duration(im.BuildSeconds*float64(time.Second)).Round(time.Millisecond))
	case im.TaskDefinitions != nil:
		return im.Image + " (built earlier)"
	}
	return ""
}
