package cloud

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/local/cloud/query"
)

// Task statuses, as ECS spells them.
const (
	StatusProvisioning = "PROVISIONING"
	StatusPending      = "PENDING"
	StatusRunning      = "RUNNING"
	StatusStopped      = "STOPPED"
)

// ECSOptions configure NewECS. The zero value is a cluster from DefaultConfig with real Ollama tasks.
type ECSOptions struct {
	// Config is the cluster; the zero value means DefaultConfig().
	Config Config
	// Runner starts the tasks' containers; nil means an OllamaRunner with no bucket.
	Runner Runner
	// ProvisioningDelay and PendingDelay are how long a task stays in each status before the next, so pollers
	// see the stages a real task goes through; ScaleOutDelay is added when a capacity provider adds an
	// instance for the task. Zero means no wait.
	ProvisioningDelay, PendingDelay, ScaleOutDelay time.Duration
	// StopTimeout bounds stopping one container (default 30 s, ECS's stopTimeout).
	StopTimeout time.Duration
	// Now stamps task times; nil means time.Now.
	Now func() time.Time
	// OnTaskStopped, when set, receives an "ECS Task State Change" event (EventBridge's envelope, JSON) for every
	// task that reaches STOPPED, as ECS sends one to the default bus. It is called outside the cluster's lock.
	OnTaskStopped func(event []byte)
	// Targets is the load balancer services register their tasks with (nil: services without load balancers).
	Targets Targets
	// OllamaImage is the image the stack's base task definitions (ollama-cpu, ollama-gpu) run: the local
	// registry's stand-in for the pinned Ollama image. Empty runs no image.
	OllamaImage string
	Log         *slog.Logger
}

// ECS is the local ECS cluster. It is safe for concurrent use: placement happens under one lock, so concurrent
// RunTasks never book the same GPU, CPU or memory twice.
type ECS struct {
	opts       ECSOptions
	cfg        Config
	clusterArn string
	faults     *Faults
	log        *slog.Logger

	ctx    context.Context // ends at Close; tasks' containers start under it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	instances []*instance
	providers map[string]*provider
	tasks     map[string]*task // by task id
	order     []*task          // in start order, for listing
	tokens    map[string]tokenUse
	seq       int
	services  map[string]*service // by name
	taskDefs  taskDefinitions
}

type instance struct {
	id, arn, ec2ID, typ, az, provider string
	cpu, mem                          int
	gpus                              []string
	attrs                             map[string]string
	freeCPU, freeMem                  int
	usedGPUs                          map[string]bool
	running, pending                  int
	registeredAt                      time.Time
}

type provider struct {
	cfg      CapacityProviderConfig
	arn      string
	desired  int
	created  time.Time
	launched int
	// activities are the group's scaling activities, oldest first.
	activities []activity
}

// activity is one Auto Scaling launch attempt.
type activity struct {
	id, status, message string
	at                  time.Time
}

type task struct {
	id, arn, family, group, startedBy string
	taskDefinitionArn, image          string // the revision RunTask named, and its ollama container's image
	launchType                        ecstypes.LaunchType
	capacityProvider                  string
	inst                              *instance
	cpu, mem                          int
	gpus                              []string
	tags                              []ecstypes.Tag
	overrides                         *ecstypes.TaskOverride
	env, fetchEnv                     map[string]string
	extraDelay                        time.Duration
	// awaitingInstance is a task whose capacity provider could not launch its instance: it stays PROVISIONING.
	awaitingInstance bool
	crashAt          Stage
	hang             bool

	lastStatus, desiredStatus string
	stopCode                  ecstypes.TaskStopCode
	stoppedReason             string
	exitCode                  *int32
	containerReason           string
	stage                     Stage
	version                   int64
	createdAt, pullStartedAt, pullStoppedAt, startedAt, connectivityAt,
	stoppingAt, stoppedAt *time.Time

	proc   Process
	stopCh chan struct{} // closed when the task is asked to stop
	done   chan struct{} // closed at STOPPED
}

