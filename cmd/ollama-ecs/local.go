package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	localcloud "github.com/ollama-ecs/ollama-ecs/local/cloud"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
)

// demo is one run of the main job on the local stack; each step records whether it happened.
type demo struct {
	ctx    context.Context
	s      *local.Stack
	out    io.Writer
	start  time.Time
	steps  []demoStep
	execs  []engine.Execution
	models map[string]string // deployment id -> endpoint
}

type demoStep struct {
	name string
	ok   bool
	note string
}

func (d *demo) step(name string, err error, note string) error {
	d.steps = append(d.steps, demoStep{name: name, ok: err == nil, note: note})
	mark := "ok  "
	if err != nil {
		mark, note = "FAIL", err.Error()
	}
	fmt.Fprintf(d.out, "[%s] %-58s %s\n", mark, name, note)
	return err
}

func defineLocalDemo(fs *pflag.FlagSet) runner {
	verbose := fs.Bool("verbose", false, "log every step's JSON lines to stderr")
	return func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
		log := slog.New(slog.DiscardHandler)
		if *verbose {
			log = slog.New(slog.NewJSONHandler(stderr, nil))
		}
		ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		started := time.Now()
		fmt.Fprintln(stdout, "ollama-ecs local demo: the deploy state machine (workflow/deploy.asl.json) on the local Step Functions")
		fmt.Fprintln(stdout, "engine, its real Lambda handlers, and a local cluster whose tasks are real `ollama serve` processes.")
		// Schedule time runs 60x faster, so the one-minute TTL below fires after a second of waiting.
		// Local target tracking evaluates every 200 ms over a 2 s window, with 1 s and 6 s cooldowns, so a burst
		// scales out and back in within seconds; a task is held to 300 requests a minute.
		s, err := local.Start(ctx, local.Options{TimeScale: 60, HealthWait: 200 * time.Millisecond, Log: log,
			IdleWindow: 2 * time.Minute, ScalingInterval: 200 * time.Millisecond, ScalingWindow: 2 * time.Second,
			ScaleOutCooldown: time.Second, ScaleInCooldown: 6 * time.Second, ScaleTargetRequests: 300})
		if err != nil {
			return fmt.Errorf("starting the local stack: %w", err)
		}
		d := &demo{ctx: ctx, s: s, out: stdout, start: started, models: map[string]string{}}
		runErr := d.run()
		closeErr := d.close()
		d.summary(time.Since(started))
		if err := errors.Join(runErr, closeErr); err != nil {
			return err
		}
		for _, st := range d.steps {
			if !st.ok {
				return fmt.Errorf("demo step failed: %s", st.name)
			}
		}
		return nil
	}
}

