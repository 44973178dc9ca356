package cloud

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// Targets is the load balancer a service registers its tasks with.
type Targets interface {
	RegisterTargets(ctx context.Context, in *elbv2.RegisterTargetsInput, opts ...func(*elbv2.Options)) (*elbv2.RegisterTargetsOutput, error)
	DeregisterTargets(ctx context.Context, in *elbv2.DeregisterTargetsInput, opts ...func(*elbv2.Options)) (*elbv2.DeregisterTargetsOutput, error)
	DescribeTargetHealth(ctx context.Context, in *elbv2.DescribeTargetHealthInput, opts ...func(*elbv2.Options)) (*elbv2.DescribeTargetHealthOutput, error)
}

// service is an ECS service: its scheduler keeps DesiredCount tasks running, registers each running task with
// the service's target groups, replaces a task that stops, and on scale-in deregisters a task and stops it only
// once the load balancer has drained it. Three tasks in a row that stop before they serve trip the deployment
// circuit breaker: the rollout FAILED and no more tasks start.
type service struct {
	name, arn, taskDef string
	in                 ecs.CreateServiceInput
	desired            int
	status             string // ACTIVE, DRAINING, INACTIVE
	rollout            ecstypes.DeploymentRolloutState
	rolloutReason      string
	failures           int
	tasks              []*task
	registered         map[*task]string // task → "ip:port" once registered
	draining           map[*task]bool
	events             []ecstypes.ServiceEvent
	createdAt          time.Time
}

// taskDefinitions are the registered revisions by family; the stack's base families ollama-cpu and ollama-gpu
// answer DescribeTaskDefinition without being registered.
type taskDefinitions map[string][]*ecstypes.TaskDefinition