// NewECS builds the cluster: registers the configured container instances and each capacity provider's desired
// instances.
func NewECS(opts ECSOptions) (*ECS, error) {
	cfg := opts.Config
	if cfg.Name == "" {
		cfg = DefaultConfig()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Runner == nil {
		opts.Runner = &OllamaRunner{Log: opts.Log}
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &ECS{
		opts: opts, cfg: cfg, faults: &Faults{}, log: log, ctx: ctx, cancel: cancel,
		clusterArn: fmt.Sprintf("arn:aws:ecs:%s:%s:cluster/%s", cfg.Region, cfg.Account, cfg.Name),
		providers:  map[string]*provider{}, tasks: map[string]*task{}, tokens: map[string]tokenUse{},
		services: map[string]*service{}, taskDefs: taskDefinitions{},
	}
	for _, g := range cfg.ContainerInstances {
		for range g.Count {
			e.addInstance(g, "")
		}
	}
	for _, pc := range cfg.CapacityProviders {
		p := &provider{cfg: pc, created: opts.Now(),
			arn: fmt.Sprintf("arn:aws:ecs:%s:%s:capacity-provider/%s", cfg.Region, cfg.Account, pc.Name)}
		e.providers[pc.Name] = p
		for range pc.Desired {
			e.addInstance(pc.Instance, pc.Name)
		}
		p.desired = pc.Desired
	}
	return e, nil
}

// addInstance registers one container instance; the caller holds mu or owns e exclusively.
func (e *ECS) addInstance(g InstanceGroup, providerName string) *instance {
	e.seq++
	id := fmt.Sprintf("%032x", e.seq)
	az := g.AvailabilityZone
	if az == "" {
		az = e.cfg.Region + "a"
	}
	in := &instance{
		id: id, arn: fmt.Sprintf("arn:aws:ecs:%s:%s:container-instance/%s/%s", e.cfg.Region, e.cfg.Account, e.cfg.Name, id),
		ec2ID: fmt.Sprintf("i-%017x", e.seq), typ: g.InstanceType, az: az, provider: providerName,
		cpu: g.CPU, mem: g.MemoryMiB, freeCPU: g.CPU, freeMem: g.MemoryMiB, usedGPUs: map[string]bool{},
		registeredAt: e.opts.Now(),
		attrs: map[string]string{
			"ecs.instance-type": g.InstanceType, "ecs.availability-zone": az, "ecs.os-type": "linux",
			"ecs.cpu-architecture": "x86_64", "ecs.capability.task-eni": "",
		},
	}
	for k, v := range g.Attributes {
		in.attrs[k] = v
	}
	for n := range g.GPUs {
		in.gpus = append(in.gpus, fmt.Sprintf("GPU-%s-%d", id[len(id)-8:], n))
	}
	if providerName != "" {
		e.providers[providerName].launched++
	}
	e.instances = append(e.instances, in)
	return in
}

// Faults is the cluster's fault injection.
func (e *ECS) Faults() *Faults { return e.faults }

// ClusterArn is the cluster's ARN.
func (e *ECS) ClusterArn() string { return e.clusterArn }

// Config is the cluster's configuration.
func (e *ECS) Config() Config { return e.cfg }

// checkCluster accepts the cluster's name, its ARN, or nothing (the default cluster).
func (e *ECS) checkCluster(c *string) error {
	if name := aws.ToString(c); name != "" && name != e.cfg.Name && name != e.clusterArn {
		return &ecstypes.ClusterNotFoundException{Message: aws.String("Cluster not found.")}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *ECS) taskArn(id string) string {
	return fmt.Sprintf("arn:aws:ecs:%s:%s:task/%s/%s", e.cfg.Region, e.cfg.Account, e.cfg.Name, id)
}

// findTask takes a task ARN or id; the caller holds mu.
func (e *ECS) findTask(ref string) *task {
	return e.tasks[ref[strings.LastIndex(ref, "/")+1:]]
}

// RunTask places and starts tasks like ECS: the same clientToken returns the tasks it started before; EC2 tasks
// take CPU, memory and GPUs on a container instance that satisfies the placement constraints, and a task that
// fits nowhere is a failure (RESOURCE:CPU, RESOURCE:MEMORY, RESOURCE:GPU, ATTRIBUTE), not an error; Fargate
// refuses placement constraints and GPUs with InvalidParameterException.
func (e *ECS) RunTask(ctx context.Context, in *ecs.RunTaskInput, _ ...func(*ecs.Options)) (*ecs.RunTaskOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	if err := e.faults.runTaskError(); err != nil {
		return nil, err
	}
	spec, err := e.parseRun(in)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, clientException("the local cluster is closed")
	}
	token := aws.ToString(in.ClientToken)
	fingerprint := requestFingerprint(in)
	if prev, ok := e.tokens[token]; ok && token != "" {
		// ECS's idempotency: the same token and request return the first answer; the same token with another
		// request is refused.
		if prev.fingerprint != fingerprint {
			ids := make([]string, 0, len(prev.tasks))
			for _, t := range prev.tasks {
				ids = append(ids, t.arn)
			}
			return nil, &ecstypes.ConflictException{ResourceIds: ids, Message: aws.String(
				"The specified client token is already in use with a different RunTask request: " + token)}
		}
		out := &ecs.RunTaskOutput{}
		for _, t := range prev.tasks {
			out.Tasks = append(out.Tasks, e.snapshot(t, true))
		}
		return out, nil
	}
	if reason, ok := e.faults.runTaskRefusal(); ok {
		return &ecs.RunTaskOutput{Failures: []ecstypes.Failure{{Reason: aws.String(reason)}}}, nil
	}
	out := &ecs.RunTaskOutput{}
	var started []*task
	var used []*instance // for distinctInstance
	for range spec.count {
		t, failures, err := e.place(spec, used)
		if err != nil {
			return nil, err
		}
		if t == nil {
			out.Failures = append(out.Failures, failures...)
			break
		}
		if t.inst != nil {
			used = append(used, t.inst)
		}
		started = append(started, t)
	}
	for _, t := range started {
		var stall bool
		t.crashAt, t.hang, stall = e.faults.nextTaskFaults()
		t.awaitingInstance = t.awaitingInstance || stall
		e.tasks[t.id] = t
		e.order = append(e.order, t)
		e.wg.Add(1)
		go e.run(t)
		out.Tasks = append(out.Tasks, e.snapshot(t, true))
	}
	if token != "" && len(started) > 0 {
		e.tokens[token] = tokenUse{tasks: started, fingerprint: fingerprint}
	}
	return out, nil
}

// tokenUse is what a client token started, and a fingerprint of the request that used it.
type tokenUse struct {
	tasks       []*task
	fingerprint string
}

// requestFingerprint identifies a RunTask request apart from its client token.
func requestFingerprint(in *ecs.RunTaskInput) string {
	c := *in
	c.ClientToken = nil
	raw, _ := json.Marshal(c)
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// runSpec is a checked RunTask request.
type runSpec struct {
	family, group, startedBy string
	taskDefinition           string
	count                    int
	launchType               ecstypes.LaunchType
	capacityProvider         string // FARGATE, FARGATE_SPOT, a named provider, or ""
	cpu, mem, gpus           int
	constraints              []query.Expr
	distinct                 bool
	tags                     []ecstypes.Tag
	overrides                *ecstypes.TaskOverride
	env, fetchEnv            map[string]string
}

// Fargate's valid CPU units and the memory range (MiB) and step for each.
var fargateSizes = map[int][3]int{
	256: {512, 2048, 512}, 512: {1024, 4096, 1024}, 1024: {2048, 8192, 1024}, 2048: {4096, 16384, 1024},
	4096: {8192, 30720, 1024}, 8192: {16384, 61440, 4096}, 16384: {32768, 122880, 8192},
}

func (e *ECS) parseRun(in *ecs.RunTaskInput) (runSpec, error) {
	s := runSpec{count: int(aws.ToInt32(in.Count)), startedBy: aws.ToString(in.StartedBy), group: aws.ToString(in.Group),
		tags: in.Tags, overrides: in.Overrides, cpu: 1024, mem: 2048, env: map[string]string{}, fetchEnv: map[string]string{}}
	td := aws.ToString(in.TaskDefinition)
	if td == "" {
		return s, invalidParameter("TaskDefinition can not be blank.")
	}
	s.taskDefinition = td
	s.family = td[strings.LastIndex(td, "/")+1:]
	s.family, _, _ = strings.Cut(s.family, ":")
	if s.group == "" {
		s.group = "family:" + s.family
	}
	if s.count == 0 {
		s.count = 1
	}
	if s.count < 1 || s.count > 10 {
		return s, invalidParameter("Count must be between 1 and 10.")
	}
	if len(s.startedBy) > 128 {
		return s, invalidParameter("startedBy must be at most 128 characters.")
	}
	if len(aws.ToString(in.ClientToken)) > 64 {
		return s, invalidParameter("clientToken must be at most 64 characters.")
	}
	if o := in.Overrides; o != nil {
		var err error
		if o.Cpu != nil {
			if s.cpu, err = strconv.Atoi(aws.ToString(o.Cpu)); err != nil || s.cpu <= 0 {
				return s, invalidParameter("Invalid 'cpu' setting for task: %q.", aws.ToString(o.Cpu))
			}
		}
		if o.Memory != nil {
			if s.mem, err = strconv.Atoi(aws.ToString(o.Memory)); err != nil || s.mem <= 0 {
				return s, invalidParameter("Invalid 'memory' setting for task: %q.", aws.ToString(o.Memory))
			}
		}
		for _, c := range o.ContainerOverrides {
			var env map[string]string
			switch aws.ToString(c.Name) {
			case deployment.ContainerName:
				env = s.env
			case deployment.FetchContainerName:
				env = s.fetchEnv
			default:
				return s, invalidParameter("Override for container named %s is not a container in the TaskDefinition.", aws.ToString(c.Name))
			}
			for _, kv := range c.Environment {
				env[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
			}
			for _, r := range c.ResourceRequirements {
				if r.Type == ecstypes.ResourceTypeGpu {
					n, err := strconv.Atoi(aws.ToString(r.Value))
					if err != nil || n < 0 {
						return s, invalidParameter("Invalid GPU resource requirement %q.", aws.ToString(r.Value))
					}
					s.gpus += n
				}
			}
		}
	}
	for _, pc := range in.PlacementConstraints {
		switch pc.Type {
		case ecstypes.PlacementConstraintTypeDistinctInstance:
			s.distinct = true
		case ecstypes.PlacementConstraintTypeMemberOf:
			x, err := query.Parse(aws.ToString(pc.Expression))
			if err != nil {
				return s, invalidParameter("Invalid placement constraint expression: %v", err)
			}
			s.constraints = append(s.constraints, x)
		default:
			return s, invalidParameter("Unknown placement constraint type %q.", pc.Type)
		}
	}
	if len(in.PlacementConstraints) > 10 {
		return s, invalidParameter("At most 10 placement constraints are allowed.")
	}
	switch {
	case in.LaunchType != "" && len(in.CapacityProviderStrategy) > 0:
		return s, invalidParameter("Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.")
	case len(in.CapacityProviderStrategy) > 0:
		// Locally every task of a strategy goes to its first provider with weight or base.
		for _, item := range in.CapacityProviderStrategy {
			if item.Weight > 0 || item.Base > 0 || len(in.CapacityProviderStrategy) == 1 {
				s.capacityProvider = aws.ToString(item.CapacityProvider)
				break
			}
		}
		switch s.capacityProvider {
		case "FARGATE", "FARGATE_SPOT":
			s.launchType = ecstypes.LaunchTypeFargate
		default:
			if e.providers[s.capacityProvider] == nil {
				return s, invalidParameter("The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.")
			}
			s.launchType = ecstypes.LaunchTypeEc2
		}
	case in.LaunchType == ecstypes.LaunchTypeFargate:
		s.launchType, s.capacityProvider = ecstypes.LaunchTypeFargate, "FARGATE"
	case in.LaunchType == ecstypes.LaunchTypeEc2 || in.LaunchType == "":
		s.launchType = ecstypes.LaunchTypeEc2
	default:
		return s, invalidParameter("Launch type %s is not supported by the local cluster.", in.LaunchType)
	}
	if s.launchType == ecstypes.LaunchTypeFargate {
		if len(in.PlacementConstraints) > 0 {
			return s, invalidParameter("Task placement constraints are not supported for tasks with launch type FARGATE.")
		}
		if s.gpus > 0 {
			return s, invalidParameter("GPU resource requirements are not supported for tasks run on Fargate.")
		}
		size, ok := fargateSizes[s.cpu]
		if !ok || s.mem < size[0] || s.mem > size[1] || (s.mem-size[0])%size[2] != 0 {
			return s, invalidParameter("No Fargate configuration exists for given values: %d CPU, %d memory.", s.cpu, s.mem)
		}
	}
	if o := in.Overrides; o != nil && o.EphemeralStorage != nil {
		gib := o.EphemeralStorage.SizeInGiB
		switch {
		case s.launchType != ecstypes.LaunchTypeFargate:
			return s, invalidParameter("Ephemeral storage overrides are only supported for tasks hosted on Fargate.")
		case gib < 21 || gib > 200:
			return s, invalidParameter("The ephemeral storage size must be between 21 and 200 GiB, not %d.", gib)
		}
	}
	return s, nil
}

// place finds room for one task and reserves it; the caller holds mu. A nil task with failures is a placement
// failure; an error is a request ECS refuses outright.
func (e *ECS) place(s runSpec, used []*instance) (*task, []ecstypes.Failure, error) {
	t := &task{
		family: s.family, group: s.group, startedBy: s.startedBy, launchType: s.launchType,
		capacityProvider: s.capacityProvider, cpu: s.cpu, mem: s.mem, tags: slices.Clone(s.tags), overrides: s.overrides,
		env: s.env, fetchEnv: s.fetchEnv, lastStatus: StatusProvisioning, desiredStatus: StatusRunning,
		stopCh: make(chan struct{}), done: make(chan struct{}),
	}
	t.id = randomHex(16)
	t.arn = e.taskArn(t.id)
	t.taskDefinitionArn = fmt.Sprintf("arn:aws:ecs:%s:%s:task-definition/%s:1", e.cfg.Region, e.cfg.Account, s.family)
	if td := e.taskDefinition(s.taskDefinition); td != nil {
		t.taskDefinitionArn = aws.ToString(td.TaskDefinitionArn)
		for _, c := range td.ContainerDefinitions {
			if aws.ToString(c.Name) == deployment.ContainerName {
				t.image = aws.ToString(c.Image)
			}
		}
	}
	now := e.opts.Now()
	t.createdAt = &now
	if s.launchType == ecstypes.LaunchTypeFargate {
		fc, spot := e.cfg.Fargate, s.capacityProvider == "FARGATE_SPOT"
		if spot {
			fc = e.cfg.FargateSpot
		}
		if fc.NoCapacity {
			return nil, []ecstypes.Failure{{Reason: aws.String("Capacity is unavailable at this time. Please try again later or in a different availability zone")}}, nil
		}
		if fc.MaxTasks > 0 && e.activeOn(s.capacityProvider) >= fc.MaxTasks {
			return nil, []ecstypes.Failure{{Reason: aws.String(fmt.Sprintf("You've reached the limit on the number of tasks you can run concurrently (%s: %d)", s.capacityProvider, fc.MaxTasks))}}, nil
		}
		return t, nil, nil
	}
	candidates := e.instances
	if s.capacityProvider != "" {
		candidates = nil
		for _, in := range e.instances {
			if in.provider == s.capacityProvider {
				candidates = append(candidates, in)
			}
		}
	}
	if len(e.instances) == 0 && s.capacityProvider == "" {
		return nil, nil, clientException("No Container Instances were found in your cluster.")
	}
	var failures []ecstypes.Failure
	for _, in := range candidates {
		reason := e.misfit(in, s, used)
		if reason == "" {
			e.reserve(t, in, s.gpus)
			return t, nil, nil
		}
		failures = append(failures, ecstypes.Failure{Arn: aws.String(in.arn), Reason: aws.String(reason)})
	}
	if p := e.providers[s.capacityProvider]; p != nil && p.desired < p.cfg.Max {
		// Managed scaling: the group grows by one instance and the task waits in PROVISIONING for it.
		p.desired++
		if p.cfg.LaunchFailure != "" {
			// The launch fails (quota, InsufficientInstanceCapacity): the group records it and, as on AWS, the
			// task waits in PROVISIONING for an instance that does not come.
			p.activities = append(p.activities, activity{id: randomHex(8), status: "Failed", message: p.cfg.LaunchFailure, at: now})
			t.awaitingInstance = true
			e.log.Info("capacity provider launch failed", "provider", p.cfg.Name, "reason", p.cfg.LaunchFailure)
			return t, nil, nil
		}
		in := e.addInstance(p.cfg.Instance, p.cfg.Name)
		p.activities = append(p.activities, activity{id: randomHex(8), status: "Successful",
			message: "Launching a new EC2 instance: " + in.ec2ID, at: now})
		if reason := e.misfit(in, s, used); reason != "" {
			failures = append(failures, ecstypes.Failure{Arn: aws.String(in.arn), Reason: aws.String(reason)})
			return nil, failures, nil
		}
		e.reserve(t, in, s.gpus)
		t.extraDelay = e.opts.ScaleOutDelay
		e.log.Info("capacity provider scaled out", "provider", p.cfg.Name, "desired", p.desired, "instance", in.ec2ID)
		return t, nil, nil
	}
	if len(failures) == 0 {
		failures = []ecstypes.Failure{{Reason: aws.String("RESOURCE:CPU"), Detail: aws.String("no container instance in capacity provider " + s.capacityProvider)}}
	}
	return nil, failures, nil
}

// misfit says why a task cannot go on an instance, in ECS's failure reasons, or "" when it fits.
func (e *ECS) misfit(in *instance, s runSpec, used []*instance) string {
	lookup := e.lookup(in)
	for _, c := range s.constraints {
		if !c.Eval(lookup) {
			return "ATTRIBUTE"
		}
	}
	if s.distinct && slices.Contains(used, in) {
		return "DistinctInstance placement constraint unsatisfied."
	}
	switch {
	case len(in.gpus)-len(in.usedGPUs) < s.gpus:
		return "RESOURCE:GPU"
	case in.freeMem < s.mem:
		return "RESOURCE:MEMORY"
	case in.freeCPU < s.cpu:
		return "RESOURCE:CPU"
	}
	return ""
}

func (e *ECS) reserve(t *task, in *instance, gpus int) {
	t.inst = in
	in.freeCPU -= t.cpu
	in.freeMem -= t.mem
	for _, id := range in.gpus {
		if len(t.gpus) == gpus {
			break
		}
		if !in.usedGPUs[id] {
			in.usedGPUs[id] = true
			t.gpus = append(t.gpus, id)
		}
	}
	in.pending++
}

// release gives a stopped task's resources back; the caller holds mu.
func (e *ECS) release(t *task) {
	in := t.inst
	if in == nil {
		return
	}
	in.freeCPU += t.cpu
	in.freeMem += t.mem
	for _, id := range t.gpus {
		delete(in.usedGPUs, id)
	}
	if t.startedAt != nil {
		in.running--
	} else {
		in.pending--
	}
}

// activeOn counts the tasks not yet stopped on a Fargate capacity provider; the caller holds mu.
func (e *ECS) activeOn(cp string) int {
	n := 0
	for _, t := range e.order {
		if t.capacityProvider == cp && t.lastStatus != StatusStopped {
			n++
		}
	}
	return n
}

// lookup answers the cluster query language's subjects for an instance; the caller holds mu.
func (e *ECS) lookup(in *instance) query.Lookup {
	return func(subject string) (string, bool) {
		if name, ok := strings.CutPrefix(subject, "attribute:"); ok {
			v, ok := in.attrs[name]
			return v, ok
		}
		switch subject {
		case "ec2InstanceId":
			return in.ec2ID, true
		case "agentConnected":
			return "true", true
		case "runningTasksCount":
			return strconv.Itoa(in.running), true
		}
		return "", false
	}
}

// snapshot renders a task as ECS describes it; the caller holds mu.
func (e *ECS) snapshot(t *task, withTags bool) ecstypes.Task {
	eniStatus := "PRECREATED"
	switch t.lastStatus {
	case StatusRunning:
		eniStatus = "ATTACHED"
	case StatusStopped:
		eniStatus = "DELETED"
	}
	eni := "eni-" + t.id[:17]
	out := ecstypes.Task{
		TaskArn: aws.String(t.arn), ClusterArn: aws.String(e.clusterArn),
		TaskDefinitionArn: aws.String(t.taskDefinitionArn),
		LastStatus:        aws.String(t.lastStatus), DesiredStatus: aws.String(t.desiredStatus),
		LaunchType: t.launchType, Cpu: aws.String(strconv.Itoa(t.cpu)), Memory: aws.String(strconv.Itoa(t.mem)),
		Group: aws.String(t.group), Overrides: t.overrides, Version: t.version, StopCode: t.stopCode,
		CreatedAt: t.createdAt, PullStartedAt: t.pullStartedAt, PullStoppedAt: t.pullStoppedAt, StartedAt: t.startedAt,
		ConnectivityAt: t.connectivityAt, StoppingAt: t.stoppingAt, StoppedAt: t.stoppedAt, ExecutionStoppedAt: t.stoppedAt,
		HealthStatus: ecstypes.HealthStatusUnknown,
		Attachments: []ecstypes.Attachment{{
			Id: aws.String(t.id[:8] + "-eni"), Type: aws.String("ElasticNetworkInterface"), Status: aws.String(eniStatus),
			Details: []ecstypes.KeyValuePair{
				{Name: aws.String("subnetId"), Value: aws.String("subnet-local")},
				{Name: aws.String("networkInterfaceId"), Value: aws.String(eni)},
				{Name: aws.String("privateDnsName"), Value: aws.String("localhost")},
				{Name: aws.String("privateIPv4Address"), Value: aws.String("127.0.0.1")},
			},
		}},
		Containers: []ecstypes.Container{{
			Name: aws.String(deployment.ContainerName), TaskArn: aws.String(t.arn),
			ContainerArn: aws.String(fmt.Sprintf("arn:aws:ecs:%s:%s:container/%s/%s/ollama", e.cfg.Region, e.cfg.Account, e.cfg.Name, t.id)),
			LastStatus:   aws.String(t.lastStatus), ExitCode: t.exitCode, GpuIds: t.gpus,
			Image: aws.String(t.image), Cpu: aws.String(strconv.Itoa(t.cpu)), Memory: aws.String(strconv.Itoa(t.mem)),
		}},
	}
	if t.startedBy != "" {
		out.StartedBy = aws.String(t.startedBy)
	}
	if t.containerReason != "" {
		out.Containers[0].Reason = aws.String(t.containerReason)
	}
	if t.stoppedReason != "" {
		out.StoppedReason = aws.String(t.stoppedReason)
	}
	if t.connectivityAt != nil {
		out.Connectivity = ecstypes.ConnectivityConnected
	}
	if t.capacityProvider != "" {
		out.CapacityProviderName = aws.String(t.capacityProvider)
	}
	if t.inst != nil {
		out.ContainerInstanceArn = aws.String(t.inst.arn)
		out.AvailabilityZone = aws.String(t.inst.az)
	} else {
		out.AvailabilityZone = aws.String(e.cfg.Region + "a")
		out.PlatformVersion = aws.String("1.4.0")
		out.PlatformFamily = aws.String("Linux")
	}
	if withTags {
		out.Tags = slices.Clone(t.tags)
	}
	return out
}

// DescribeTasks describes tasks by ARN or id; unknown ones are MISSING failures. Tags come only with
// Include: TAGS, as on ECS.
func (e *ECS) DescribeTasks(_ context.Context, in *ecs.DescribeTasksInput, _ ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	if len(in.Tasks) == 0 {
		return nil, invalidParameter("Tasks cannot be empty.")
	}
	if len(in.Tasks) > 100 {
		return nil, invalidParameter("Tasks can have at most 100 items.")
	}
	withTags := slices.Contains(in.Include, ecstypes.TaskFieldTags)
	e.mu.Lock()
	defer e.mu.Unlock()
	out := &ecs.DescribeTasksOutput{}
	for _, ref := range in.Tasks {
		if t := e.findTask(ref); t != nil {
			out.Tasks = append(out.Tasks, e.snapshot(t, withTags))
		} else {
			out.Failures = append(out.Failures, ecstypes.Failure{Arn: aws.String(ref), Reason: aws.String("MISSING")})
		}
	}
	return out, nil
}

// ListTasks lists task ARNs by startedBy, family, launch type, container instance and desired status (RUNNING
// unless asked otherwise, as on ECS), in start order, a page of MaxResults (default 100) at a time.
func (e *ECS) ListTasks(_ context.Context, in *ecs.ListTasksInput, _ ...func(*ecs.Options)) (*ecs.ListTasksOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	desired := string(in.DesiredStatus)
	if desired == "" {
		desired = StatusRunning
	}
	e.mu.Lock()
	var arns []string
	for _, t := range e.order {
		switch {
		case t.desiredStatus != desired,
			in.StartedBy != nil && t.startedBy != aws.ToString(in.StartedBy),
			in.Family != nil && t.family != aws.ToString(in.Family),
			in.ServiceName != nil && t.group != "service:"+aws.ToString(in.ServiceName),
			in.LaunchType != "" && t.launchType != in.LaunchType,
			in.ContainerInstance != nil && (t.inst == nil || (t.inst.arn != aws.ToString(in.ContainerInstance) && t.inst.id != aws.ToString(in.ContainerInstance))):
			continue
		}
		arns = append(arns, t.arn)
	}
	e.mu.Unlock()
	page, next, err := paginate(arns, in.NextToken, in.MaxResults)
	if err != nil {
		return nil, err
	}
	return &ecs.ListTasksOutput{TaskArns: page, NextToken: next}, nil
}

// paginate cuts a page out of items; the token is the index of the page's first item.
func paginate(items []string, token *string, maxResults *int32) ([]string, *string, error) {
	start := 0
	if tok := aws.ToString(token); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(items) {
			return nil, nil, invalidParameter("Invalid nextToken.")
		}
		start = n
	}
	size := int(aws.ToInt32(maxResults))
	if size <= 0 || size > 100 {
		size = 100
	}
	end := min(start+size, len(items))
	var next *string
	if end < len(items) {
		next = aws.String(strconv.Itoa(end))
	}
	return slices.Clone(items[start:end]), next, nil
}

// StopTask asks a task to stop: its desired status becomes STOPPED at once and its container is stopped in the
// background (stop code UserInitiated, the given reason); a stopped task is returned as it is. An unknown task
// is InvalidParameterException "The referenced task was not found.", as on ECS.
func (e *ECS) StopTask(_ context.Context, in *ecs.StopTaskInput, _ ...func(*ecs.Options)) (*ecs.StopTaskOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.findTask(aws.ToString(in.Task))
	if t == nil {
		return nil, invalidParameter("The referenced task was not found.")
	}
	reason := aws.ToString(in.Reason)
	if reason == "" {
		reason = "Task stopped by user"
	}
	e.requestStop(t, ecstypes.TaskStopCodeUserInitiated, reason)
	snap := e.snapshot(t, false)
	return &ecs.StopTaskOutput{Task: &snap}, nil
}

// requestStop flips the desired status and wakes the task's goroutine; the caller holds mu.
func (e *ECS) requestStop(t *task, code ecstypes.TaskStopCode, reason string) bool {
	if t.desiredStatus == StatusStopped {
		return false
	}
	now := e.opts.Now()
	t.desiredStatus, t.stopCode, t.stoppedReason, t.stoppingAt = StatusStopped, code, reason, &now
	t.version++
	close(t.stopCh)
	return true
}

// ExpireClientTokens forgets every RunTask client token, as ECS does after 24 hours: the same token then starts a
// new task.
func (e *ECS) ExpireClientTokens() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.tokens)
}

// InterruptSpot reclaims a running Spot task, as AWS does with two minutes' warning (locally none). A Fargate Spot
// task stops with stop code SpotInterruption. An EC2 Spot instance (of a Spot capacity provider) is terminated: it
// leaves the cluster and its group, and its tasks stop as on a lost host.
func (e *ECS) InterruptSpot(taskArn string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.findTask(taskArn)
	if t == nil {
		return fmt.Errorf("interrupt %s: no such task", taskArn)
	}
	if t.capacityProvider == "FARGATE_SPOT" {
		if !e.requestStop(t, ecstypes.TaskStopCodeSpotInterruption, "Your Spot Task was interrupted.") {
			return fmt.Errorf("interrupt %s: already stopping", taskArn)
		}
		return nil
	}
	p := e.providers[t.capacityProvider]
	if p == nil || !p.cfg.Spot || t.inst == nil {
		return fmt.Errorf("interrupt %s: not a Spot task", taskArn)
	}
	in := t.inst
	e.instances = slices.DeleteFunc(e.instances, func(o *instance) bool { return o == in })
	p.desired--
	p.activities = append(p.activities, activity{id: randomHex(8), status: "Successful",
		message: "Terminating EC2 instance: " + in.ec2ID + " (Spot interruption)", at: e.opts.Now()})
	stopped := 0
	for _, o := range e.tasks {
		if o.inst == in && e.requestStop(o, ecstypes.TaskStopCodeTerminationNotice, "Host EC2 (instance "+in.ec2ID+") terminated.") {
			stopped++
		}
	}
	if stopped == 0 {
		return fmt.Errorf("interrupt %s: already stopping", taskArn)
	}
	return nil
}

// CrashTask kills a task's container process, as an out-of-memory kill would: the task stops with
// EssentialContainerExited and exit code 137.
func (e *ECS) CrashTask(taskArn string) error {
	e.mu.Lock()
	t := e.findTask(taskArn)
	var p Process
	if t != nil {
		p = t.proc
	}
	e.mu.Unlock()
	if p == nil {
		return fmt.Errorf("crash %s: the task has no running container", taskArn)
	}
	p.Kill()
	return nil
}

// Endpoint is a running task's Ollama base URL, http://127.0.0.1:PORT: the local stand-in for
// steps.PrivateEndpoint, since every local task shares 127.0.0.1 and differs by port.
func (e *ECS) Endpoint(_ context.Context, task ecstypes.Task) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.findTask(aws.ToString(task.TaskArn))
	if t == nil {
		return "", fmt.Errorf("task %s not found", aws.ToString(task.TaskArn))
	}
	if t.proc == nil || t.lastStatus != StatusRunning {
		return "", fmt.Errorf("task %s is %s, not serving yet", aws.ToString(task.TaskArn), t.lastStatus)
	}
	return t.proc.Endpoint(), nil
}