func (d *demo) run() error {
	cfg := d.s.ECS.Config()
	var cluster []string
	for _, g := range cfg.ContainerInstances {
		cluster = append(cluster, fmt.Sprintf("%d x %s (%d GPU)", g.Count, g.InstanceType, g.GPUs))
	}
	fmt.Fprintf(d.out, "cluster %q: %s, Fargate and Fargate Spot\n\n", cfg.Name, strings.Join(cluster, ", "))

	// 1. An upload under the model prefix: the S3 event drives a deployment.
	gguf, err := tinymodel.Bytes(tinymodel.Options{Name: "tiny-llama"})
	if err := d.step("write a tiny llama GGUF (2 layers, 300 tokens)", err, fmt.Sprintf("%d KiB", len(gguf)/1024)); err != nil {
		return err
	}
	before := len(d.s.Executions())
	err = d.s.Upload(d.ctx, "models/tiny-llama.gguf", bytes.NewReader(gguf))
	if err := d.step("upload s3://"+local.Bucket+"/models/tiny-llama.gguf", err, "Object Created -> state machine"); err != nil {
		return err
	}
	first, err := d.s.WaitForExecution(d.ctx, before)
	if err != nil {
		return d.step("the S3 event starts an execution", err, "")
	}
	rec, err := d.wait(first.ExecutionArn)
	if err := d.step("upload deployed and healthy", err, describe(rec)); err != nil {
		return err
	}

	// 2. Generate from the deployed endpoint.
	err = d.generate(rec)
	if err != nil {
		d.step("generate from the endpoint", err, "")
	}
	if err := d.ollamaCLI(rec.Endpoint, rec.Model); err != nil {
		return err
	}

	// 2b. Any model by name: the local registry (the stand-in for registry.ollama.ai) gets the model from the real
	// `ollama push`; a deploy request names it like a library model, and Validate resolves and sizes it there (the
	// manifest, then ranged reads of the GGUF header). "Ensure model image" builds the model's image (the Ollama
	// image plus the model in Ollama's layout) in the stack's repository (the same local registry, standing in for
	// ECR), and the task runs that image. A second deployment of the model finds the image and starts from it.
	ref, err := d.s.PushModel(d.ctx, "tinyllama:demo", gguf)
	if err := d.step("ollama push the model to the local registry", err, ref); err != nil {
		return err
	}
	for i, id := range []string{"demo-registry", "demo-registry-2"} {
		name := "deploy tinyllama:demo by name: resolved and sized in the registry, its image built, the task runs it"
		if i == 1 {
			name = "deploy tinyllama:demo again: the image is there, the task starts from it without pulling"
		}
		served := d.s.Registry.BlobGets("library/tinyllama")
		arn, err := d.s.Deploy(d.ctx, events.DeployRequest{Model: "tinyllama:demo", DeploymentID: id, Requester: "demo"})
		if err != nil {
			return d.step(name, err, "")
		}
		rec, err := d.wait(arn)
		note := describe(rec)
		if err == nil {
			note = fmt.Sprintf("%s; image %s; %d blob reads from the model's registry", note, rec.ImageText(), d.s.Registry.BlobGets("library/tinyllama")-served)
		}
		if err := d.step(name, err, note); err != nil {
			return err
		}
	}

	// 3. Two GPU requests on the bus: the second finds the cheapest GPU type full and falls back.
	source := "s3://" + local.Bucket + "/models/tiny-llama.gguf"
	for i, id := range []string{"demo-gpu-a", "demo-gpu-b"} {
		raw, _ := json.Marshal(map[string]any{"version": "0", "id": "demo-event-" + id, "source": events.SourceOllamaECS,
			"detail-type": events.DetailTypeDeploy, "account": cfg.Account, "region": cfg.Region, "time": time.Now().UTC(),
			"detail": events.DeployRequest{Model: "tiny-llama", Source: source, Prefer: "gpu", DeploymentID: id, Requester: "demo", APIKey: aws.Bool(i == 0)}})
		routed, err := d.s.PutEvent(d.ctx, raw)
		if err != nil {
			return d.step("put a GPU deploy request on the bus", err, "")
		}
		rec, err := d.wait(routed.ExecutionArn)
		name := "GPU request " + fmt.Sprint(i+1) + ": deployed"
		if err == nil && i == 1 {
			name = "GPU request 2: preferred type full, fell back"
			if len(rec.Fallbacks) == 0 {
				err = errors.New("no fallback happened")
			}
		}
		note := describe(rec)
		for _, f := range rec.Fallbacks {
			note += "\n" + strings.Repeat(" ", 66) + "skipped " + f.Placement + ": " + f.Reason
		}
		if err := d.step(name, err, note); err != nil {
			return err
		}
		if i == 0 {
			if err := d.keyChecked(rec); err != nil {
				return err
			}
		}
	}

	// 4. A short dev TTL while the model is in use: the schedule fires, sees requests in the idle window and moves
	// itself on; once the requests stop, it fires again and stops the deployment, its schedule and its route.
	arn, err := d.s.Deploy(d.ctx, events.DeployRequest{Model: "tiny-llama", Source: source, TTL: "1m", DeploymentID: "demo-ttl", Requester: "demo"})
	if err != nil {
		return d.step("deploy with a one-minute TTL", err, "")
	}
	ttl, err := d.wait(arn)
	if err := d.step("deploy with a one-minute TTL", err, "auto-stop at "+ttl.AutoStopAt+" (schedule time, 60x), idle window 2m"); err != nil {
		return err
	}
	if err := d.autoStopWaitsForIdleness(ttl); err != nil {
		return err
	}

	// 5. A prod deployment is a service behind the load balancer: a burst of generations scales it out, idleness
	// back in, with no request failing while a task drains.
	if err := d.prodScales(source); err != nil {
		return err
	}

	// 5. The scheduled dev teardown stops every remaining dev deployment.
	raw, _ := events.Sample(events.KindTeardown)
	routed, err := d.s.PutEvent(d.ctx, raw)
	note := ""
	if err == nil {
		note = fmt.Sprintf("stopped %d deployment(s): %s", len(routed.Stopped.Deployments), strings.Join(routed.Stopped.Deployments, ", "))
		// StopTask returns at once; the tasks reach STOPPED when their processes have exited.
		for _, arn := range routed.Stopped.Tasks {
			if _, werr := d.s.ECS.WaitStatus(d.ctx, arn, localcloud.StatusStopped); werr != nil {
				err = errors.Join(err, werr)
			}
		}
		if n := len(d.s.ECS.Processes()); n != 0 && err == nil {
			err = fmt.Errorf("%d ollama process(es) still running", n)
		}
	}
	return d.step("scheduled dev teardown", err, note)
}

