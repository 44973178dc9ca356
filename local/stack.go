// Package local runs the whole system on one machine: the deploy state machine's own ASL file on the
// aws-local-stepfunctions engine, its Lambda steps served over the Lambda Invoke API by the real handlers, and a
// local cloud (ECS whose tasks are real `ollama serve` processes, EventBridge Scheduler, S3) behind the same ports
// the handlers use on AWS. EventBridge's routing of the three event kinds is reproduced here as the CDK stack
// configures it.
package local

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	schedtypes "github.com/aws/aws-sdk-go-v2/service/scheduler/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
	"github.com/ollama-ecs/ollama-ecs/functions/steps/modelimage"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/lambdaapi"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	"github.com/ollama-ecs/ollama-ecs/local/registry"
	"github.com/ollama-ecs/ollama-ecs/planner"
	"github.com/ollama-ecs/ollama-ecs/workflow"
)

// Names the local stack uses where the CDK stack has its resources.
const (
	Bucket        = "ollama-ecs-models"
	ModelPrefix   = "models/"
	ScheduleGroup = "ollama-ecs"
	SchedulerRole = "arn:aws:iam::111122223333:role/ollama-ecs-scheduler"
	StateMachine  = "deploy"
	// WaitForHealth is the Wait state whose time the local engine shortens (see Options.HealthWait).
	WaitForHealth = "Wait for health"
	// EnsureModelImage is the state that builds a model's image; locally a build takes about a second, so a
	// deployment waiting for another's build of the same model retries every half second, not every 20.
	EnsureModelImage = "Ensure model image"
)

// Options configure a local stack. The zero value is the embedded default: the cluster in local/cloud/cluster.json,
// real Ollama tasks, real time.
type Options struct {
	// Dir holds the bucket's files and the Ollama servers' folders; empty means a temporary folder removed on Close.
	Dir string
	// Cluster is the local ECS cluster; the zero value means cloud.DefaultConfig().
	Cluster cloud.Config
	// Runner starts task containers; nil means real `ollama serve` processes.
	Runner cloud.Runner
	// TimeScale speeds up schedule time (auto-stop TTLs): 60 makes a minute pass in a second. 0 means 1.
	TimeScale float64
	// DevTTL is the default dev time to live (default 2h, like the stack).
	DevTTL time.Duration
	// HealthTimeout bounds how long a deployment may take to become healthy (default 2 min locally).
	HealthTimeout time.Duration
	// HealthWatch is how long one health poll keeps watching a task that is close to ready (default 10 s), and
	// HealthPoll the interval inside that watch (default 100 ms).
	HealthWatch, HealthPoll time.Duration
	// HealthWait replaces the time the "Wait for health" state waits: the poll still computes its adaptive wait,
	// shown in the history, but a local task starts in a fraction of a second. 0 keeps the computed waits.
	HealthWait time.Duration
	// ECSDelays make local tasks pass through PROVISIONING and PENDING for this long each (default 0).
	ECSDelays time.Duration
	// ProvisioningTimeout bounds a task's wait for an instance (default: the Lambdas' 10 minutes).
	ProvisioningTimeout time.Duration
	// ApplyGPURule applies the GPU readiness rule (the model wholly in GPU memory) to local GPU placements. Local
	// tasks run on the CPU, so real Ollama reports no GPU memory and every GPU placement fails the rule: this
	// shows the ladder moving on from a model that is not wholly in GPU memory. Off by default.
	ApplyGPURule bool
	// NoModelImages runs the stack without a model image repository, as the stack with modelImageMaxGiB 0: every
	// task pulls its model at start.
	NoModelImages bool
	// APIKeys puts every deployment behind an API key unless its request says otherwise (the stack's setting).
	APIKeys bool
	// UploadDefaults are the required performance of the deployments uploads start (the stack's UPLOAD_DEFAULTS).
	UploadDefaults events.Requirements
	// IdleWindow and MaxLifetime are auto-stop's usage window and bound, in schedule time (defaults: the stack's).
	IdleWindow, MaxLifetime time.Duration
	// ScalingInterval and ScalingWindow pace local target tracking (defaults 1 s and 10 s); ScaleOutCooldown and
	// ScaleInCooldown replace the policy's cooldowns (60 s and 300 s) when set.
	ScalingInterval, ScalingWindow, ScaleOutCooldown, ScaleInCooldown time.Duration
	// ScaleTargetRequests is target tracking's requests per minute per task (default: the stack's 12).
	ScaleTargetRequests int
	// Interceptor, when set, runs before every Lambda invocation (fault injection).
	Interceptor lambdaapi.Interceptor
	Log         *slog.Logger
}

