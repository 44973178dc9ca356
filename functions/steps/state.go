// Package steps holds the logic of each Lambda step of the deploy state machine (validate, configure, capacity,
// runtask, health, autostop, cleanup) and of the teardown function. Each step is a struct whose fields are its
// configuration and AWS ports, with a Handle method that aws-lambda-go calls; functions/<name>/main.go only builds
// it. Steps exchange one JSON state document, the shape of which is State.
package steps

import (
	"log/slog"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// Tag keys every deployment's task carries. ECS is the record of deployments: these tags and startedBy (the
// deployment id) are how cleanup, teardown and the CLI find them.
const (
	TagManagedBy    = "ollama-ecs:managed-by"
	TagDeploymentID = "ollama-ecs:deployment-id"
	TagModel        = "ollama-ecs:model"
	TagEnv          = "ollama-ecs:env"
	TagRequester    = "ollama-ecs:requester"
	TagPlacement    = "ollama-ecs:placement"
	TagInstanceType = "ollama-ecs:instance-type"
	TagHourlyUSD    = "ollama-ecs:hourly-usd"
	// TagExecution is the name of the state machine execution that started the task: Clean up stops only the
	// tasks of its own execution, never those another request with the same deployment id started.
	TagExecution = "ollama-ecs:execution"
	// TagKeepRunning ("true") asks for a restart when the task dies on its own; TagAvoid lists the placements
	// earlier tasks died on and TagRestart counts the restarts, so the restart can carry them on.
	TagKeepRunning = "ollama-ecs:keep-running"
	TagAvoid       = "ollama-ecs:avoid"
	TagRestart     = "ollama-ecs:restart"
	// AvoidSeparator joins the avoided placements in TagAvoid: a tag value may hold it, a placement never does.
	AvoidSeparator = "+"
	// TagInterrupted marks a ready deployment's task that stopped on its own, with its stop code.
	TagInterrupted = "ollama-ecs:interrupted"
	ManagedByValue = "ollama-ecs"

	// ContainerName is the Ollama container in both task definitions.
	ContainerName = "ollama"
	// FetchContainerName is the init container that copies an uploaded model from S3 for the Ollama container.
	FetchContainerName = "fetch"
	// OllamaPort is where Ollama listens in the task.
	OllamaPort = 11434

	// SchedulePrefix starts every auto-stop schedule's name; the deployment id follows.
	SchedulePrefix = "ollama-ecs-"
)

// Environment variables the task's containers read, set by RunTask overrides.
const (
	EnvModel         = "OLLAMA_ECS_MODEL"
	EnvSource        = "OLLAMA_ECS_SOURCE"
	EnvContextLength = "OLLAMA_CONTEXT_LENGTH"
	EnvKeepAlive     = "OLLAMA_KEEP_ALIVE"
)

// State is the state machine's JSON document; each step reads what it needs and the ASL puts its result at one
// path (ResultPath).
type State struct {
	Request  *Request        `json:"request,omitempty"`
	Plan     *planner.Plan   `json:"plan,omitempty"`
	Capacity *CapacityState  `json:"capacity,omitempty"`
	Task     *TaskInfo       `json:"task,omitempty"`
	Health   *HealthState    `json:"health,omitempty"`
	AutoStop *AutoStopResult `json:"autostop,omitempty"`
	Error    *StateError     `json:"error,omitempty"`
}

// StateError is what a Catch puts at its ResultPath.
type StateError struct {
	Error string `json:"Error"`
	Cause string `json:"Cause"`
}

// Request is the one normalised request every input becomes.
type Request struct {
	DeploymentID string `json:"deploymentId"`
	// ExecutionName is the state machine execution handling this request (unique per state machine for 90 days).
	ExecutionName string `json:"executionName"`
	// Trigger is deploy (bus event), upload (S3) or direct (StartExecution).
	Trigger string `json:"trigger"`
	// ModelName is the name the model has in Ollama.
	ModelName string `json:"modelName"`
	// Source is where the task gets the model: ollama://<name> (pull) or s3://<bucket>/<key> (upload).
	Source string `json:"source"`
	// Model is the sizing metadata: a catalog entry or the uploaded GGUF's header.
	Model         catalog.Model `json:"model"`
	Env           string        `json:"env"`
	Prefer        string        `json:"prefer"`
	Policy        string        `json:"policy"`
	InstanceType  string        `json:"instanceType,omitempty"`
	LaunchType    string        `json:"launchType,omitempty"`
	ContextLength int           `json:"contextLength"`
	// TTLSeconds is the requested time to live: -1 for the environment's default, 0 for none.
	TTLSeconds int    `json:"ttlSeconds"`
	Requester  string `json:"requester"`
	// KeepRunning starts the deployment again, on the next candidate, when its task dies on its own.
	KeepRunning bool `json:"keepRunning,omitempty"`
	// Avoid are placements the planner must not choose (those an earlier task of the deployment died on).
	Avoid []string `json:"avoid,omitempty"`
	// Restart counts restarts after interruptions; it is part of RunTask's client token.
	Restart int `json:"restart,omitempty"`
}

// ScheduleName is the auto-stop schedule's name for a deployment.
func ScheduleName(deploymentID string) string { return SchedulePrefix + deploymentID }

// logger returns l with the deployment id on every line, or a discarding logger when l is nil.
func logger(l *slog.Logger, deploymentID string) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	if deploymentID != "" {
		l = l.With("deploymentId", deploymentID)
	}
	return l
}