// WaitStatus waits until a task's last status is status (or it stopped, which ends every wait) and returns it.
func (e *ECS) WaitStatus(ctx context.Context, taskArn, status string) (ecstypes.Task, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		e.mu.Lock()
		t := e.findTask(taskArn)
		if t == nil {
			e.mu.Unlock()
			return ecstypes.Task{}, fmt.Errorf("task %s not found", taskArn)
		}
		snap := e.snapshot(t, true)
		e.mu.Unlock()
		if got := aws.ToString(snap.LastStatus); got == status || got == StatusStopped {
			if got != status {
				return snap, fmt.Errorf("task %s stopped (%s: %s) before reaching %s", taskArn, snap.StopCode, aws.ToString(snap.StoppedReason), status)
			}
			return snap, nil
		}
		select {
		case <-ctx.Done():
			return snap, fmt.Errorf("task %s still %s: %w", taskArn, aws.ToString(snap.LastStatus), ctx.Err())
		case <-tick.C:
		}
	}
}

// Stage is the last start stage a task's container reported.
func (e *ECS) Stage(taskArn string) Stage {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t := e.findTask(taskArn); t != nil {
		return t.stage
	}
	return ""
}

// ProcessInfo is a live container process.
type ProcessInfo struct {
	TaskArn  string
	PID      int
	Endpoint string
}

