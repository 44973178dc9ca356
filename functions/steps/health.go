package steps

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama/ollama/api"
)

// Health polls a deployment: the task RUNNING (a STOPPED task fails with its stop reason and exit code), then
// Ollama answering, the model present, and the model loaded (on a GPU placement wholly in GPU memory, else it
// fell back to the CPU and that is a failure). Once the task has an instance, the poll keeps watching for up to
// Watch, so readiness is noticed within PollInterval without paying for state transitions; then it returns with
// the next wait, which grows with the time already waited.
type Health struct {
	ECS     deployment.TaskLister
	Cluster string
	// Endpoint finds a running task's Ollama base URL; on AWS, PrivateEndpoint(OLLAMA_PORT).
	Endpoint func(ctx context.Context, task ecstypes.Task) (string, error)
	HTTP     *http.Client
	// Timeout bounds the whole wait from the first poll.
	Timeout time.Duration
	// Watch is how long one poll keeps watching a task that is close to ready; PollInterval paces it.
	Watch, PollInterval time.Duration
	// GPURuleNotApplicable, when set, says why the GPU rule cannot be checked (local mode has no GPU).
	GPURuleNotApplicable string
	// ProvisioningTimeout bounds how long a task may wait in PROVISIONING for an instance (default 10 minutes):
	// past it, or as soon as the capacity provider's group reports a failed launch (Launches, optional), the
	// placement is refused with a CapacityError and the state machine tries the next candidate.
	ProvisioningTimeout time.Duration
	Launches            *Launches
	// Router registers a dev deployment's task with its target group once the model is loaded, and tells when
	// the load balancer finds it healthy: the deployment is ready when its route serves.
	Router *Router
	// Services watches a prod deployment's service: its rollout, and one of its running tasks for the model.
	Services *ServiceRunner
	Now      func() time.Time
	Log      *slog.Logger
}

func (h *Health) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Health) Handle(ctx context.Context, s deployment.State) (deployment.HealthState, error) {
	if s.Request == nil || s.Task == nil {
		return deployment.HealthState{}, &deployment.IncompleteStateError{Step: "Poll health", Missing: "its task"}
	}
	log := deployment.Logger(h.Log, s.Request.DeploymentID)
	st := deployment.HealthState{Polls: 1, TaskArn: cmp.Or(s.Task.ServiceArn, s.Task.TaskArn)}
	start := h.now()
	if prev := s.Health; prev != nil && prev.TaskArn == st.TaskArn {
		st.Polls = prev.Polls + 1
		if t, err := time.Parse(time.RFC3339Nano, prev.FirstPollAt); err == nil {
			start = t
		}
	}
	deadline := start.Add(h.Timeout)
	st.FirstPollAt, st.Deadline = start.UTC().Format(time.RFC3339Nano), deadline.UTC().Format(time.RFC3339Nano)
	watchUntil := h.now().Add(h.Watch)
	for {
		if err := h.observe(ctx, s, &st); err != nil {
			log.Warn("deployment unhealthy", "error", err)
			return deployment.HealthState{}, err
		}
		if st.Ready {
			log.Info("deployment healthy", "endpoint", st.Endpoint, "polls", st.Polls, "gpu", st.GPU)
			return st, nil
		}
		now := h.now()
		if now.After(deadline) {
			return deployment.HealthState{}, &deployment.HealthTimeoutError{Phase: st.Phase, Detail: st.Detail}
		}
		// Only a task still waiting for an instance (PROVISIONING: an Auto Scaling scale-out takes minutes) is
		// left to the state machine's Wait; any later phase is watched, so readiness is seen within PollInterval.
		if st.Phase == deployment.PhaseProvisioning || now.Add(h.PollInterval).After(watchUntil) {
			break
		}
		select {
		case <-ctx.Done():
			// The invocation ran out of time: a typed error, so the history names it.
			return deployment.HealthState{}, &deployment.HealthTimeoutError{Phase: st.Phase, Detail: "the poll was cancelled: " + ctx.Err().Error()}
		case <-time.After(h.PollInterval):
		}
	}
	// Wait as long as already waited (1 s to 60 s): a 5-minute start is polled about 5 times, not hundreds, and
	// Step Functions bills each poll's three transitions.
	elapsed := h.now().Sub(start)
	st.WaitSeconds = int(min(60, max(1, elapsed.Seconds())))
	if remaining := deadline.Sub(h.now()); remaining > 0 && time.Duration(st.WaitSeconds)*time.Second > remaining {
		st.WaitSeconds = int(max(1, remaining.Seconds()))
	}
	log.Info("deployment not ready yet", "phase", st.Phase, "detail", st.Detail, "polls", st.Polls, "waitSeconds", st.WaitSeconds)
	return st, nil
}