// Stack is a running local system.
type Stack struct {
	ECS       *cloud.ECS
	Scheduler *cloud.Scheduler
	Bucket    *cloud.Bucket
	// LB is the stack's load balancer, on loopback: every deployment's endpoint is a path on it.
	LB *cloud.LoadBalancer
	// Registry is the model registry on loopback; it also stands in for the stack's ECR repository.
	Registry *registry.Server
	// OllamaImage is the stand-in for the pinned Ollama image, in Registry: the stack's task definitions run it.
	OllamaImage string
	// Parameters holds the deployments' API keys.
	Parameters *cloud.Parameters
	// Scaling is Application Auto Scaling for prod services, fed by the load balancer's counters.
	Scaling *cloud.AppAutoScaling
	Engine  *engine.Engine
	Lambda  *lambdaapi.Server
	// Teardown is the teardown function the stop and scheduled-teardown rules target.
	Teardown *steps.Teardown
	// waker is the load balancer's target for sleeping deployments, in wakerTargetGroup.
	waker            *steps.Waker
	wakerTargetGroup string

	opts        Options
	definition  []byte
	lambdaClose func() error
	dir         string
	removeDir   bool
	log         *slog.Logger

	mu         sync.Mutex
	executions []Started
	closed     bool
	// deliveries are the asynchronous event deliveries under way (S3 and ECS events), which Close waits for.
	deliveries sync.WaitGroup
	// storing silences the upload rule while Store writes, as for a file uploaded before the rule existed.
	storing atomic.Bool
}

// Started is one execution the stack started, and what started it.
type Started struct {
	ExecutionArn string
	Kind         events.Kind
	DeploymentID string
	At           time.Time
}