// Processes lists the containers whose process has not exited, for leak checks: after Close it is empty.
func (e *ECS) Processes() []ProcessInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ProcessInfo
	for _, t := range e.order {
		if t.proc == nil {
			continue
		}
		select {
		case <-t.proc.Exited():
		default:
			out = append(out, ProcessInfo{TaskArn: t.arn, PID: t.proc.PID(), Endpoint: t.proc.Endpoint()})
		}
	}
	return out
}

// Close stops every task and waits until their containers are gone; later RunTasks fail.
func (e *ECS) Close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	for _, t := range e.order {
		e.requestStop(t, ecstypes.TaskStopCodeUserInitiated, "local cluster closed")
	}
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.cancel()
		return fmt.Errorf("close local ECS: tasks still stopping: %w", ctx.Err())
	}
	e.cancel()
	if left := e.Processes(); len(left) > 0 {
		return fmt.Errorf("close local ECS: %d container processes still running", len(left))
	}
	return nil
}

// TagResource adds tags to a task the cluster still knows, stopped ones included.
func (e *ECS) TagResource(_ context.Context, in *ecs.TagResourceInput, _ ...func(*ecs.Options)) (*ecs.TagResourceOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.findTask(aws.ToString(in.ResourceArn))
	if t == nil || !strings.Contains(aws.ToString(in.ResourceArn), ":task/") {
		return nil, &ecstypes.ResourceNotFoundException{Message: aws.String("The specified resource is not found.")}
	}
	for _, tg := range in.Tags {
		i := slices.IndexFunc(t.tags, func(x ecstypes.Tag) bool { return aws.ToString(x.Key) == aws.ToString(tg.Key) })
		if i >= 0 {
			t.tags[i] = tg
		} else {
			t.tags = append(t.tags, tg)
		}
	}
	return &ecs.TagResourceOutput{}, nil
}
