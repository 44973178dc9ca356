package test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
)

func itoa(n int) string { return strconv.Itoa(n) }

// keepCalling keeps workers goroutines calling do until the returned stop is called; stop waits for them and says how
// many calls failed, and the first error.
func keepCalling(workers int, do func() error) (stop func() (failed int64, first error)) {
	var n atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := do(); err != nil {
					n.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	return func() (int64, error) {
		close(done)
		wg.Wait()
		err, _ := firstErr.Load().(error)
		return n.Load(), err
	}
}

// routeTargetGroup is a deployment's target group on the local load balancer.
func routeTargetGroup(t *testing.T, s *local.Stack, id string) string {
	t.Helper()
	out, err := s.LB.DescribeTargetGroups(context.Background(), &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(id)}})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.TargetGroups[0].TargetGroupArn)
}

// TestProdServiceScalesAndHeals deploys prod as a service behind the load balancer: a burst of concurrent
// generations scales it out, idleness scales it in with no request failing, and a task killed is replaced.
func TestProdServiceScalesAndHeals(t *testing.T) {
	s := stackWithTiny(t, local.Options{ScalingInterval: 200 * time.Millisecond, ScalingWindow: 2 * time.Second,
		ScaleOutCooldown: time.Second, ScaleInCooldown: 10 * time.Second, ScaleTargetRequests: 300})
	ex := deploy(t, s, events.DeployRequest{Model: "tiny", Env: "prod", DeploymentID: "prod-scale", MinTasks: 1, MaxTasks: 2, Requester: "test"})
	rec := succeeded(t, ex)
	if rec.ServiceArn == "" || rec.TaskArn != "" || !strings.HasSuffix(rec.Endpoint, deployment.RoutePath("prod-scale")) {
		t.Fatalf("record %+v: want a service behind the route", rec)
	}
	svcName := deployment.ServiceName("prod-scale")
	running := func() int { return len(s.ECS.ServiceTasks(svcName)) }
	if n := running(); n != 1 {
		t.Fatalf("%d tasks at min 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Load: keep generating until a second task serves.
	load := keepCalling(6, func() error { _, err := streamGenerate(ctx, rec.Endpoint, "tiny", 4); return err })
	// (A slow machine makes slow generations and a low request rate: the scale-in cooldown holds the second
	// task long enough to see it serve.)
	deadline := time.Now().Add(90 * time.Second)
	healthy := 0
	for healthy < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		healthy = s.LB.Stats(routeTargetGroup(t, s, "prod-scale")).Healthy
	}
	failed, firstErr := load()
	if healthy < 2 {
		t.Fatalf("the burst did not scale out: %d healthy targets; activities %+v", healthy, s.Scaling.Activities())
	}
	if failed != 0 {
		t.Errorf("%d requests failed during scale-out: %v", failed, firstErr)
	}

	// Idle, with a slow trickle that must not fail while a task drains.
	trickleErrs := 0
	for time.Now().Before(deadline) && running() > 1 {
		if _, err := streamGenerate(ctx, rec.Endpoint, "tiny", 2); err != nil {
			trickleErrs++
			t.Logf("during scale-in: %v", err)
		}
		time.Sleep(time.Second)
	}
	if n := running(); n != 1 {
		t.Fatalf("idleness did not scale in: %d tasks; activities %+v", n, s.Scaling.Activities())
	}
	if trickleErrs != 0 {
		t.Errorf("%d requests failed during scale-in", trickleErrs)
	}

	// A task that dies is replaced by the service.
	victim := s.ECS.ServiceTasks(svcName)[0]
	if err := s.ECS.CrashTask(victim); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline) {
		tasks := s.ECS.ServiceTasks(svcName)
		if len(tasks) == 1 && tasks[0] != victim && s.LB.Stats(routeTargetGroup(t, s, "prod-scale")).Healthy == 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := streamGenerate(ctx, rec.Endpoint, "tiny", 2); err != nil {
		t.Fatalf("after the replacement: %v", err)
	}

	// Stopping the deployment deletes the service and the route.
	routed, err := s.PutEvent(ctx, stopEvent("prod-scale"))
	if err != nil || len(routed.Stopped.Services) != 1 {
		t.Fatalf("stop: %v %+v", err, routed.Stopped)
	}
	for time.Now().Before(deadline) && len(s.ECS.ServiceTasks(svcName)) > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := s.ECS.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String(s.ECS.Config().Name), ServiceName: aws.String(svcName)})
	if len(out.TaskArns) != 0 {
		t.Errorf("tasks left after the stop: %v", out.TaskArns)
	}
	resp, err := http.Get(rec.Endpoint + "/api/tags")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("the route answers %d after the stop, want 404", resp.StatusCode)
		}
	}
}