// RegisterTaskDefinition registers a revision of a family.
func (e *ECS) RegisterTaskDefinition(_ context.Context, in *ecs.RegisterTaskDefinitionInput, _ ...func(*ecs.Options)) (*ecs.RegisterTaskDefinitionOutput, error) {
	family := aws.ToString(in.Family)
	if family == "" || len(in.ContainerDefinitions) == 0 {
		return nil, invalidParameter("Family and container definitions are required.")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rev := len(e.taskDefs[family]) + 1
	td := &ecstypes.TaskDefinition{Family: in.Family, Revision: int32(rev), ContainerDefinitions: in.ContainerDefinitions,
		Cpu: in.Cpu, Memory: in.Memory, NetworkMode: in.NetworkMode, RequiresCompatibilities: in.RequiresCompatibilities,
		EphemeralStorage: in.EphemeralStorage, TaskRoleArn: in.TaskRoleArn, ExecutionRoleArn: in.ExecutionRoleArn,
		Volumes: in.Volumes, PlacementConstraints: in.PlacementConstraints, Status: ecstypes.TaskDefinitionStatusActive,
		TaskDefinitionArn: aws.String(fmt.Sprintf("arn:aws:ecs:%s:%s:task-definition/%s:%d", e.cfg.Region, e.cfg.Account, family, rev))}
	e.taskDefs[family] = append(e.taskDefs[family], td)
	return &ecs.RegisterTaskDefinitionOutput{TaskDefinition: td, Tags: in.Tags}, nil
}

// DescribeTaskDefinition describes family, family:revision or an ARN (the latest revision for a family).
func (e *ECS) DescribeTaskDefinition(_ context.Context, in *ecs.DescribeTaskDefinitionInput, _ ...func(*ecs.Options)) (*ecs.DescribeTaskDefinitionOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	td := e.taskDefinition(aws.ToString(in.TaskDefinition))
	if td == nil {
		return nil, clientException("Unable to describe task definition.")
	}
	return &ecs.DescribeTaskDefinitionOutput{TaskDefinition: td}, nil
}

// taskDefinition resolves a reference; the caller holds mu.
func (e *ECS) taskDefinition(ref string) *ecstypes.TaskDefinition {
	ref = ref[strings.LastIndex(ref, "/")+1:]
	family, revText, _ := strings.Cut(ref, ":")
	revs := e.taskDefs[family]
	if len(revs) == 0 {
		if family != "ollama-cpu" && family != "ollama-gpu" {
			return nil
		}
		return baseTaskDefinition(e.cfg, family, e.opts.OllamaImage)
	}
	if revText == "" {
		return revs[len(revs)-1]
	}
	n, err := strconv.Atoi(revText)
	if err != nil || n < 1 || n > len(revs) {
		return nil
	}
	return revs[n-1]
}

// baseTaskDefinition is the stack's CPU or GPU task definition as the CDK stack registers it, in the parts a
// service's copy changes.
func baseTaskDefinition(cfg Config, family, image string) *ecstypes.TaskDefinition {
	compat := ecstypes.CompatibilityFargate
	if family == "ollama-gpu" {
		compat = ecstypes.CompatibilityEc2
	}
	return &ecstypes.TaskDefinition{Family: aws.String(family), Revision: 1, Cpu: aws.String("1024"), Memory: aws.String("2048"),
		NetworkMode: ecstypes.NetworkModeAwsvpc, RequiresCompatibilities: []ecstypes.Compatibility{compat}, Status: ecstypes.TaskDefinitionStatusActive,
		TaskDefinitionArn: aws.String(fmt.Sprintf("arn:aws:ecs:%s:%s:task-definition/%s:1", cfg.Region, cfg.Account, family)),
		ContainerDefinitions: []ecstypes.ContainerDefinition{
			{Name: aws.String(deployment.ContainerName), Image: aws.String(image), Essential: aws.Bool(true),
				PortMappings: []ecstypes.PortMapping{{ContainerPort: aws.Int32(deployment.OllamaPort)}}},
			{Name: aws.String(deployment.FetchContainerName), Image: aws.String("amazon/aws-cli"), Essential: aws.Bool(false)},
		}}
}

func (e *ECS) serviceArn(name string) string {
	return fmt.Sprintf("arn:aws:ecs:%s:%s:service/%s/%s", e.cfg.Region, e.cfg.Account, e.cfg.Name, name)
}

// CreateService starts a service's scheduler. A second create of an active service of the name is refused, as
// ECS refuses it ("Creation of service was not idempotent").
func (e *ECS) CreateService(_ context.Context, in *ecs.CreateServiceInput, _ ...func(*ecs.Options)) (*ecs.CreateServiceOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	name := aws.ToString(in.ServiceName)
	if name == "" || aws.ToString(in.TaskDefinition) == "" {
		return nil, invalidParameter("serviceName and taskDefinition are required.")
	}
	if len(in.LoadBalancers) > 0 && e.opts.Targets == nil {
		return nil, invalidParameter("the local cluster has no load balancer for the service's target group")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, clientException("the local cluster is closed")
	}
	if old := e.services[name]; old != nil && old.status != "INACTIVE" {
		return nil, invalidParameter("Creation of service was not idempotent.")
	}
	if e.taskDefinition(aws.ToString(in.TaskDefinition)) == nil {
		return nil, clientException("TaskDefinition not found.")
	}
	s := &service{name: name, arn: e.serviceArn(name), taskDef: aws.ToString(in.TaskDefinition), in: *in,
		desired: int(aws.ToInt32(in.DesiredCount)), status: "ACTIVE", rollout: ecstypes.DeploymentRolloutStateInProgress,
		registered: map[*task]string{}, draining: map[*task]bool{}, createdAt: e.opts.Now()}
	e.services[name] = s
	e.wg.Add(1)
	go e.schedule(s)
	return &ecs.CreateServiceOutput{Service: e.describeService(s, true)}, nil
}

// UpdateService changes the desired count (and the task definition, for tasks started from then on).
func (e *ECS) UpdateService(_ context.Context, in *ecs.UpdateServiceInput, _ ...func(*ecs.Options)) (*ecs.UpdateServiceOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.services[aws.ToString(in.Service)[strings.LastIndex(aws.ToString(in.Service), "/")+1:]]
	if s == nil {
		return nil, &ecstypes.ServiceNotFoundException{Message: aws.String("Service not found.")}
	}
	if s.status != "ACTIVE" {
		return nil, &ecstypes.ServiceNotActiveException{Message: aws.String("Service was not ACTIVE.")}
	}
	if in.DesiredCount != nil {
		s.desired = int(*in.DesiredCount)
	}
	if in.TaskDefinition != nil {
		s.taskDef = aws.ToString(in.TaskDefinition)
	}
	return &ecs.UpdateServiceOutput{Service: e.describeService(s, false)}, nil
}

// DeleteService drains a service: with Force its tasks are stopped whatever the desired count (else it must be 0);
// it is INACTIVE once they have all stopped.
func (e *ECS) DeleteService(_ context.Context, in *ecs.DeleteServiceInput, _ ...func(*ecs.Options)) (*ecs.DeleteServiceOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.services[aws.ToString(in.Service)[strings.LastIndex(aws.ToString(in.Service), "/")+1:]]
	if s == nil || s.status == "INACTIVE" {
		return nil, &ecstypes.ServiceNotFoundException{Message: aws.String("Service not found.")}
	}
	if s.desired > 0 && !aws.ToBool(in.Force) {
		return nil, invalidParameter("The service cannot be stopped while it is scaled above 0.")
	}
	s.desired, s.status = 0, "DRAINING"
	return &ecs.DeleteServiceOutput{Service: e.describeService(s, false)}, nil
}

// DescribeServices describes services by name or ARN; unknown ones are MISSING failures.
func (e *ECS) DescribeServices(_ context.Context, in *ecs.DescribeServicesInput, _ ...func(*ecs.Options)) (*ecs.DescribeServicesOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	withTags := slices.Contains(in.Include, ecstypes.ServiceFieldTags)
	e.mu.Lock()
	defer e.mu.Unlock()
	out := &ecs.DescribeServicesOutput{}
	for _, ref := range in.Services {
		s := e.services[ref[strings.LastIndex(ref, "/")+1:]]
		if s == nil {
			out.Failures = append(out.Failures, ecstypes.Failure{Arn: aws.String(e.serviceArn(ref)), Reason: aws.String("MISSING")})
			continue
		}
		out.Services = append(out.Services, *e.describeService(s, withTags))
	}
	return out, nil
}

// describeService renders a service; the caller holds mu.
func (e *ECS) describeService(s *service, withTags bool) *ecstypes.Service {
	running, pending := 0, 0
	for _, t := range s.tasks {
		switch {
		case t.desiredStatus == StatusStopped:
		case t.lastStatus == StatusRunning:
			running++
		default:
			pending++
		}
	}
	created := s.createdAt
	out := &ecstypes.Service{ServiceArn: aws.String(s.arn), ServiceName: aws.String(s.name), ClusterArn: aws.String(e.clusterArn),
		Status: aws.String(s.status), DesiredCount: int32(s.desired), RunningCount: int32(running), PendingCount: int32(pending),
		TaskDefinition: aws.String(s.taskDef), LoadBalancers: s.in.LoadBalancers, LaunchType: s.in.LaunchType,
		CapacityProviderStrategy: s.in.CapacityProviderStrategy, PlacementConstraints: s.in.PlacementConstraints,
		CreatedAt: &created, Events: slices.Clone(s.events),
		Deployments: []ecstypes.Deployment{{Status: aws.String("PRIMARY"), RolloutState: s.rollout, RolloutStateReason: aws.String(s.rolloutReason),
			DesiredCount: int32(s.desired), RunningCount: int32(running), PendingCount: int32(pending), FailedTasks: int32(s.failures),
			TaskDefinition: aws.String(s.taskDef), CreatedAt: &created}},
	}
	if withTags {
		out.Tags = slices.Clone(s.in.Tags)
	}
	return out
}

// event records a service event (newest first, as ECS lists them); the caller holds mu.
func (s *service) event(now time.Time, format string, args ...any) {
	msg := fmt.Sprintf("(service %s) ", s.name) + fmt.Sprintf(format, args...)
	s.events = slices.Insert(s.events, 0, ecstypes.ServiceEvent{Id: aws.String(randomHex(8)), CreatedAt: &now, Message: aws.String(msg)})
	if len(s.events) > 100 {
		s.events = s.events[:100]
	}
}

// circuitBreakerThreshold is how many tasks in a row may fail to serve before the rollout fails (ECS's minimum).
const circuitBreakerThreshold = 3

// schedule is a service's scheduler loop.
func (e *ECS) schedule(s *service) {
	defer e.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-tick.C:
		}
		if done := e.reconcile(s); done {
			return
		}
	}
}

