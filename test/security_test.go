package test

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
)

// syncBuffer collects the stack's JSON log lines from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStopTouchesOnlyOwnTasks: tasks someone else started in the same cluster, with a look-alike startedBy or
// look-alike tags, survive a Stop Request for that id and the scheduled teardown; the system's own dev
// deployment is stopped.
func TestStopTouchesOnlyOwnTasks(t *testing.T) {
	s := stackWithTiny(t, local.Options{})
	tag := func(k, v string) ecstypes.Tag { return ecstypes.Tag{Key: aws.String(k), Value: aws.String(v)} }
	foreign := []struct {
		name, startedBy string
		tags            []ecstypes.Tag
	}{
		{"same startedBy, no tags", "sec-victim", nil},
		{"same startedBy, look-alike managed-by", "sec-victim", []ecstypes.Tag{tag(deployment.TagManagedBy, "ollama-ecs-evil"),
			tag(deployment.TagDeploymentID, "sec-victim"), tag(deployment.TagEnv, "dev")}},
		{"right tags, startedBy not the deployment id", "sec-victim-2", []ecstypes.Tag{tag(deployment.TagManagedBy, deployment.ManagedByValue),
			tag(deployment.TagDeploymentID, "sec-victim"), tag(deployment.TagEnv, "dev")}},
	}
	var arns []string
	for _, f := range foreign {
		out, err := s.ECS.RunTask(ctxFor(t, 10*time.Second), &ecs.RunTaskInput{
			Cluster: aws.String(s.ECS.Config().Name), TaskDefinition: aws.String("someone-else"), Count: aws.Int32(1),
			LaunchType: ecstypes.LaunchTypeFargate, StartedBy: aws.String(f.startedBy), Tags: f.tags,
			Overrides: &ecstypes.TaskOverride{ContainerOverrides: []ecstypes.ContainerOverride{{Name: aws.String(deployment.ContainerName),
				Environment: []ecstypes.KeyValuePair{{Name: aws.String(deployment.EnvModel), Value: aws.String("tiny")},
					{Name: aws.String(deployment.EnvSource), Value: aws.String(tinySource)}}}}},
		})
		if err != nil || len(out.Tasks) != 1 {
			t.Fatalf("%s: %v %+v", f.name, err, out)
		}
		arns = append(arns, aws.ToString(out.Tasks[0].TaskArn))
		if _, err := s.ECS.WaitStatus(ctxFor(t, 30*time.Second), arns[len(arns)-1], cloud.StatusRunning); err != nil {
			t.Fatal(err)
		}
	}
	succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: "sec-own"}))
	for _, id := range []string{"sec-victim", "sec-victim-2"} {
		routed, err := s.PutEvent(ctxFor(t, 10*time.Second), stopEvent(id))
		if err != nil || len(routed.Stopped.Tasks) != 0 {
			t.Errorf("stop %s stopped %+v (%v)", id, routed.Stopped, err)
		}
	}
	raw, _ := events.Sample(events.KindTeardown)
	routed, err := s.PutEvent(ctxFor(t, 30*time.Second), raw)
	if err != nil || len(routed.Stopped.Deployments) != 1 || routed.Stopped.Deployments[0] != "sec-own" {
		t.Errorf("teardown stopped %+v (%v)", routed.Stopped, err)
	}
	assertNothingLeft(t, s, "sec-own")
	for i, arn := range arns {
		out, err := s.ECS.DescribeTasks(ctxFor(t, 5*time.Second), &ecs.DescribeTasksInput{Cluster: aws.String(s.ECS.Config().Name), Tasks: []string{arn}})
		if err != nil || aws.ToString(out.Tasks[0].DesiredStatus) != cloud.StatusRunning {
			t.Errorf("foreign task (%s) was stopped: %v", foreign[i].name, err)
		}
	}
}

// TestLogsCarryNoSecrets captures the handlers' and the local cloud's slog JSON output through a deployment, a
// generation and a stop, and scans it for the prompt and for credentials present in the environment.
func TestLogsCarryNoSecrets(t *testing.T) {
	const secret, token, prompt = "wJalrXUtnFEMI-SECRET-MARKER-7f3a", "SESSION-TOKEN-MARKER-91bc", "PROMPT-MARKER: my password is hunter2"
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SESSION_TOKEN", token)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The stack's folder is kept, so the Ollama servers' own logs (ollama.log, stdout and stderr of each task's
	// `ollama serve`) are scanned too.
	dir := t.TempDir()
	s := stackWithTiny(t, local.Options{Log: log, Dir: dir})
	rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: "logs-one", Requester: "alice"}))
	base, _ := url.Parse(rec.Endpoint)
	stream := false
	err := api.NewClient(base, http.DefaultClient).Generate(ctxFor(t, time.Minute), &api.GenerateRequest{Model: "tiny",
		Prompt: prompt, Stream: &stream, Options: map[string]any{"num_predict": 3}}, func(api.GenerateResponse) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	// Each server removes its folder when its task stops: read the Ollama logs while the deployment runs.
	var ollamaLogs []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "ollama.log" {
			raw, rerr := os.ReadFile(path)
			ollamaLogs = append(ollamaLogs, string(raw))
			return rerr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	stopDeployment(t, s, "logs-one")
	_ = s.Close(context.Background())

	out := logs.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var withID int
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON log line: %q", line)
		}
		if rec["deploymentId"] == "logs-one" {
			withID++
		}
	}
	if withID < 5 {
		t.Fatalf("only %d log lines carry the deployment id: the capture does not work", withID)
	}
	// The Ollama log that served the generation must show that request: it is where a prompt would be written.
	if len(ollamaLogs) == 0 || !slices.ContainsFunc(ollamaLogs, func(l string) bool { return strings.Contains(l, "/api/generate") }) {
		t.Fatalf("%d Ollama logs, none records the /api/generate request: the capture does not work", len(ollamaLogs))
	}
	for _, marker := range []string{secret, token, "hunter2", "PROMPT-MARKER"} {
		if strings.Contains(out, marker) {
			t.Errorf("the handlers' logs contain %q", marker)
		}
		for _, l := range ollamaLogs {
			if strings.Contains(l, marker) {
				t.Errorf("an Ollama log contains %q", marker)
			}
		}
	}
	t.Logf("%d log lines scanned, %d about the deployment; %d Ollama logs", len(lines), withID, len(ollamaLogs))
}
