package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/test/tools"
)

// Targets from the reach-and-scale issue.
const (
	targetStreamRatio    = 0.95
	targetScaleInFailed  = 0
	streamTokens         = 48
	scaleBenchDeployment = "bench-prod"
)

// streamed is one streamed generation: its tokens, the time to the first token and the total time.
type streamed struct {
	tokens      int
	first, full time.Duration
}

// streamGenerate streams a generation from base and times it as a client sees it.
func streamGenerate(ctx context.Context, base, model string, tokens int) (streamed, error) {
	body := fmt.Sprintf(`{"model":%q,"prompt":"hello","options":{"num_predict":%d,"seed":1,"temperature":0}}`, model, tokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/generate", strings.NewReader(body))
	if err != nil {
		return streamed{}, err
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return streamed{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return streamed{}, fmt.Errorf("%s", resp.Status)
	}
	var out streamed
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var chunk struct {
			Response  string `json:"response"`
			Done      bool   `json:"done"`
			EvalCount int    `json:"eval_count"`
			Error     string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &chunk); err != nil {
			return out, err
		}
		if chunk.Error != "" {
			return out, fmt.Errorf("%s", chunk.Error)
		}
		if out.first == 0 {
			out.first = time.Since(start)
		}
		if chunk.Done {
			out.tokens, out.full = chunk.EvalCount, time.Since(start)
			return out, nil
		}
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	return out, fmt.Errorf("the stream ended before done")
}

// BenchmarkLoadBalancerStreaming: streaming tokens per second and time to first token through the local load
// balancer against the same task directly, alternating in one run: a 48-token generation of the tiny model (greedy
// decoding of its random weights repeats a token, and Ollama ends a stream after 30 repeats, about 70 tokens in), which streams hundreds of tokens a second, so the load balancer's
// per-chunk cost shows as much as it ever will.
func BenchmarkLoadBalancerStreaming(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := benchStack(ctx, b)
	arn, err := s.Deploy(ctx, events.DeployRequest{Model: tinyModel, Source: "s3://" + local.Bucket + "/" + tinyKey, DeploymentID: "bench-stream"})
	if err != nil {
		b.Fatal(err)
	}
	ex, err := s.Engine.Wait(ctx, arn)
	if err != nil {
		b.Fatal(err)
	}
	var rec deployment.Record
	if err := json.Unmarshal(ex.Output, &rec); err != nil || rec.TaskArn == "" {
		b.Fatalf("deploy: %s %s %v", ex.Status, ex.Cause, err)
	}
	direct, err := s.ECS.Endpoint(ctx, describeTask(ctx, b, s, rec.TaskArn))
	if err != nil {
		b.Fatal(err)
	}
	// Warm both paths.
	for _, base := range []string{direct, rec.Endpoint} {
		if _, err := streamGenerate(ctx, base, tinyModel, streamTokens); err != nil {
			b.Fatal(err)
		}
	}
	var directTPS, lbTPS, directFirst, lbFirst []float64
	for b.Loop() {
		for i := range rounds() * 3 {
			paths := []struct {
				base       string
				tps, first *[]float64
			}{{direct, &directTPS, &directFirst}, {rec.Endpoint, &lbTPS, &lbFirst}}
			if i%2 == 1 {
				// Ollama reuses the previous request's prompt cache: each path goes first in half the rounds.
				paths[0], paths[1] = paths[1], paths[0]
			}
			for _, path := range paths {
				r, err := streamGenerate(ctx, path.base, tinyModel, streamTokens)
				if err != nil {
					b.Fatal(err)
				}
				*path.tps = append(*path.tps, float64(r.tokens)/r.full.Seconds())
				*path.first = append(*path.first, ms(r.first))
			}
		}
	}
	ratio := median(lbTPS) / median(directTPS)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(directTPS), "direct-tok/s")
	b.ReportMetric(median(lbTPS), "lb-tok/s")
	b.ReportMetric(ratio, "lb/direct")
	b.ReportMetric(met(ratio >= targetStreamRatio), "stream-target-met")
	b.ReportMetric(median(directFirst), "direct-ttft-ms")
	b.ReportMetric(median(lbFirst), "lb-ttft-ms")
	b.ReportMetric(median(lbFirst)-median(directFirst), "added-ttft-ms")
}

// BenchmarkScaleOutAndIn: a prod service (1 to 2 tasks) under 6 concurrent clients, with the local target
// tracking the demo uses (evaluated every 200 ms over a 2 s window, 1 s / 3 s cooldowns, 300 requests a minute
// per task): the time from the start of the load to the scale-out decision and to the second task serving;
// requests failed during the scale-out and during the scale-in (target 0); then a task killed in the middle of a
// long generation: the failed requests and the client's error.
func BenchmarkScaleOutAndIn(b *testing.B) {
	tools.Require(b, tools.Local...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var decide, serve, outFailed, inFailed, killFailed []float64
	var killErr string
	for b.Loop() {
		for range rounds() {
			r, err := scaleRound(ctx)
			if err != nil {
				b.Fatal(err)
			}
			decide, serve = append(decide, ms(r.decision)), append(serve, ms(r.serving))
			outFailed, inFailed, killFailed = append(outFailed, float64(r.outFailed)), append(inFailed, float64(r.inFailed)), append(killFailed, float64(r.killFailed))
			killErr = r.killErr
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(decide), "decision-ms")
	b.ReportMetric(median(serve), "serving-ms")
	b.ReportMetric(maxOf(outFailed), "scale-out-failed-max")
	b.ReportMetric(maxOf(inFailed), "scale-in-failed-max")
	b.ReportMetric(met(maxOf(inFailed) <= targetScaleInFailed), "scale-in-target-met")
	b.ReportMetric(median(killFailed), "kill-failed")
	b.Logf("client's error when its task was killed mid-generation: %s", killErr)
}

type scaleResult struct {
	decision, serving               time.Duration
	outFailed, inFailed, killFailed int
	killErr                         string
}

func scaleRound(ctx context.Context) (scaleResult, error) {
	var r scaleResult
	s, err := local.Start(ctx, local.Options{HealthWait: 200 * time.Millisecond, ScalingInterval: 200 * time.Millisecond,
		ScalingWindow: 2 * time.Second, ScaleOutCooldown: time.Second, ScaleInCooldown: 3 * time.Second, ScaleTargetRequests: 300})
	if err != nil {
		return r, err
	}
	defer func() { _ = s.Close(context.WithoutCancel(ctx)) }()
	model, err := tinyModelBytes()
	if err != nil {
		return r, err
	}
	if err := s.Store(ctx, tinyKey, model); err != nil {
		return r, err
	}
	arn, err := s.Deploy(ctx, events.DeployRequest{Model: tinyModel, Source: "s3://" + local.Bucket + "/" + tinyKey, Env: "prod",
		DeploymentID: scaleBenchDeployment, MinTasks: 1, MaxTasks: 2})
	if err != nil {
		return r, err
	}
	ex, err := s.Engine.Wait(ctx, arn)
	if err != nil {
		return r, err
	}
	var rec deployment.Record
	if err := json.Unmarshal(ex.Output, &rec); err != nil || rec.ServiceArn == "" {
		return r, fmt.Errorf("deploy: %s %s %v", ex.Status, ex.Cause, err)
	}
	svc := deployment.ServiceName(scaleBenchDeployment)
	tg, err := s.LB.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(scaleBenchDeployment)}})
	if err != nil {
		return r, err
	}
	tgArn := aws.ToString(tg.TargetGroups[0].TargetGroupArn)
	deadline, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	// Load until a second task serves.
	start := time.Now()
	load := keepCalling(6, func() error { _, err := streamGenerate(deadline, rec.Endpoint, tinyModel, 8); return err })
	for deadline.Err() == nil && len(s.Scaling.Activities()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if acts := s.Scaling.Activities(); len(acts) > 0 {
		r.decision = acts[0].At.Sub(start)
	}
	for deadline.Err() == nil && s.LB.Stats(tgArn).Healthy < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	r.serving = time.Since(start)
	outFailed, _ := load()
	r.outFailed = int(outFailed)

	// A trickle (one a second) until the service is back at one task.
	for deadline.Err() == nil && len(s.ECS.ServiceTasks(svc)) > 1 {
		if _, err := streamGenerate(deadline, rec.Endpoint, tinyModel, 8); err != nil {
			r.inFailed++
		}
		time.Sleep(time.Second)
	}
	if err := deadline.Err(); err != nil {
		return r, fmt.Errorf("the service did not scale back in: %w", err)
	}

	// A task killed in the middle of a long generation; the next requests meanwhile.
	long := make(chan error, 1)
	go func() {
		_, err := streamGenerate(deadline, rec.Endpoint, tinyModel, 200000)
		long <- err
	}()
	time.Sleep(300 * time.Millisecond)
	tasks := s.ECS.ServiceTasks(svc)
	if len(tasks) != 1 {
		return r, fmt.Errorf("%d tasks before the kill", len(tasks))
	}
	if err := s.ECS.CrashTask(tasks[0]); err != nil {
		return r, err
	}
	if err := <-long; err != nil {
		r.killFailed++
		r.killErr = err.Error()
	}
	for deadline.Err() == nil {
		if _, err := streamGenerate(deadline, rec.Endpoint, tinyModel, 8); err == nil {
			break
		}
		r.killFailed++
		time.Sleep(200 * time.Millisecond)
	}
	return r, deadline.Err()
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// describeTask is a task as ECS describes it.
func describeTask(ctx context.Context, b *testing.B, s *local.Stack, arn string) ecstypes.Task {
	out, err := s.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Tasks: []string{arn}})
	if err != nil || len(out.Tasks) != 1 {
		b.Fatalf("describe %s: %v", arn, err)
	}
	return out.Tasks[0]
}

