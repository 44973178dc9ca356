package cloud

import (
	"context"

	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// The local cloud stands behind every port the step handlers use.
var (
	_ deployment.ObjectReader       = (*Bucket)(nil)
	_ deployment.ContainerInstances = (*ECS)(nil)
	_ deployment.AutoScalingGroups  = (*AutoScaling)(nil)
	_ deployment.CapacityProviders  = (*ECS)(nil)
	_ deployment.ServiceQuotas      = (*Account)(nil)
	_ deployment.EC2Instances       = (*Account)(nil)
	_ deployment.TaskRunner         = (*ECS)(nil)
	_ deployment.TaskDescriber      = (*ECS)(nil)
	_ deployment.TaskStopper        = (*ECS)(nil)
	_ deployment.TaskTagger         = (*ECS)(nil)
	_ deployment.Schedules          = (*Scheduler)(nil)

	_ deployment.ECSAPI = (*ECS)(nil)

	// Endpoint has the signature the health step's Endpoint takes.
	_ func(context.Context, ecstypes.Task) (string, error) = (*ECS)(nil).Endpoint
)
