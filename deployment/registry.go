package deployment

import (
	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// ErrorTypes lists every typed error a step returns to the state machine, one value per type. The workflow's
// tests keep this list and the ASL's ErrorEquals names equal, and a test here keeps it complete.
var ErrorTypes = []error{
	(*InvalidEventError)(nil),
	(*IncompleteStateError)(nil),
	(*NotGGUFError)(nil),
	(*NoCapacityError)(nil),
	(*CapacityError)(nil),
	(*DeploymentExistsError)(nil),
	(*ThrottlingError)(nil),
	(*AWSServiceError)(nil),
	(*AWSRequestError)(nil),
	(*TaskStoppedError)(nil),
	(*HealthTimeoutError)(nil),
	(*ModelNotOnGPUError)(nil),
	(*ImageBuildInProgressError)(nil),
	(*catalog.UnknownModelError)(nil),
	(*catalog.UnknownInstanceTypeError)(nil),
	(*registry.RegistryError)(nil),
	(*registry.BadModelError)(nil),
	(*planner.InvalidRequestError)(nil),
	(*planner.ModelTooLargeError)(nil),
	(*planner.TooSlowError)(nil),
	(*planner.GPUOnFargateError)(nil),
}
