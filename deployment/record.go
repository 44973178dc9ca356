package deployment

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
}