// Start brings up the engine, the Lambda endpoint with the real handlers, and the local cloud.
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Cluster.Name == "" {
		opts.Cluster = cloud.DefaultConfig()
	}
	opts.DevTTL = orDuration(opts.DevTTL, deployment.DefaultConfig().DevTTL)
	opts.HealthTimeout = orDuration(opts.HealthTimeout, 2*time.Minute)
	opts.HealthWatch = orDuration(opts.HealthWatch, 10*time.Second)
	opts.HealthPoll = orDuration(opts.HealthPoll, 100*time.Millisecond)
	s = &Stack{opts: opts, log: opts.Log, dir: opts.Dir}
	defer func() {
		if err != nil {
			_ = s.Close(context.WithoutCancel(ctx))
		}
	}()
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "ollama-ecs-local-"); err != nil {
			return nil, err
		}
		s.removeDir = true
	}
	cfg := opts.Cluster
	if s.definition, err = workflow.LocalDefinition(cfg.Region, cfg.Account); err != nil {
		return nil, err
	}
	s.Bucket, err = cloud.NewBucket(cloud.BucketOptions{
		Name: Bucket, Dir: s.dir + "/bucket", Region: cfg.Region, Account: cfg.Account,
		OnObjectCreated: func(event []byte) {
			if s.storing.Load() {
				return
			}
			s.deliverAsync(event)
		},
	})
	if err != nil {
		return nil, err
	}
	// The model registry: the local stand-in for registry.ollama.ai, which Validate resolves models the catalog
	// does not list against and tasks pull from (PushModel puts one there).
	if s.Registry, err = registry.Start(s.dir + "/registry"); err != nil {
		return nil, err
	}
	// The Ollama image the stack's task definitions run, and model images are built on; the same registry stands
	// in for the stack's ECR repository (ImageRepository).
	if s.OllamaImage, err = s.Registry.PushOllamaImage(ctx, ollama.Version); err != nil {
		return nil, err
	}
	runner := opts.Runner
	if runner == nil {
		runner = &cloud.OllamaRunner{TempDir: s.dir, Objects: s.Bucket, Log: opts.Log}
	}
	// The load balancer counts requests in schedule time (the scheduler, made below, may run faster than the clock).
	s.LB, err = cloud.NewLoadBalancer(cloud.LoadBalancerOptions{Region: cfg.Region, Account: cfg.Account,
		HealthCheckInterval: 250 * time.Millisecond, Now: func() time.Time { return s.Scheduler.Now() }, Log: opts.Log,
		Invoke: s.invokeFunction})
	if err != nil {
		return nil, err
	}
	// The waker's lambda target group, as the CDK stack makes it.
	if s.wakerTargetGroup, err = s.wakerTarget(ctx); err != nil {
		return nil, err
	}
	s.ECS, err = cloud.NewECS(cloud.ECSOptions{Config: cfg, Runner: runner, Log: opts.Log, Targets: s.LB, OllamaImage: s.OllamaImage,
		ProvisioningDelay: opts.ECSDelays, PendingDelay: opts.ECSDelays, OnTaskStopped: s.deliverAsync})
	if err != nil {
		return nil, err
	}
	// Schedules invoke the stack's functions: an auto-stop schedule hands its check to the teardown function.
	s.Scheduler = cloud.NewScheduler(cloud.SchedulerOptions{Region: cfg.Region, Account: cfg.Account,
		TimeScale: opts.TimeScale, Log: opts.Log, Invoke: s.invokeTarget})
	s.Scaling = cloud.NewAppAutoScaling(cloud.AppAutoScalingOptions{ECS: s.ECS, LB: s.LB, Interval: opts.ScalingInterval,
		Window: opts.ScalingWindow, ScaleOutCooldown: opts.ScaleOutCooldown, ScaleInCooldown: opts.ScaleInCooldown, Log: opts.Log})
	s.Parameters = cloud.NewParameters()

	handlers := s.handlers()
	s.Teardown, s.waker = handlers.teardown, handlers.waker
	var lambdaOpts []lambdaapi.Option
	lambdaOpts = append(lambdaOpts, lambdaapi.WithAccount(cfg.Region, cfg.Account), lambdaapi.WithLogger(opts.Log))
	if opts.Interceptor != nil {
		lambdaOpts = append(lambdaOpts, lambdaapi.WithInterceptor(opts.Interceptor))
	}
	s.Lambda = lambdaapi.NewServer(handlers.functions, lambdaOpts...)
	url, closeFn, err := s.Lambda.Listen("")
	if err != nil {
		return nil, err
	}
	s.lambdaClose = closeFn
	s.Engine, err = engine.Start(ctx, engine.Options{LambdaEndpoint: url, Logger: opts.Log})
	if err != nil {
		return nil, err
	}
	return s, nil
}

type handlerSet struct {
	functions map[string]lambda.Handler
	teardown  *steps.Teardown
	waker     *steps.Waker
}

