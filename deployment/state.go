// Package deployment is the contract of an ollama-ecs deployment, shared by the Lambda steps, the state machine's
// definition, the local stack and the command line: the state document the steps exchange (State, Request and
// each step's result), the record a ready deployment ends with, the tags and names that make ECS the record of
// deployments, the error types that are the state machine's error names and how AWS errors map onto them, the
// SDK-shaped ports, the listing and stopping of a deployment's tasks, the execution-history model, and the
// functions' configuration. It holds no step logic.
package deployment

import (
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/events"
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
	// TagChoice holds how the request chose its placement (ChoiceTag), so a restart or a wake chooses alike.
	TagChoice      = "ollama-ecs:choice"
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
	Image    *ImageState     `json:"image,omitempty"`
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
	// APIKey, when set, overrides the stack's default for putting the deployment behind an API key.
	APIKey *bool `json:"apiKey,omitempty"`
	// MinTasks and MaxTasks bound a prod deployment's service (0 for dev, which is one task).
	MinTasks int `json:"minTasks,omitempty"`
	MaxTasks int `json:"maxTasks,omitempty"`
	// WakeOnRequest keeps the endpoint when the deployment is stopped, to start it again on a request; Wake is
	// the wake this execution is (0: the first start).
	WakeOnRequest bool `json:"wakeOnRequest,omitempty"`
	Wake          int  `json:"wake,omitempty"`
	// MinTokensPerSecond, MaxTimeToFirstToken and Optimize are the required performance and the ranking.
	MinTokensPerSecond  float64 `json:"minTokensPerSecond,omitempty"`
	MaxTimeToFirstToken float64 `json:"maxTimeToFirstToken,omitempty"`
	Optimize            string  `json:"optimize,omitempty"`
}

// ScheduleName is the auto-stop schedule's name for a deployment.
func ScheduleName(deploymentID string) string { return SchedulePrefix + deploymentID }

// logger returns l with the deployment id on every line, or a discarding logger when l is nil.
func Logger(l *slog.Logger, deploymentID string) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	if deploymentID != "" {
		l = l.With("deploymentId", deploymentID)
	}
	return l
}

// CapacityState is where the walk down the fallback ladder stands.
type CapacityState struct {
	// Cursor indexes the plan's candidates.
	Cursor int `json:"cursor"`
	// Available is true when Candidate has room.
	Available bool `json:"available"`
	// Candidate is the one to run when Available.
	Candidate *planner.Candidate `json:"candidate,omitempty"`
	// Attempts are the rungs tried and refused, with why.
	Attempts []Attempt `json:"attempts"`
	// LastError is set by the state machine when RunTask refused the candidate for lack of capacity.
	LastError *StateError `json:"lastError,omitempty"`
}

// TaskInfo is what the state machine keeps about the started task.
type TaskInfo struct {
	TaskArn       string  `json:"taskArn"`
	ClusterArn    string  `json:"clusterArn"`
	Placement     string  `json:"placement"`
	LaunchType    string  `json:"launchType"`
	InstanceType  string  `json:"instanceType"`
	GPU           bool    `json:"gpu"`
	CPU           int     `json:"cpu"`
	MemoryMiB     int     `json:"memoryMiB"`
	HourlyCostUSD float64 `json:"hourlyCostUSD"`
	StartedAt     string  `json:"startedAt"`
	// ServiceArn is a prod deployment's ECS service (TaskArn is then empty: the service runs the tasks);
	// DesiredTasks is how many healthy targets Poll health waits for.
	ServiceArn   string `json:"serviceArn"`
	DesiredTasks int    `json:"desiredTasks"`
	// Route is how clients reach the deployment through the load balancer.
	Route *Route `json:"route,omitempty"`
}

// TaskDefinitions are the CPU and GPU task definition families of one image.
type TaskDefinitions struct {
	CPU string `json:"cpu"`
	GPU string `json:"gpu"`
}

// CopyTaskDefinition is the registration of a copy of td in family: its containers, volumes, roles and sizes.
func CopyTaskDefinition(td *ecstypes.TaskDefinition, family string) *ecs.RegisterTaskDefinitionInput {
	return &ecs.RegisterTaskDefinitionInput{
		Family: aws.String(family), Cpu: td.Cpu, Memory: td.Memory, NetworkMode: td.NetworkMode,
		RequiresCompatibilities: td.RequiresCompatibilities, TaskRoleArn: td.TaskRoleArn, ExecutionRoleArn: td.ExecutionRoleArn,
		Volumes: td.Volumes, EphemeralStorage: td.EphemeralStorage, RuntimePlatform: td.RuntimePlatform,
		PlacementConstraints: td.PlacementConstraints, ContainerDefinitions: append([]ecstypes.ContainerDefinition(nil), td.ContainerDefinitions...),
	}
}

// ImageState is what "Ensure model image" decided: the model's own image and the task definitions that run it, or
// why the task pulls its model at start instead.
type ImageState struct {
	// Image is the model image (REPOSITORY:sha256-MANIFESTDIGEST), or for a pull at start the Ollama image's
	// mirror (REPOSITORY:ollama-VERSION); TaskDefinitions are the stack's CPU and GPU task definitions with that
	// image, which RunTask runs instead of the stack's.
	Image           string           `json:"image,omitempty"`
	TaskDefinitions *TaskDefinitions `json:"taskDefinitions,omitempty"`
	// Built is true when this execution built the image (false: it was there already); BuildSeconds is how long
	// the build took.
	Built        bool    `json:"built,omitempty"`
	BuildSeconds float64 `json:"buildSeconds,omitempty"`
	// PullAtStart says why the task gets its model at start rather than from its image.
	PullAtStart string `json:"pullAtStart,omitempty"`
	// Error and Cause are set when the state machine caught a build that did not finish in time (another
	// execution's): the task then pulls at start.
	Error string `json:"Error,omitempty"`
	Cause string `json:"Cause,omitempty"`
}