func tinyModelBytes() ([]byte, error) { return tinymodel.Bytes(tinymodel.Options{}) }

// benchStack is a local stack with the tiny model in its bucket, closed when the benchmark ends.
func benchStack(ctx context.Context, b *testing.B) *local.Stack {
	b.Helper()
	tools.Require(b, tools.Local...)
	s, err := local.Start(ctx, local.Options{HealthWait: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close(context.WithoutCancel(ctx)) })
	model, err := tinyModelBytes()
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Store(ctx, tinyKey, model); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkWake: request-to-served on a wake against a plain deploy of the same model (event to a generation
// served), in one run, alternating; and what one wake costs: the wake execution's state transitions and the
// Lambda time of its Task states plus the waker's own answer.
func BenchmarkWake(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := benchStack(ctx, b)
	source := "s3://" + local.Bucket + "/" + tinyKey
	var plain, woken, transitions, lambdaMS, wakerMS []float64
	n := 0
	for b.Loop() {
		for range rounds() {
			n++
			// A plain deploy: the request to a generation served.
			id := fmt.Sprintf("bench-plain-%d", n)
			t0 := time.Now()
			arn, err := s.Deploy(ctx, events.DeployRequest{Model: tinyModel, Source: source, DeploymentID: id, TTL: "0"})
			if err != nil {
				b.Fatal(err)
			}
			ex, err := s.Engine.Wait(ctx, arn)
			if err != nil || ex.Status != "SUCCEEDED" {
				b.Fatalf("deploy: %v %s %s", err, ex.Status, ex.Cause)
			}
			var rec deployment.Record
			_ = json.Unmarshal(ex.Output, &rec)
			if _, err := streamGenerate(ctx, rec.Endpoint, tinyModel, 4); err != nil {
				b.Fatal(err)
			}
			plain = append(plain, ms(time.Since(t0)))
			// The same deployment, stopped (it sleeps), then woken by a request and served.
			if _, err := s.PutEvent(ctx, envelope(events.DetailTypeStop, map[string]any{"deploymentId": id})); err != nil {
				b.Fatal(err)
			}
			waitAsleep(ctx, b, s, id)
			t2 := time.Now()
			first, err := http.Get(rec.Endpoint + "/api/tags")
			if err != nil {
				b.Fatal(err)
			}
			first.Body.Close()
			wakerMS = append(wakerMS, ms(time.Since(t2)))
			for {
				if _, err := streamGenerate(ctx, rec.Endpoint, tinyModel, 4); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			woken = append(woken, ms(time.Since(t2)))
			exWake, err := s.Engine.Wait(ctx, executionOf(s, id+"-w1"))
			if err != nil {
				b.Fatal(err)
			}
			tr, lambda := 0.0, 0.0
			for _, r := range deployment.StateRuns(exWake.Events) {
				tr++
				if r.Type == "Task" {
					lambda += ms(r.Duration)
				}
			}
			transitions, lambdaMS = append(transitions, tr), append(lambdaMS, lambda)
			if _, err := s.PutEvent(ctx, envelope(events.DetailTypeStop, map[string]any{"deploymentId": id, "forget": true})); err != nil {
				b.Fatal(err)
			}
		}
	}
	const usdPerGBSecondARM, gb = 0.0000133334, 0.25
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(plain), "plain-deploy-to-served-ms")
	b.ReportMetric(median(woken), "wake-request-to-served-ms")
	b.ReportMetric(median(woken)/median(plain), "wake/plain")
	b.ReportMetric(median(wakerMS), "waker-answer-ms")
	b.ReportMetric(median(transitions), "wake-transitions")
	b.ReportMetric(median(lambdaMS), "wake-lambda-ms")
	b.ReportMetric(median(transitions)*USDPerTransition+(median(lambdaMS)+median(wakerMS))/1000*gb*usdPerGBSecondARM, "usd/wake")
}

// executionOf is the ARN of the execution of that name the stack started, waiting for it to appear.
func executionOf(s *local.Stack, name string) string {
	for range 500 {
		for _, ex := range s.Executions() {
			if strings.HasSuffix(ex.ExecutionArn, ":"+name) {
				return ex.ExecutionArn
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "no execution " + name
}

// waitAsleep waits until a deployment sleeps (its record says so, and no task process is left), without calling
// its endpoint (which would wake it).
func waitAsleep(ctx context.Context, b *testing.B, s *local.Stack, id string) {
	for ctx.Err() == nil {
		recs, err := s.Sleeping(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range recs {
			if r.DeploymentID == id && r.Asleep && len(s.ECS.Processes()) == 0 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal(ctx.Err())
}