// handlers builds the real step handlers on the local cloud's ports, configured as the CDK stack configures them.
func (s *Stack) handlers() handlerSet {
	o := s.opts
	cfg := deployment.DefaultConfig()
	cfg.Cluster, cfg.ModelBucket, cfg.ModelPrefix = o.Cluster.Name, Bucket, ModelPrefix
	cfg.ScheduleGroup, cfg.SchedulerRoleArn, cfg.StateMachineArn = ScheduleGroup, SchedulerRole, s.StateMachineArn()
	cfg.StopFunctionArn, cfg.WakerTargetGroup = s.FunctionArn("teardown"), s.wakerTargetGroup
	cfg.Subnets, cfg.SecurityGroups = []string{"subnet-local"}, []string{"sg-local"}
	cfg.DevTTL, cfg.HealthTimeout, cfg.HealthWatch, cfg.HealthPoll = o.DevTTL, o.HealthTimeout, o.HealthWatch, o.HealthPoll
	cfg.ProvisioningTimeout = cmp.Or(o.ProvisioningTimeout, cfg.ProvisioningTimeout)
	cfg.ListenerArn, cfg.LoadBalancerName, cfg.EndpointBase = s.LB.ListenerArn(), s.LB.FullName(), s.LB.URL()
	cfg.VpcID, cfg.APIKeys, cfg.UploadDefaults = "vpc-local", o.APIKeys, o.UploadDefaults
	cfg.ModelRegistry, cfg.ModelCacheDir = s.Registry.Host, s.dir+"/model-cache"
	cfg.ImageRepository, cfg.OllamaImage = s.ImageRepository(), s.OllamaImage
	if o.NoModelImages {
		cfg.ImageRepository = ""
	}
	cfg.IdleWindow, cfg.MaxLifetime = cmp.Or(o.IdleWindow, cfg.IdleWindow), cmp.Or(o.MaxLifetime, cfg.MaxLifetime)
	cfg.ScaleTargetRequests = cmp.Or(o.ScaleTargetRequests, cfg.ScaleTargetRequests)
	cfg.GPUInstanceTypes = s.GPUInstanceTypes()
	for _, p := range o.Cluster.CapacityProviders {
		key := p.Instance.InstanceType
		if p.Spot {
			key += planner.SpotProviderSuffix
		}
		cfg.Providers[key] = p.Name
	}
	set := steps.Build(cfg, steps.Clients{S3: s.Bucket, ECS: s.ECS, AutoScaling: s.ECS.AutoScaling(), Quotas: s.ECS.Account(),
		EC2: s.ECS.Account(), Scheduler: s.Scheduler, Executions: executions{s}, LB: s.LB, Metrics: s.LB,
		Parameters: s.Parameters, Services: s.ECS, Scaling: s.Scaling}, s.log)
	// What is local by nature: every task answers on 127.0.0.1 at its own port, schedule time may run faster
	// than real time, and a CPU cannot meet the GPU readiness rule.
	set.Health.Endpoint = s.ECS.Endpoint
	set.AutoStop.Now, set.Teardown.Interrupted.Now, set.Teardown.Now = s.Scheduler.Now, s.Scheduler.Now, s.Scheduler.Now
	set.Waker.DefaultStart = 5 * time.Second // a local task starts in about a second
	if !o.ApplyGPURule {
		set.Health.GPURuleNotApplicable = "local mode runs GPU placements on the CPU"
	}
	fns := map[string]lambda.Handler{
		"validate": lambdaapi.Func(set.Validate.Handle), "configure": lambdaapi.Func(set.Configure.Handle),
		"capacity": lambdaapi.Func(set.Capacity.Handle), "runtask": lambdaapi.Func(set.RunTask.Handle),
		"health": lambdaapi.Func(set.Health.Handle), "autostop": lambdaapi.Func(set.AutoStop.Handle),
		"cleanup": lambdaapi.Func(set.Cleanup.Handle), "teardown": lambdaapi.Func(set.Teardown.Handle),
		"image": lambdaapi.Func(modelimage.New(cfg, s.ECS, s.Parameters, nil, s.log).Handle),
	}
	return handlerSet{functions: fns, teardown: set.Teardown, waker: set.Waker}
}

// ImageRepository is where model images are built: the local registry, standing in for the stack's ECR repository.
func (s *Stack) ImageRepository() string { return s.Registry.Host + "/ollama-ecs/models" }