// TagValue finds a tag on a task.
func TagValue(tags []ecstypes.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// Phases of a deployment on its way to healthy, as the console shows them.
const (
	PhaseProvisioning = "PROVISIONING"
	PhasePending      = "PENDING"
	PhaseStarting     = "STARTING_SERVER"
	PhasePulling      = "PULLING_MODEL"
	PhaseLoading      = "LOADING_MODEL"
	PhaseRegistering  = "REGISTERING_TARGET"
	PhaseReady        = "READY"
)

// HealthState is one poll's answer; the state machine keeps it between polls.
type HealthState struct {
	Ready bool `json:"ready"`
	// TaskArn is the task these polls watch: a new task (the next rung of the ladder) starts a new count.
	TaskArn string `json:"taskArn"`
	// Phase is where the deployment stands; Detail says more.
	Phase  string `json:"phase"`
	Detail string `json:"detail"`
	// Polls counts the polls so far.
	Polls int `json:"polls"`
	// WaitSeconds is how long the state machine waits before the next poll.
	WaitSeconds int `json:"waitSeconds"`
	// Endpoint is the deployment's URL once it is ready: its load balancer route (Ollama's own address in a stack
	// without one). TaskEndpoint is the watched task's Ollama, which only the health function reaches.
	Endpoint     string `json:"endpoint,omitempty"`
	TaskEndpoint string `json:"taskEndpoint,omitempty"`
	// KeyParameter is where the deployment's API key is kept ("" without one).
	KeyParameter string `json:"keyParameter"`
	// WatchedTask is the service task whose model the polls check (a prod deployment).
	WatchedTask string `json:"watchedTask,omitempty"`
	// FirstPollAt and Deadline bound the whole wait.
	FirstPollAt string `json:"firstPollAt"`
	Deadline    string `json:"deadline"`
	// GPU is the GPU readiness rule's verdict: "met", "not applicable: <why>", or "" on a CPU placement.
	GPU string `json:"gpu"`
}

// DefaultProvisioningTimeout is how long a task may wait for its instance. ECS managed scaling reacts to a
// one-minute metric, then a GPU instance boots the ECS GPU AMI and registers its agent: three to five minutes
// usually (the capacity provider's default instance warm-up is 300 s). Ten minutes is twice that, and leaves two
// more rungs of the ladder inside the default 30-minute health timeout.
const DefaultProvisioningTimeout = 10 * time.Minute

// InterruptedResult says what was done about one stopped task.
type InterruptedResult struct {
	DeploymentID string `json:"deploymentId,omitempty"`
	TaskArn      string `json:"taskArn"`
	StopCode     string `json:"stopCode,omitempty"`
	// Ignored says why nothing was done, when nothing was.
	Ignored string `json:"ignored,omitempty"`
	// ScheduleDeleted is the auto-stop schedule deleted with the task.
	ScheduleDeleted string `json:"scheduleDeleted,omitempty"`
	// Restarted is the execution that starts the deployment again.
	Restarted string `json:"restarted,omitempty"`
}

// ChoiceTag writes what a request chose its placement by, beyond the model and env: preference, policy, instance
// and launch type, required speed and ranking, as "prefer=gpu optimize=speed" (set fields only; a tag value holds
// spaces and "=", never ","). A restart or a wake, rebuilt from the task's tags, reads it back with ApplyChoice.
func ChoiceTag(r *Request) string {
	var parts []string
	add := func(k, v string) {
		if v != "" && v != "0" {
			parts = append(parts, k+"="+v)
		}
	}
	add("prefer", r.Prefer)
	add("policy", r.Policy)
	add("instanceType", r.InstanceType)
	add("launchType", r.LaunchType)
	add("minTokensPerSecond", strconv.FormatFloat(r.MinTokensPerSecond, 'g', -1, 64))
	add("maxTimeToFirstToken", strconv.FormatFloat(r.MaxTimeToFirstToken, 'g', -1, 64))
	add("optimize", r.Optimize)
	return strings.Join(parts, " ")
}

// ApplyChoice sets a deploy request's placement choices from a ChoiceTag value; a key it does not know, or a
// number that does not parse, is left out (the request's own validation then applies).
func ApplyChoice(d *events.DeployRequest, tag string) {
	for _, kv := range strings.Fields(tag) {
		k, v, _ := strings.Cut(kv, "=")
		f, _ := strconv.ParseFloat(v, 64)
		switch k {
		case "prefer":
			d.Prefer = v
		case "policy":
			d.Policy = v
		case "instanceType":
			d.InstanceType = v
		case "launchType":
			d.LaunchType = v
		case "minTokensPerSecond":
			d.MinTokensPerSecond = f
		case "maxTimeToFirstToken":
			d.MaxTimeToFirstToken = f
		case "optimize":
			d.Optimize = v
		}
	}
}