// observe fills in the phase; an error means the deployment cannot become healthy.
func (h *Health) observe(ctx context.Context, s deployment.State, st *deployment.HealthState) error {
	taskArn := s.Task.TaskArn
	service := s.Task.ServiceArn != "" && h.Services != nil
	if service {
		// A service's rollout, and one of its live tasks for the model; ECS replaces the tasks that stop.
		svc, err := h.Services.Observe(ctx, s.Task.ServiceArn)
		if err != nil {
			return err
		}
		tasks, err := deployment.ListTasks(ctx, h.ECS, h.Cluster, &ecs.ListTasksInput{Cluster: aws.String(h.Cluster),
			ServiceName: svc.ServiceName})
		if err != nil {
			return err
		}
		tasks = deployment.Live(tasks)
		if len(tasks) == 0 {
			st.Phase, st.Detail = deployment.PhasePending, "service: "+serviceDetail(svc)
			return nil
		}
		taskArn = aws.ToString(tasks[0].TaskArn)
		for _, t := range tasks {
			if aws.ToString(t.LastStatus) == "RUNNING" {
				taskArn = aws.ToString(t.TaskArn)
				break
			}
		}
		if st.WatchedTask != taskArn {
			st.WatchedTask, st.TaskEndpoint = taskArn, ""
		}
	}
	out, err := h.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(h.Cluster), Tasks: []string{taskArn}})
	if err != nil {
		return deployment.AWSError("ecs:DescribeTasks", err)
	}
	if len(out.Tasks) == 0 {
		return &deployment.TaskStoppedError{TaskArn: taskArn, StopCode: "Missing", Reason: "the task is no longer known to ECS"}
	}
	task := out.Tasks[0]
	status := aws.ToString(task.LastStatus)
	if service && (status == "STOPPED" || aws.ToString(task.DesiredStatus) == "STOPPED") {
		st.Phase, st.Detail = deployment.PhasePending, "service task "+taskArn+" stopped; ECS starts another"
		return nil
	}
	if status == "STOPPED" || aws.ToString(task.DesiredStatus) == "STOPPED" {
		e := &deployment.TaskStoppedError{TaskArn: taskArn, StopCode: string(task.StopCode), Reason: aws.ToString(task.StoppedReason)}
		for _, c := range task.Containers {
			if aws.ToString(c.Name) == deployment.ContainerName {
				e.ExitCode = c.ExitCode
				if r := aws.ToString(c.Reason); r != "" && e.Reason == "" {
					e.Reason = r
				}
			}
		}
		return e
	}
	if status == "PROVISIONING" {
		st.Phase, st.Detail = deployment.PhaseProvisioning, "task is waiting for an instance"
		return h.provisioning(ctx, s.Task, task)
	}
	if status != "RUNNING" {
		st.Phase, st.Detail = deployment.PhasePending, "task is "+status
		return nil
	}
	if st.TaskEndpoint == "" {
		ep, err := h.Endpoint(ctx, task)
		if err != nil {
			st.Phase, st.Detail = deployment.PhaseStarting, err.Error()
			return nil
		}
		st.TaskEndpoint = ep
	}
	base, err := url.Parse(st.TaskEndpoint)
	if err != nil {
		return &deployment.IncompleteStateError{Step: "Poll health", Missing: "a valid endpoint (got " + st.TaskEndpoint + ")"}
	}
	client := api.NewClient(base, h.HTTP)
	callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := client.Version(callCtx); err != nil {
		st.Phase, st.Detail = deployment.PhaseStarting, "ollama not answering yet"
		return nil
	}
	want := s.Request.ModelName
	list, err := client.List(callCtx)
	if err != nil {
		st.Phase, st.Detail = deployment.PhaseStarting, "listing models: "+err.Error()
		return nil
	}
	present := false
	for _, m := range list.Models {
		present = present || sameModel(m.Name, want) || sameModel(m.Model, want)
	}
	if !present {
		st.Phase, st.Detail = deployment.PhasePulling, want+" not present yet"
		return nil
	}
	ps, err := client.ListRunning(callCtx)
	if err != nil {
		st.Phase, st.Detail = deployment.PhaseLoading, "listing loaded models: "+err.Error()
		return nil
	}
	for _, m := range ps.Models {
		if !sameModel(m.Name, want) && !sameModel(m.Model, want) {
			continue
		}
		if s.Task.GPU {
			switch {
			case h.GPURuleNotApplicable != "":
				st.GPU = "not applicable: " + h.GPURuleNotApplicable
			case m.SizeVRAM < m.Size:
				return &deployment.ModelNotOnGPUError{Model: want, Size: m.Size, SizeVRAM: m.SizeVRAM}
			default:
				st.GPU = "met"
			}
		}
		loaded := fmt.Sprintf("%s loaded (%d bytes)", want, m.Size)
		return h.routed(ctx, s, base, st, loaded)
	}
	st.Phase, st.Detail = deployment.PhaseLoading, want+" present, not loaded yet"
	return nil
}

