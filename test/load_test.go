package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
)

// fakeOllama answers the three calls the health poll makes as an Ollama server with the tiny model loaded.
func fakeOllama(t *testing.T) string {
	mux := http.NewServeMux()
	model := map[string]any{"name": "tiny:latest", "model": "tiny:latest", "size": 600000, "size_vram": 0}
	answer := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(v) }
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("Ollama is running")) })
	mux.HandleFunc("GET /v1/models/{model}", answer(map[string]any{"id": "tiny:latest", "object": "model"}))
	mux.HandleFunc("GET /api/version", answer(map[string]string{"version": "0.17.4"}))
	mux.HandleFunc("GET /api/tags", answer(map[string]any{"models": []any{model}}))
	mux.HandleFunc("GET /api/ps", answer(map[string]any{"models": []any{model}}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// fakeRunner starts containers that are no process at all and answer health through fakeOllama, so a load test
// can hold dozens of tasks on two cores. Placement, accounting and the lifecycle stay the local cloud's own.
type fakeRunner struct{ endpoint string }

func (r fakeRunner) Start(ctx context.Context, c cloud.Container) (cloud.Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, st := range []cloud.Stage{cloud.StageFetching, cloud.StageLoading, cloud.StageLoaded} {
		c.Stage(st)
	}
	return &fakeProcess{endpoint: r.endpoint, exited: make(chan struct{})}, nil
}

type fakeProcess struct {
	endpoint string
	exited   chan struct{}
	once     sync.Once
	code     int
}

func (p *fakeProcess) exit(code int) { p.once.Do(func() { p.code = code; close(p.exited) }) }

func (p *fakeProcess) Endpoint() string               { return p.endpoint }
func (p *fakeProcess) PID() int                       { return 0 }
func (p *fakeProcess) Exited() <-chan struct{}        { return p.exited }
func (p *fakeProcess) ExitCode() int                  { <-p.exited; return p.code }
func (p *fakeProcess) Reason() string                 { return "" }
func (p *fakeProcess) Stop(ctx context.Context) error { p.exit(143); return nil }
func (p *fakeProcess) Kill()                          { p.exit(137) }

var _ cloud.Runner = fakeRunner{}

// loadCluster has few slots: GPU instances (one GPU each) and small Fargate and Fargate Spot limits.
func loadCluster(g4dn, g5, fargate, spot int) (cloud.Config, int) {
	cfg := cloud.DefaultConfig()
	cfg.ContainerInstances = []cloud.InstanceGroup{
		{InstanceType: "g4dn.xlarge", Count: g4dn, CPU: 4096, MemoryMiB: 14592, GPUs: 1, AvailabilityZone: "us-east-1a"},
		{InstanceType: "g5.xlarge", Count: g5, CPU: 4096, MemoryMiB: 14592, GPUs: 1, AvailabilityZone: "us-east-1b"},
	}
	cfg.Fargate.MaxTasks, cfg.FargateSpot.MaxTasks = fargate, spot
	return cfg, g4dn + g5 + fargate + spot
}

var candidatesRe = regexp.MustCompile(`no capacity for any of (\d+) candidates`)

// loadResult is what one burst did.
type loadResult struct {
	requests, deployed, noCapacity, leaks, duplicates int
	wall, maxProbe                                    time.Duration
	probes                                            int
}

// burst sends n deploy requests at once (a third default, a third preferring GPUs, a third EC2 only), waits for
// every one, and checks: each ends deployed or with NoCapacityError after trying every candidate of its plan; no
// GPU, CPU or memory is booked twice; no deployment has two tasks; the failed ones left nothing; the stack
// answers Describe calls throughout.
func burst(t *testing.T, s *local.Stack, n, slots int) loadResult {
	t.Helper()
	ctx := ctxFor(t, 5*time.Minute)
	res := loadResult{requests: n}
	start := time.Now()
	arns := make([]string, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("load-%03d", i)
		req := events.DeployRequest{Model: "tiny", Source: tinySource, DeploymentID: ids[i], TTL: "0"}
		switch i % 3 {
		case 1:
			req.Prefer = "gpu"
		case 2:
			req.Prefer, req.LaunchType = "gpu", "EC2"
		}
		wg.Go(func() {
			arn, err := s.Deploy(ctx, req)
			if err != nil {
				t.Errorf("%s: %v", req.DeploymentID, err)
			}
			arns[i] = arn
		})
	}
	// While the burst runs, a plain Describe of an execution and of the cluster's tasks must keep answering.
	probeDone := make(chan struct{})
	var probeWG sync.WaitGroup
	probeWG.Go(func() {
		for {
			select {
			case <-probeDone:
				return
			case <-time.After(100 * time.Millisecond):
			}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			t0 := time.Now()
			list, err := s.Engine.List(pctx, local.StateMachine)
			if err == nil && len(list) > 0 {
				_, err = s.Engine.Describe(pctx, list[0].ExecutionArn)
			}
			if err == nil {
				_, err = s.ECS.ListTasks(pctx, &ecs.ListTasksInput{Cluster: aws.String(s.ECS.Config().Name)})
			}
			cancel()
			if err != nil {
				t.Errorf("the stack did not answer during the burst: %v", err)
				return
			}
			res.probes++
			res.maxProbe = max(res.maxProbe, time.Since(t0))
		}
	})
	wg.Wait()
	for i, arn := range arns {
		if arn == "" {
			continue
		}
		ex, err := s.Engine.Wait(ctx, arn)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ex.Status == engine.StatusSucceeded:
			res.deployed++
		case ex.Status == engine.StatusFailed && ex.Error == "NoCapacityError":
			res.noCapacity++
			m := candidatesRe.FindStringSubmatch(ex.Cause)
			if want := planSize(ex); m == nil || m[1] != strconv.Itoa(want) {
				t.Errorf("%s: NoCapacityError after %v of %d candidates: %s", ids[i], m, want, ex.Cause)
			}
		default:
			t.Errorf("%s: %s %s: %s\n%s", ids[i], ex.Status, ex.Error, ex.Cause, deployment.RenderHistory(ex.Events))
		}
	}
	res.wall = time.Since(start)
	close(probeDone)
	probeWG.Wait()

	tasks := allTasks(t, s)
	perDeployment := map[string]int{}
	gpus := map[string]string{}
	type use struct{ cpu, mem int }
	perInstance := map[string]use{}
	fargate := map[string]int{}
	live := 0
	for _, task := range tasks {
		id := aws.ToString(task.StartedBy)
		if perDeployment[id]++; perDeployment[id] > 1 {
			res.duplicates++
		}
		if aws.ToString(task.LastStatus) == cloud.StatusStopped {
			continue
		}
		live++
		for _, g := range task.Containers[0].GpuIds {
			if other, taken := gpus[g]; taken {
				t.Errorf("GPU %s booked by %s and %s", g, other, id)
			}
			gpus[g] = id
		}
		if ci := aws.ToString(task.ContainerInstanceArn); ci != "" {
			cpu, _ := strconv.Atoi(aws.ToString(task.Cpu))
			mem, _ := strconv.Atoi(aws.ToString(task.Memory))
			u := perInstance[ci]
			perInstance[ci] = use{u.cpu + cpu, u.mem + mem}
		} else {
			fargate[aws.ToString(task.CapacityProviderName)]++
		}
	}
	for ci, u := range perInstance {
		if u.cpu > 4096 || u.mem > 14592 {
			t.Errorf("instance %s booked %d CPU units and %d MiB", ci, u.cpu, u.mem)
		}
	}
	cfg := s.ECS.Config()
	if fargate["FARGATE"] > cfg.Fargate.MaxTasks || fargate["FARGATE_SPOT"] > cfg.FargateSpot.MaxTasks {
		t.Errorf("Fargate tasks %v above the limits", fargate)
	}
	for i, arn := range arns {
		ex, _ := s.Engine.Describe(ctx, arn)
		if ex.Status != engine.StatusSucceeded && perDeployment[ids[i]] > 0 {
			res.leaks++
			t.Errorf("%s failed but has %d task(s)", ids[i], perDeployment[ids[i]])
		}
	}
	if live != res.deployed || res.deployed+res.noCapacity != n {
		t.Errorf("%d live tasks, %d deployed, %d without capacity, of %d", live, res.deployed, res.noCapacity, n)
	}
	// Tasks never stop during the burst, so a request refused everywhere means every slot was taken.
	if res.deployed != min(n, slots) {
		t.Errorf("%d deployed with %d slots for %d requests", res.deployed, slots, n)
	}
	if res.duplicates != 0 {
		t.Errorf("%d duplicate tasks", res.duplicates)
	}
	// The scheduled teardown then stops them all.
	raw, _ := events.Sample(events.KindTeardown)
	routed, err := s.PutEvent(ctxFor(t, time.Minute), raw)
	if err != nil || len(routed.Stopped.Deployments) != res.deployed {
		t.Errorf("teardown: %+v %v", routed.Stopped, err)
	}
	for _, id := range ids {
		if len(tasksOf(t, s, id)) > 0 {
			assertNothingLeft(t, s, id)
		}
	}
	return res
}

// planSize is how many candidates the execution's plan had.
func planSize(ex engine.Execution) int {
	for _, ev := range ex.Events {
		if ev.StateName == "Choose configuration" && ev.Type == deployment.EventStateExited {
			var st deployment.State
			if json.Unmarshal(ev.Output, &st) == nil && st.Plan != nil {
				return len(st.Plan.Candidates)
			}
		}
	}
	return -1
}

// vmHWM is a process's peak resident memory from /proc/PID/status.
func vmHWM(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func reportLoad(t *testing.T, s *local.Stack, kind string, res loadResult) {
	t.Logf("LOAD %s: requests %d, deployed %d, NoCapacityError %d, leaks %d, duplicates %d, wall %s, "+
		"probes %d (slowest %s), peak RSS test process %s, engine %s",
		kind, res.requests, res.deployed, res.noCapacity, res.leaks, res.duplicates, res.wall.Round(time.Millisecond),
		res.probes, res.maxProbe.Round(time.Millisecond), vmHWM("self"), vmHWM(strconv.Itoa(s.Engine.PID())))
	if res.probes == 0 {
		t.Error("no Describe answered during the burst")
	}
}

// TestLoad: 60 concurrent deploy requests against 9 slots (2 g4dn.xlarge, 1 g5.xlarge, 3 Fargate, 3 Fargate
// Spot). Tasks use a fake runner so the engine, the handlers and the cluster's placement carry the load.
func TestLoad(t *testing.T) {
	cfg, slots := loadCluster(2, 1, 3, 3)
	s := stackWithTiny(t, local.Options{Cluster: cfg, Runner: fakeRunner{endpoint: fakeOllama(t)}})
	res := burst(t, s, 60, slots)
	reportLoad(t, s, "fake runner", res)
}

// TestLoadRealOllama: the same burst, smaller, with every task a real `ollama serve`: 12 requests, 6 slots.
func TestLoadRealOllama(t *testing.T) {
	cfg, slots := loadCluster(1, 1, 2, 2)
	s := stackWithTiny(t, local.Options{Cluster: cfg})
	res := burst(t, s, 12, slots)
	reportLoad(t, s, "real ollama", res)
	waitNoProcesses(t, s)
}