// reconcile is one pass of a service's scheduler; it reports true once the service is INACTIVE.
func (e *ECS) reconcile(s *service) bool {
	ctx := e.ctx
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return true // Close stops every task
	}
	now := e.opts.Now()
	var live, register []*task
	for _, t := range s.tasks {
		if t.lastStatus == StatusStopped {
			if _, ok := s.registered[t]; !ok && !s.draining[t] && t.stopCode != ecstypes.TaskStopCodeUserInitiated {
				s.failures++
				s.event(now, "task %s stopped before it served: %s", t.id, t.stoppedReason)
			}
			continue
		}
		if t.desiredStatus == StatusStopped || s.draining[t] {
			continue
		}
		live = append(live, t)
		if _, ok := s.registered[t]; !ok && t.lastStatus == StatusRunning && t.proc != nil {
			register = append(register, t)
		}
	}
	// Forget stopped tasks, deregistering those that died while registered.
	var gone []string
	s.tasks = slices.DeleteFunc(s.tasks, func(t *task) bool {
		if t.lastStatus != StatusStopped {
			return false
		}
		if addr, ok := s.registered[t]; ok && !s.draining[t] {
			gone = append(gone, addr)
		}
		delete(s.registered, t)
		delete(s.draining, t)
		return true
	})
	if s.failures >= circuitBreakerThreshold && s.rollout != ecstypes.DeploymentRolloutStateFailed {
		s.rollout = ecstypes.DeploymentRolloutStateFailed
		s.rolloutReason = fmt.Sprintf("ECS deployment circuit breaker: %d tasks failed to start", s.failures)
		s.event(now, "deployment failed: %s", s.rolloutReason)
	}
	desired, status, failed := s.desired, s.status, s.rollout == ecstypes.DeploymentRolloutStateFailed
	if status == "DRAINING" && len(s.tasks) == 0 {
		s.status = "INACTIVE"
		s.event(now, "has been deleted")
		e.mu.Unlock()
		return true
	}
	var scaleIn []*task
	if extra := len(live) - desired; extra > 0 {
		scaleIn = live[len(live)-extra:] // the newest go first
		for _, t := range scaleIn {
			s.draining[t] = true
		}
		s.event(now, "has begun draining connections on %d tasks", extra)
	}
	tgs := s.targetGroups()
	e.mu.Unlock()

	for _, addr := range gone {
		e.deregister(ctx, tgs, addr)
	}
	for _, t := range register {
		addr := e.address(t)
		if addr == "" {
			continue
		}
		ok := true
		for _, tg := range tgs {
			host, port := splitAddr(addr)
			if _, err := e.opts.Targets.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(tg),
				Targets: []elbtypes.TargetDescription{{Id: aws.String(host), Port: aws.Int32(int32(port))}}}); err != nil {
				ok = false
				e.log.Warn("service: registering a target", "service", s.name, "error", err)
			}
		}
		if ok {
			e.mu.Lock()
			s.registered[t] = addr
			s.failures = 0
			s.event(e.opts.Now(), "registered 1 targets in target-group")
			e.mu.Unlock()
		}
	}
	for _, t := range scaleIn {
		e.mu.Lock()
		addr := s.registered[t]
		e.mu.Unlock()
		e.wg.Add(1)
		go e.drainAndStop(s, t, tgs, addr)
	}
	if !failed && status == "ACTIVE" {
		for range desired - len(live) {
			if err := e.startServiceTask(ctx, s); err != nil {
				e.mu.Lock()
				s.event(e.opts.Now(), "was unable to place a task: %v", err)
				e.mu.Unlock()
				break
			}
		}
	}
	return false
}