// routed finishes a poll whose model is loaded: without a route the task's own address is the endpoint; with
// one, the task is registered with its target group and the deployment is ready once the load balancer's health
// checks pass.
func (h *Health) routed(ctx context.Context, s deployment.State, base *url.URL, st *deployment.HealthState, loaded string) error {
	info := s.Task
	route := info.Route
	if route == nil || h.Router == nil {
		st.Ready, st.Phase, st.Detail, st.Endpoint = true, deployment.PhaseReady, loaded, st.TaskEndpoint
		return nil
	}
	if info.ServiceArn == "" {
		// A dev task is registered here, once its model is loaded; ECS registers a service's tasks itself.
		port, err := strconv.Atoi(base.Port())
		if err != nil {
			return &deployment.IncompleteStateError{Step: "Poll health", Missing: "a port in the task's endpoint (got " + st.TaskEndpoint + ")"}
		}
		if err := h.Router.Register(ctx, route.TargetGroupArn, base.Hostname(), port); err != nil {
			return err
		}
	}
	// A woken deployment's rules send requests to the waker until its task serves: point them at it again (the
	// load balancer health-checks only a target group a rule forwards to).
	if err := h.Router.Resume(ctx, s.Request.DeploymentID, route.TargetGroupArn); err != nil {
		return err
	}
	healthy, others, err := h.Router.TargetHealth(ctx, route.TargetGroupArn)
	if err != nil {
		return err
	}
	if healthy < max(1, info.DesiredTasks) {
		st.Phase, st.Detail = deployment.PhaseRegistering, fmt.Sprintf("%s; %d of %d targets healthy: %s", loaded, healthy, max(1, info.DesiredTasks), cmp.Or(others, "no target yet"))
		return nil
	}
	st.Ready, st.Phase, st.Detail, st.Endpoint = true, deployment.PhaseReady, loaded+"; serving at "+route.Endpoint, route.Endpoint
	st.KeyParameter = route.KeyParameter
	return nil
}

// provisioning refuses the placement of a task that waits for an instance that does not come.
func (h *Health) provisioning(ctx context.Context, info *deployment.TaskInfo, task ecstypes.Task) error {
	created := h.now()
	if task.CreatedAt != nil {
		created = *task.CreatedAt
	}
	bound := h.ProvisioningTimeout
	if bound <= 0 {
		bound = deployment.DefaultProvisioningTimeout
	}
	if waited := h.now().Sub(created); waited > bound {
		return &deployment.CapacityError{Reason: fmt.Sprintf("%s: the task waited %s in PROVISIONING for an instance (bound %s)",
			info.Placement, waited.Round(time.Second), bound)}
	}
	provider := aws.ToString(task.CapacityProviderName)
	if h.Launches == nil || provider == "" || strings.HasPrefix(provider, "FARGATE") {
		return nil
	}
	g, why, err := h.Launches.Group(ctx, provider)
	if err != nil || why != "" {
		return err
	}
	failure, err := h.Launches.LaunchFailure(ctx, aws.ToString(g.AutoScalingGroupName), created)
	if err != nil {
		return err
	}
	if failure != "" {
		return &deployment.CapacityError{Reason: info.Placement + ": " + failure}
	}
	return nil
}

// sameModel compares Ollama names, where "name" means "name:latest".
func sameModel(a, b string) bool {
	norm := func(s string) string {
		if !strings.Contains(s, ":") {
			return s + ":latest"
		}
		return s
	}
	return a != "" && norm(a) == norm(b)
}

// PrivateEndpoint finds Ollama at a running awsvpc task's private address on the given port, reachable from a
// Lambda in the same VPC whose security group the task's group admits.
func PrivateEndpoint(port int) func(context.Context, ecstypes.Task) (string, error) {
	return func(_ context.Context, task ecstypes.Task) (string, error) {
		for _, a := range task.Attachments {
			for _, d := range a.Details {
				if aws.ToString(d.Name) == "privateIPv4Address" && aws.ToString(d.Value) != "" {
					return fmt.Sprintf("http://%s:%d", aws.ToString(d.Value), port), nil
				}
			}
		}
		return "", fmt.Errorf("task has no private address yet")
	}
}