// wait waits for an execution and returns its deployment record, or its error name and cause.
func (d *demo) wait(arn string) (deployment.Record, error) {
	ex, err := d.s.Engine.Wait(d.ctx, arn)
	if err != nil {
		return deployment.Record{}, err
	}
	d.execs = append(d.execs, ex)
	if ex.Status != engine.StatusSucceeded {
		return deployment.Record{}, fmt.Errorf("%s %s: %s", ex.Status, ex.Error, ex.Cause)
	}
	var rec deployment.Record
	err = json.Unmarshal(ex.Output, &rec)
	return rec, err
}

func (d *demo) generate(rec deployment.Record) error {
	base, err := url.Parse(rec.Endpoint)
	if err != nil {
		return err
	}
	client := api.NewClient(base, &http.Client{Timeout: 30 * time.Second})
	stream := false
	var resp api.GenerateResponse
	start := time.Now()
	err = client.Generate(d.ctx, &api.GenerateRequest{Model: rec.Model, Prompt: "Deploy me on the cheapest place that fits.",
		Stream: &stream, Options: map[string]any{"num_predict": 8, "seed": 1}}, func(r api.GenerateResponse) error { resp = r; return nil })
	if err == nil && resp.EvalCount == 0 {
		err = errors.New("no tokens generated")
	}
	return d.step("generate 8 tokens from "+rec.Endpoint, err,
		fmt.Sprintf("%d tokens in %s (done: %s)", resp.EvalCount, time.Since(start).Round(time.Millisecond), resp.DoneReason))
}

