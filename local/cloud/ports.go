package cloud

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

// The local cloud stands behind every port the step handlers use.
var (
	_ steps.ObjectReader       = (*Bucket)(nil)
	_ steps.ContainerInstances = (*ECS)(nil)
	_ steps.AutoScalingGroups  = (*AutoScaling)(nil)
	_ steps.CapacityProviders  = (*ECS)(nil)
	_ steps.ServiceQuotas      = (*Account)(nil)
	_ steps.EC2Instances       = (*Account)(nil)
	_ steps.TaskRunner         = (*ECS)(nil)
	_ steps.TaskDescriber      = (*ECS)(nil)
	_ steps.TaskStopper        = (*ECS)(nil)
	_ steps.TaskTagger         = (*ECS)(nil)
	_ steps.Schedules          = (*Scheduler)(nil)

	// Endpoint has the signature steps.Health.Endpoint takes.
	_ = steps.Health{Endpoint: (*ECS)(nil).Endpoint}
)