// targetGroups are the service's target groups; the caller holds mu.
func (s *service) targetGroups() []string {
	var tgs []string
	for _, lb := range s.in.LoadBalancers {
		tgs = append(tgs, aws.ToString(lb.TargetGroupArn))
	}
	return tgs
}

// address is where a running task's Ollama listens, "127.0.0.1:PORT".
func (e *ECS) address(t *task) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t.proc == nil {
		return ""
	}
	u, err := url.Parse(t.proc.Endpoint())
	if err != nil {
		return ""
	}
	return u.Host
}

func splitAddr(addr string) (string, int) {
	host, portText, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portText)
	return host, port
}

func (e *ECS) deregister(ctx context.Context, tgs []string, addr string) {
	host, port := splitAddr(addr)
	for _, tg := range tgs {
		_, _ = e.opts.Targets.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: aws.String(tg),
			Targets: []elbtypes.TargetDescription{{Id: aws.String(host), Port: aws.Int32(int32(port))}}})
	}
}

// drainAndStop deregisters a task and stops it once the load balancer no longer lists it (its requests have
// finished, or the deregistration delay passed), so scale-in cuts no generation short.
func (e *ECS) drainAndStop(s *service, t *task, tgs []string, addr string) {
	defer e.wg.Done()
	ctx := e.ctx
	if addr != "" {
		e.deregister(ctx, tgs, addr)
		host, port := splitAddr(addr)
		for drained := false; !drained; {
			drained = true
			for _, tg := range tgs {
				out, err := e.opts.Targets.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(tg)})
				if err != nil {
					continue
				}
				for _, d := range out.TargetHealthDescriptions {
					if aws.ToString(d.Target.Id) == host && int(aws.ToInt32(d.Target.Port)) == port {
						drained = false
					}
				}
			}
			e.mu.Lock()
			closed := e.closed
			e.mu.Unlock()
			if drained || closed {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	e.mu.Lock()
	if e.requestStop(t, ecstypes.TaskStopCodeServiceSchedulerInitiated, "Scaling activity initiated by (deployment ecs-svc/"+s.name+")") {
		s.event(e.opts.Now(), "has stopped 1 running tasks: (task %s).", t.id)
	}
	e.mu.Unlock()
}

// startServiceTask starts one task from the service's task definition, tagged with the service's tags.
func (e *ECS) startServiceTask(ctx context.Context, s *service) error {
	e.mu.Lock()
	td := e.taskDefinition(s.taskDef)
	in := s.in
	taskDef := s.taskDef
	e.mu.Unlock()
	if td == nil {
		return fmt.Errorf("task definition %s not found", taskDef)
	}
	run := &ecs.RunTaskInput{Cluster: in.Cluster, TaskDefinition: aws.String(taskDef), Count: aws.Int32(1),
		StartedBy: aws.String("ecs-svc/" + s.name), Group: aws.String("service:" + s.name), LaunchType: in.LaunchType,
		CapacityProviderStrategy: in.CapacityProviderStrategy, PlacementConstraints: in.PlacementConstraints,
		NetworkConfiguration: in.NetworkConfiguration, Overrides: taskDefinitionOverrides(td)}
	if in.PropagateTags == ecstypes.PropagateTagsService {
		run.Tags = in.Tags
	}
	out, err := e.RunTask(ctx, run)
	if err != nil {
		return err
	}
	if len(out.Tasks) == 0 {
		return fmt.Errorf("%s", describeFailure(out.Failures))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if t := e.findTask(aws.ToString(out.Tasks[0].TaskArn)); t != nil {
		s.tasks = append(s.tasks, t)
		s.event(e.opts.Now(), "has started 1 tasks: (task %s).", t.id)
	}
	return nil
}

func describeFailure(fs []ecstypes.Failure) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, aws.ToString(f.Reason))
	}
	return strings.Join(parts, "; ")
}

// taskDefinitionOverrides carries a task definition's size, environment and GPUs into the RunTask request the
// local cluster starts tasks from (the local cluster keeps those in overrides).
func taskDefinitionOverrides(td *ecstypes.TaskDefinition) *ecstypes.TaskOverride {
	o := &ecstypes.TaskOverride{Cpu: td.Cpu, Memory: td.Memory, EphemeralStorage: td.EphemeralStorage}
	for _, c := range td.ContainerDefinitions {
		o.ContainerOverrides = append(o.ContainerOverrides, ecstypes.ContainerOverride{Name: c.Name, Environment: c.Environment,
			ResourceRequirements: c.ResourceRequirements})
	}
	return o
}

// ServiceTasks are a service's live task ARNs, oldest first.
func (e *ECS) ServiceTasks(name string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.services[name]
	if s == nil {
		return nil
	}
	var arns []string
	for _, t := range s.tasks {
		if t.desiredStatus != StatusStopped {
			arns = append(arns, t.arn)
		}
	}
	return arns
}