// keyChecked shows a deployment behind an API key: the load balancer answers 401 to a request without it, and
// forwards one with it, as a bearer header or in the path.
func (d *demo) keyChecked(rec deployment.Record) error {
	got, err := d.s.Parameters.GetParameter(d.ctx, &ssm.GetParameterInput{
		Name: aws.String(deployment.KeyParameterName(deployment.DefaultConfig().KeyPrefix, rec.DeploymentID)), WithDecryption: aws.Bool(true)})
	if err != nil {
		return d.step("a request without the API key is refused", err, "")
	}
	key := aws.ToString(got.Parameter.Value)
	status := func(url, auth string) int {
		req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	none, wrong := status(rec.Endpoint+"/api/tags", ""), status(rec.Endpoint+"/api/tags", "Bearer not-the-key")
	bearer, inPath := status(rec.Endpoint+"/api/tags", "Bearer "+key), status(rec.Endpoint+deployment.KeySegment+key+"/api/tags", "")
	if none != http.StatusUnauthorized || wrong != http.StatusUnauthorized || bearer != http.StatusOK || inPath != http.StatusOK {
		err = fmt.Errorf("no key %d, wrong key %d, bearer key %d, key in path %d", none, wrong, bearer, inPath)
	}
	return d.step("a request without the API key is refused", err,
		fmt.Sprintf("no key: %d, wrong key: %d, Authorization: Bearer <key>: %d, %s/k/<key>: %d", none, wrong, bearer, rec.Endpoint, inPath))
}

// ollamaCLI generates through the endpoint with the real ollama command line as the client, unchanged: only
// OLLAMA_HOST names the deployment.
func (d *demo) ollamaCLI(endpoint, model string) error {
	bin, err := ollama.FindBinary()
	if err != nil {
		return d.step("generate with the ollama CLI through the load balancer", err, "")
	}
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	home, err := os.MkdirTemp("", "ollama-ecs-cli-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	cmd := exec.CommandContext(ctx, bin, "run", model, "Say hello.")
	cmd.Env = []string{"HOME=" + home, "OLLAMA_HOST=" + endpoint, "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	text := strings.Join(strings.Fields(string(out)), " ")
	if err == nil && text == "" {
		err = errors.New("the ollama CLI printed nothing")
	}
	if err != nil {
		err = fmt.Errorf("%w: %s", err, text)
	}
	return d.step("generate with the ollama CLI through the load balancer", err,
		fmt.Sprintf("OLLAMA_HOST=%s ollama run %s: %d words", endpoint, model, len(strings.Fields(text))))
}

// autoStopWaitsForIdleness keeps a deployment busy past its TTL, then idle, and checks that the auto-stop waited
// for the idleness: the schedule moved on while requests came, and stopped the task once they stopped.
func (d *demo) autoStopWaitsForIdleness(rec deployment.Record) error {
	busyUntil := time.Now().Add(3 * time.Second) // three minutes of schedule time, past the one-minute TTL
	requests := 0
	for time.Now().Before(busyUntil) {
		if err := d.quickGenerate(rec.Endpoint, rec.Model); err != nil {
			return d.step("auto-stop postponed while the model is in use", err, "")
		}
		requests++
		time.Sleep(150 * time.Millisecond)
	}
	var err error
	postponed := 0
	for _, f := range d.s.Scheduler.Fired() {
		if f.Name == rec.ScheduleName && f.Err == nil {
			postponed++
		}
	}
	if postponed == 0 {
		err = errors.New("the auto-stop schedule did not fire while the model was in use")
	}
	if _, serr := d.s.ECS.WaitStatus(d.ctx, rec.TaskArn, localcloud.StatusRunning); serr != nil || d.stopped(rec.TaskArn) {
		err = errors.Join(err, errors.New("the task stopped while in use"))
	}
	if err := d.step("auto-stop postponed while the model is in use", err,
		fmt.Sprintf("%d requests over 3 min (schedule time): the schedule fired %d time(s) and moved itself on", requests, postponed)); err != nil {
		return err
	}
	start := time.Now()
	err = d.waitStopped(rec.TaskArn)
	if err == nil {
		_, gerr := d.s.Scheduler.GetSchedule(d.ctx, &scheduler.GetScheduleInput{Name: aws.String(rec.ScheduleName), GroupName: aws.String(local.ScheduleGroup)})
		if gerr == nil {
			err = errors.New("the schedule is still there after the stop")
		}
	}
	if err := d.step("auto-stop fired after idleness: task and schedule gone", err,
		fmt.Sprintf("%s, %s after the last request (wall time); the endpoint sleeps", rec.ScheduleName, time.Since(start).Round(100*time.Millisecond))); err != nil {
		return err
	}
	return d.wakeOnRequest(rec)
}

// wakeOnRequest calls a sleeping deployment's endpoint: the first answer is 503 with Retry-After while the waker
// starts it again through the state machine; the caller retries as told and is served.
func (d *demo) wakeOnRequest(rec deployment.Record) error {
	start := time.Now()
	resp, err := http.Get(rec.Endpoint + "/api/tags")
	if err != nil {
		return d.step("a request wakes the sleeping deployment", err, "")
	}
	resp.Body.Close()
	retry := resp.Header.Get("Retry-After")
	if resp.StatusCode != http.StatusServiceUnavailable || retry == "" {
		return d.step("a request wakes the sleeping deployment", fmt.Errorf("got %s, Retry-After %q", resp.Status, retry), "")
	}
	if err := d.step("a request wakes the sleeping deployment", nil, "503, Retry-After: "+retry+" s; execution demo-ttl-w1 started"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	tries := 1
	for {
		wait, _ := strconv.Atoi(retry)
		select {
		case <-ctx.Done():
			return d.step("the retried request is answered", ctx.Err(), "")
		case <-time.After(time.Duration(max(1, min(wait, 2))) * time.Second):
		}
		tries++
		if err := d.quickGenerate(rec.Endpoint, rec.Model); err == nil {
			break
		}
		if resp, err := http.Get(rec.Endpoint + "/api/tags"); err == nil {
			retry = resp.Header.Get("Retry-After")
			resp.Body.Close()
		}
	}
	return d.step("the retried request is answered", nil, fmt.Sprintf("generated after %s and %d requests", time.Since(start).Round(100*time.Millisecond), tries))
}

// prodScales deploys prod with 1 to 2 tasks, loads it until it scales out, then lets it idle until it scales in.
func (d *demo) prodScales(source string) error {
	arn, err := d.s.Deploy(d.ctx, events.DeployRequest{Model: "tiny-llama", Source: source, Env: "prod", DeploymentID: "demo-prod",
		MinTasks: 1, MaxTasks: 2, Requester: "demo"})
	if err != nil {
		return d.step("prod deployment as a service", err, "")
	}
	rec, err := d.wait(arn)
	if err := d.step("prod deployment as a service", err, describe(rec)+", 1 to 2 tasks"); err != nil {
		return err
	}
	svc := deployment.ServiceName(rec.DeploymentID)
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	var failed, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				sent.Add(1)
				if d.quickGenerate(rec.Endpoint, rec.Model) != nil {
					failed.Add(1)
				}
			}
		}()
	}
	for ctx.Err() == nil && len(d.s.ECS.ServiceTasks(svc)) < 2 {
		time.Sleep(50 * time.Millisecond)
	}
	decided := time.Since(start)
	for ctx.Err() == nil && d.healthyTargets(rec.DeploymentID) < 2 {
		time.Sleep(50 * time.Millisecond)
	}
	serving := time.Since(start)
	close(stop)
	wg.Wait()
	err = ctx.Err()
	if failed.Load() > 0 {
		err = errors.Join(err, fmt.Errorf("%d of %d requests failed", failed.Load(), sent.Load()))
	}
	if err := d.step("a burst of 6 concurrent clients scales it out", err,
		fmt.Sprintf("%d generations, 0 failed; second task started %s after the burst began, serving after %s",
			sent.Load(), decided.Round(100*time.Millisecond), serving.Round(100*time.Millisecond))); err != nil {
		return err
	}
	idleFrom := time.Now()
	trickle := 0
	for ctx.Err() == nil && len(d.s.ECS.ServiceTasks(svc)) > 1 {
		if err := d.quickGenerate(rec.Endpoint, rec.Model); err != nil {
			failed.Add(1)
		}
		trickle++
		time.Sleep(time.Second)
	}
	err = ctx.Err()
	if failed.Load() > 0 {
		err = errors.Join(err, fmt.Errorf("%d requests failed while a task drained", failed.Load()))
	}
	if err := d.step("idleness scales it back in", err, fmt.Sprintf("1 task again after %s of a slow trickle (%d requests, 0 failed)",
		time.Since(idleFrom).Round(100*time.Millisecond), trickle)); err != nil {
		return err
	}
	routed, err := d.s.PutEvent(d.ctx, stopEvent(rec.DeploymentID))
	if err == nil && (routed.Stopped == nil || len(routed.Stopped.Services) != 1) {
		err = fmt.Errorf("the stop removed no service: %+v", routed.Stopped)
	}
	for err == nil && ctx.Err() == nil && len(d.s.ECS.ServiceTasks(svc)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	return d.step("stop prod: its service, scaling and route deleted", errors.Join(err, ctx.Err()), "")
}

// quickGenerate asks for 4 tokens through the endpoint, streamed as clients do.
func (d *demo) quickGenerate(endpoint, model string) error {
	base, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	client := api.NewClient(base, &http.Client{Timeout: 30 * time.Second})
	done := false
	err = client.Generate(d.ctx, &api.GenerateRequest{Model: model, Prompt: "hello", Options: map[string]any{"num_predict": 4}},
		func(r api.GenerateResponse) error { done = done || r.Done; return nil })
	if err == nil && !done {
		// The client returns nil when a stream is cut before its final response.
		err = fmt.Errorf("generate: the stream ended before its final response")
	}
	return err
}

// healthyTargets counts a deployment's healthy targets on the load balancer.
func (d *demo) healthyTargets(id string) int {
	out, err := d.s.LB.DescribeTargetGroups(d.ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(id)}})
	if err != nil || len(out.TargetGroups) == 0 {
		return 0
	}
	return d.s.LB.Stats(aws.ToString(out.TargetGroups[0].TargetGroupArn)).Healthy
}