// SpotInstanceTypes are the GPU types this stack's cluster has Spot capacity providers for (never nil).
func (s *Stack) SpotInstanceTypes() []string {
	types := []string{}
	for _, p := range s.opts.Cluster.CapacityProviders {
		if p.Spot && !slices.Contains(types, p.Instance.InstanceType) {
			types = append(types, p.Instance.InstanceType)
		}
	}
	return types
}

// GPUInstanceTypes are the GPU types this stack's cluster can run (its container instances' and capacity
// providers'), which the configure step plans on.
func (s *Stack) GPUInstanceTypes() []string {
	var types []string
	for _, g := range s.opts.Cluster.ContainerInstances {
		if g.GPUs > 0 {
			types = append(types, g.InstanceType)
		}
	}
	for _, p := range s.opts.Cluster.CapacityProviders {
		if !slices.Contains(types, p.Instance.InstanceType) {
			types = append(types, p.Instance.InstanceType)
		}
	}
	return types
}

// Routed says what an event did: started an execution, or ran the teardown function.
type Routed struct {
	Kind         events.Kind
	ExecutionArn string              `json:",omitempty"`
	Stopped      *deployment.Stopped `json:",omitempty"`
}

// PutEvent delivers an event as the stack's EventBridge rules do: deploy requests and model uploads start the
// state machine with the whole event as input; stop requests and the scheduled teardown invoke the teardown
// function. An event no rule matches is dropped, as EventBridge drops it, and reported as an error here.
func (s *Stack) PutEvent(ctx context.Context, raw []byte) (Routed, error) {
	var env events.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return Routed{}, fmt.Errorf("not an EventBridge event: %w", err)
	}
	switch {
	case env.Source == events.SourceOllamaECS && env.DetailType == events.DetailTypeDeploy,
		env.Source == events.SourceS3 && env.DetailType == events.DetailTypeObjectCreated && s.matchesUploadRule(env):
		kind := events.KindDeploy
		if env.Source == events.SourceS3 {
			kind = events.KindUpload
		}
		// Rule targets start executions with generated names; the deployment id comes from the event.
		arn, err := s.start(ctx, randomName(), json.RawMessage(raw), kind)
		return Routed{Kind: kind, ExecutionArn: arn}, err
	case env.Source == events.SourceOllamaECS && env.DetailType == events.DetailTypeStop,
		(env.Source == events.SourceEvents || env.Source == events.SourceScheduler) && env.DetailType == events.DetailTypeScheduled,
		env.Source == events.SourceECS && env.DetailType == events.DetailTypeTaskState && s.matchesTaskStoppedRule(env):
		stopped, err := s.invokeTeardown(ctx, raw)
		kind := events.KindStop
		switch env.Source {
		case events.SourceEvents, events.SourceScheduler:
			kind = events.KindTeardown
		case events.SourceECS:
			kind = events.KindTaskStopped
		}
		return Routed{Kind: kind, Stopped: &stopped}, err
	}
	return Routed{}, fmt.Errorf("no rule matches source %q detail-type %q", env.Source, env.DetailType)
}

// matchesUploadRule is the S3 rule's pattern: this bucket, keys under the model prefix.
func (s *Stack) matchesUploadRule(env events.Envelope) bool {
	var d struct {
		Bucket struct{ Name string } `json:"bucket"`
		Object struct{ Key string }  `json:"object"`
	}
	if json.Unmarshal(env.Detail, &d) != nil {
		return false
	}
	return d.Bucket.Name == Bucket && len(d.Object.Key) >= len(ModelPrefix) && d.Object.Key[:len(ModelPrefix)] == ModelPrefix
}

// matchesTaskStoppedRule is the task-state rule's pattern: this cluster's tasks, STOPPED, for any stop code but
// UserInitiated (the stops this system and its users ask for).
func (s *Stack) matchesTaskStoppedRule(env events.Envelope) bool {
	var d events.TaskStateChange
	return json.Unmarshal(env.Detail, &d) == nil && d.ClusterArn == s.ECS.ClusterArn() && d.LastStatus == cloud.StatusStopped &&
		d.StopCode != "UserInitiated"
}