// stopped reports whether a task has stopped.
func (d *demo) stopped(taskArn string) bool {
	out, err := d.s.ECS.DescribeTasks(d.ctx, &ecs.DescribeTasksInput{Tasks: []string{taskArn}})
	return err == nil && len(out.Tasks) == 1 && aws.ToString(out.Tasks[0].DesiredStatus) == localcloud.StatusStopped
}

// stopEvent is a Stop Request on the bus.
func stopEvent(id string) []byte {
	raw, _ := json.Marshal(map[string]any{"version": "0", "id": "demo-stop-" + id, "source": events.SourceOllamaECS,
		"detail-type": events.DetailTypeStop, "account": "111122223333", "region": "us-east-1", "time": time.Now().UTC(),
		"detail": events.StopRequest{DeploymentID: id, Requester: "demo"}})
	return raw
}

func (d *demo) waitStopped(taskArn string) error {
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	task, err := d.s.ECS.WaitStatus(ctx, taskArn, localcloud.StatusStopped)
	if err != nil {
		return fmt.Errorf("task not stopped by the schedule: %w", err)
	}
	if !strings.Contains(aws.ToString(task.StoppedReason), "auto-stop") {
		return fmt.Errorf("task stopped for another reason: %s", aws.ToString(task.StoppedReason))
	}
	return nil
}