// deliverAsync routes an event the way EventBridge delivers it: asynchronously, after the call that caused it
// returned. Events no rule matches are dropped, as EventBridge drops them.
func (s *Stack) deliverAsync(event []byte) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.deliveries.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.deliveries.Done()
		if _, err := s.PutEvent(context.Background(), event); err != nil && !strings.HasPrefix(err.Error(), "no rule matches") {
			s.log.Error("delivering an event", "error", err)
		}
	}()
}

// Settle waits until the asynchronous event deliveries under way (S3 and ECS events to their rules' targets) are
// done, so a test can tell "nothing happened" from "not yet".
func (s *Stack) Settle() { s.deliveries.Wait() }

// StateMachineArn is the local deploy state machine's ARN.
func (s *Stack) StateMachineArn() string {
	cfg := s.opts.Cluster
	return fmt.Sprintf("arn:aws:states:%s:%s:stateMachine:%s", cfg.Region, cfg.Account, StateMachine)
}

// FunctionArn is a local function's ARN, as the state machine and the schedules name it.
func (s *Stack) FunctionArn(name string) string {
	cfg := s.opts.Cluster
	return fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", cfg.Region, cfg.Account, name)
}

// invokeTarget runs a schedule's target: the teardown function, with the schedule's input, as Scheduler invokes
// a Lambda target.
func (s *Stack) invokeTarget(ctx context.Context, _ string, target schedtypes.Target) error {
	if aws.ToString(target.Arn) != s.FunctionArn("teardown") {
		return fmt.Errorf("no local function %s", aws.ToString(target.Arn))
	}
	_, err := s.Teardown.Handle(ctx, json.RawMessage(aws.ToString(target.Input)))
	return err
}

// wakerTarget creates the load balancer's lambda target group for the waker function.
func (s *Stack) wakerTarget(ctx context.Context) (string, error) {
	out, err := s.LB.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("ollama-ecs-waker"), TargetType: elbtypes.TargetTypeEnumLambda})
	if err != nil {
		return "", err
	}
	arn := aws.ToString(out.TargetGroups[0].TargetGroupArn)
	_, err = s.LB.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn),
		Targets: []elbtypes.TargetDescription{{Id: aws.String(s.FunctionArn("waker"))}}})
	return arn, err
}

// invokeFunction serves the load balancer's Lambda target: the waker function.
func (s *Stack) invokeFunction(ctx context.Context, arn string, req lambdaevents.ALBTargetGroupRequest) (lambdaevents.ALBTargetGroupResponse, error) {
	if arn != s.FunctionArn("waker") || s.waker == nil {
		return lambdaevents.ALBTargetGroupResponse{}, fmt.Errorf("no local function %s", arn)
	}
	return s.waker.Handle(ctx, req)
}

// invokeTeardown runs the teardown function's handler with the event, as the rules' Lambda target does.
func (s *Stack) invokeTeardown(ctx context.Context, raw []byte) (deployment.Stopped, error) {
	return s.Teardown.Handle(ctx, raw)
}

// Deploy starts the state machine directly, as the CLI does on AWS: the execution's name is the deployment id,
// so the same request twice is one deployment.
func (s *Stack) Deploy(ctx context.Context, req events.DeployRequest) (string, error) {
	if req.DeploymentID == "" {
		return "", errors.New("a direct deployment needs a deployment id (the execution name)")
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	return s.start(ctx, req.DeploymentID, raw, events.KindDirect)
}

// Upload streams a model file under the model prefix; the bucket's Object Created event starts the deployment.
// A body that fails midway (too large, cut off) stores nothing.
func (s *Stack) Upload(ctx context.Context, key string, body io.Reader) error {
	_, err := s.Bucket.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(Bucket), Key: aws.String(key), Body: body})
	return err
}