// close tears the stack down and checks nothing is left: no task, process or schedule.
func (d *demo) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var leaks []string
	list, err := d.s.ECS.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String(d.s.ECS.Config().Name)})
	if err == nil && len(list.TaskArns) > 0 {
		leaks = append(leaks, fmt.Sprintf("%d running task(s)", len(list.TaskArns)))
	}
	scheds, err := d.s.Scheduler.ListSchedules(ctx, &scheduler.ListSchedulesInput{})
	if err == nil && len(scheds.Schedules) > 0 {
		leaks = append(leaks, fmt.Sprintf("%d schedule(s)", len(scheds.Schedules)))
	}
	closeErr := d.s.Close(ctx)
	var leakErr error
	if len(leaks) > 0 {
		leakErr = errors.New("left behind: " + strings.Join(leaks, ", "))
	}
	return d.step("stack closed: no task, process, port or schedule left", errors.Join(leakErr, closeErr), "")
}

// summary prints each execution's history as the console shows it, then one line per execution.
func (d *demo) summary(total time.Duration) {
	fmt.Fprintln(d.out, "\nexecution history (as the Step Functions console shows it):")
	for _, ex := range d.execs {
		fmt.Fprintf(d.out, "\n%s  %s  %s\n", ex.Name, ex.Status, ex.StopDate.Sub(ex.StartDate).Round(time.Millisecond))
		fmt.Fprint(d.out, indent(deployment.RenderHistory(ex.Events), "  "))
	}
	fmt.Fprintln(d.out, "\nsummary:")
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  EXECUTION\tSTATUS\tSTATES\tDURATION\tRESULT")
	for _, ex := range d.execs {
		result := ex.Error
		var rec deployment.Record
		if json.Unmarshal(ex.Output, &rec) == nil && rec.DeploymentID != "" {
			result = fmt.Sprintf("%s %s on %s at $%.4f/h", rec.DeploymentID, rec.Model, rec.Placement, rec.HourlyCostUSD)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", short(ex.Name), ex.Status, len(deployment.StateRuns(ex.Events)),
			ex.StopDate.Sub(ex.StartDate).Round(time.Millisecond), result)
	}
	tw.Flush()
	ok := 0
	for _, st := range d.steps {
		if st.ok {
			ok++
		}
	}
	fmt.Fprintf(d.out, "\n%d of %d steps happened in %s\n", ok, len(d.steps), total.Round(time.Millisecond))
}

func describe(r deployment.Record) string {
	if r.DeploymentID == "" {
		return ""
	}
	s := fmt.Sprintf("%s on %s, $%.4f/h, %s", r.DeploymentID, r.Placement, r.HourlyCostUSD, r.Endpoint)
	if r.GPUReadiness != "" {
		s += "; GPU rule " + r.GPUReadiness
	}
	return s
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

func short(name string) string {
	if len(name) > 16 {
		return name[:16]
	}
	return name
}