// Store puts a model file in the bucket without starting a deployment, for deploy requests that name it as
// their source.
func (s *Stack) Store(ctx context.Context, key string, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storing.Store(true)
	defer s.storing.Store(false)
	_, err := s.Bucket.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(Bucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	return err
}

func (s *Stack) start(ctx context.Context, name string, input json.RawMessage, kind events.Kind) (string, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return "", errors.New("local stack is closed")
	}
	var opts []engine.ExecutionOption
	opts = append(opts, engine.WithStateMachineName(StateMachine),
		engine.WithRetryIntervalOverride(EnsureModelImage, 500*time.Millisecond))
	if s.opts.HealthWait > 0 {
		opts = append(opts, engine.WithWaitOverride(WaitForHealth, s.opts.HealthWait))
	}
	arn, err := s.Engine.StartExecution(ctx, s.definition, name, input, opts...)
	if err != nil {
		return "", err
	}
	// The deployment id the validate step will find (nothing when the input does not parse: it will be rejected).
	var id string
	if in, err := events.Parse(input, events.Config{ModelPrefix: ModelPrefix, Bucket: Bucket}, name); err == nil {
		id = in.DeploymentID
	}
	s.mu.Lock()
	s.executions = append(s.executions, Started{ExecutionArn: arn, Kind: kind, DeploymentID: id, At: time.Now()})
	s.mu.Unlock()
	s.log.Info("execution started", "executionArn", arn, "kind", kind)
	return arn, nil
}

// Executions lists what the stack started, oldest first.
func (s *Stack) Executions() []Started {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Started(nil), s.executions...)
}

// WaitForExecution waits until the next execution appears after n started ones, e.g. the one an upload starts.
func (s *Stack) WaitForExecution(ctx context.Context, n int) (Started, error) {
	for {
		if ex := s.Executions(); len(ex) > n {
			return ex[n], nil
		}
		select {
		case <-ctx.Done():
			return Started{}, fmt.Errorf("no execution started: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops every task and process, every schedule timer, the engine and the Lambda endpoint, and removes the
// temporary folder: nothing is left running.
func (s *Stack) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	var errs []error
	if s.Scheduler != nil {
		s.Scheduler.Close()
	}
	s.deliveries.Wait()
	if s.Engine != nil {
		errs = append(errs, s.Engine.Close())
	}
	if s.Scaling != nil {
		s.Scaling.Close()
	}
	if s.ECS != nil {
		errs = append(errs, s.ECS.Close(ctx))
	}
	if s.LB != nil {
		errs = append(errs, s.LB.Close(ctx))
	}
	if s.Registry != nil {
		errs = append(errs, s.Registry.Close())
	}
	if s.lambdaClose != nil {
		errs = append(errs, s.lambdaClose())
	}
	if s.removeDir && s.dir != "" {
		errs = append(errs, os.RemoveAll(s.dir))
	}
	return errors.Join(errs...)
}

func randomName() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func orDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// PushModel puts a GGUF model into the stack's registry under a library-style name (NAME[:TAG], e.g. "qwen3:0.6b")
// the way a model gets into a real registry: a real `ollama serve` creates it from the file, and its push
// (`ollama push --insecure`) uploads it. It returns the full reference, HOST/library/NAME:TAG.
func (s *Stack) PushModel(ctx context.Context, name string, gguf []byte) (string, error) {
	repo, tag, ok := strings.Cut(name, ":")
	if !ok {
		tag = "latest"
	}
	ref := s.Registry.Host + "/library/" + repo + ":" + tag
	srv, err := ollama.Start(ctx, ollama.Options{TempDir: s.dir, Logger: s.log})
	if err != nil {
		return "", err
	}
	defer srv.Stop(context.WithoutCancel(ctx))
	file := filepath.Join(srv.Dir(), "push.gguf")
	if err := os.WriteFile(file, gguf, 0o644); err != nil {
		return "", err
	}
	if err := ollama.CreateFromGGUF(ctx, srv.Client(), ref, file); err != nil {
		return "", err
	}
	if err := ollama.PushInsecure(ctx, srv.Client(), ref); err != nil {
		return "", err
	}
	return ref, nil
}
