package steps

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// describer answers DescribeTasks with one task.
type describer struct{ task ecstypes.Task }

var _ deployment.TaskLister = (*describer)(nil)

func (d *describer) ListTasks(context.Context, *ecs.ListTasksInput, ...func(*ecs.Options)) (*ecs.ListTasksOutput, error) {
	return &ecs.ListTasksOutput{TaskArns: []string{aws.ToString(d.task.TaskArn)}}, nil
}

func (d *describer) DescribeTasks(_ context.Context, in *ecs.DescribeTasksInput, _ ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error) {
	return &ecs.DescribeTasksOutput{Tasks: []ecstypes.Task{d.task}}, nil
}

// fakeOllama serves the three calls the health rule makes, with the loaded model's size and size in GPU memory.
func fakeOllama(t *testing.T, loaded bool, size, sizeVRAM int64) string {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) { _ = json.NewEncoder(w).Encode(v) }
	mux.HandleFunc("/api/version", func(w http.ResponseWriter, _ *http.Request) { reply(w, map[string]string{"version": "0.17.4"}) })
	mux.HandleFunc("/api/tags", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"models": []map[string]any{{"name": "tiny:latest", "model": "tiny:latest"}}})
	})
	mux.HandleFunc("/api/ps", func(w http.ResponseWriter, _ *http.Request) {
		models := []map[string]any{}
		if loaded {
			models = append(models, map[string]any{"name": "tiny:latest", "model": "tiny:latest", "size": size, "size_vram": sizeVRAM})
		}
		reply(w, map[string]any{"models": models})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestHealthRules runs the real health step on a fake ECS task and a fake Ollama: each phase, both branches of the
// GPU readiness rule, the PROVISIONING bound, the deadline and the growing waits.
func TestHealthRules(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	exit := int32(137)
	running := ecstypes.Task{TaskArn: aws.String("arn:task/1"), LastStatus: aws.String("RUNNING"), DesiredStatus: aws.String("RUNNING"),
		CreatedAt: aws.Time(now.Add(-time.Minute))}
	provisioning := running
	provisioning.LastStatus = aws.String("PROVISIONING")
	stopped := running
	stopped.LastStatus, stopped.StopCode, stopped.StoppedReason = aws.String("STOPPED"), ecstypes.TaskStopCodeEssentialContainerExited, aws.String("Essential container in task exited")
	stopped.Containers = []ecstypes.Container{{Name: aws.String(deployment.ContainerName), ExitCode: &exit}}
	longProvisioning := provisioning
	longProvisioning.CreatedAt = aws.Time(now.Add(-11 * time.Minute))

	tests := []struct {
		name    string
		task    ecstypes.Task
		gpu     bool
		loaded  bool
		vram    int64
		prev    *deployment.HealthState
		wantErr any
		check   func(t *testing.T, st deployment.HealthState)
	}{
		{name: "GPU rule met: wholly in GPU memory", task: running, gpu: true, loaded: true, vram: 1000,
			check: func(t *testing.T, st deployment.HealthState) {
				if !st.Ready || st.GPU != "met" || st.Phase != deployment.PhaseReady {
					t.Errorf("%+v", st)
				}
			}},
		{name: "GPU rule not met: part on the CPU", task: running, gpu: true, loaded: true, vram: 400, wantErr: new(*deployment.ModelNotOnGPUError)},
		{name: "CPU placement: no GPU verdict", task: running, loaded: true,
			check: func(t *testing.T, st deployment.HealthState) {
				if !st.Ready || st.GPU != "" {
					t.Errorf("%+v", st)
				}
			}},
		{name: "present, not loaded yet", task: running, gpu: true,
			check: func(t *testing.T, st deployment.HealthState) {
				if st.Ready || st.Phase != deployment.PhaseLoading || st.WaitSeconds < 1 {
					t.Errorf("%+v", st)
				}
			}},
		{name: "stopped task: stop code and exit code", task: stopped, wantErr: new(*deployment.TaskStoppedError),
			check: nil},
		{name: "provisioning within the bound waits", task: provisioning, gpu: true,
			check: func(t *testing.T, st deployment.HealthState) {
				if st.Ready || st.Phase != deployment.PhaseProvisioning || st.WaitSeconds != 1 {
					t.Errorf("%+v", st)
				}
			}},
		{name: "provisioning past the bound is a capacity refusal", task: longProvisioning, gpu: true, wantErr: new(*deployment.CapacityError)},
		{name: "waits grow with the time waited", task: provisioning, gpu: true,
			prev: &deployment.HealthState{TaskArn: "arn:task/1", Polls: 4, FirstPollAt: now.Add(-30 * time.Second).Format(time.RFC3339Nano)},
			check: func(t *testing.T, st deployment.HealthState) {
				if st.Polls != 5 || st.WaitSeconds != 30 {
					t.Errorf("%+v", st)
				}
			}},
		{name: "a new task starts a new count", task: provisioning, gpu: true,
			prev: &deployment.HealthState{TaskArn: "arn:task/0", Polls: 4, FirstPollAt: now.Add(-time.Hour).Format(time.RFC3339Nano)},
			check: func(t *testing.T, st deployment.HealthState) {
				if st.Polls != 1 || st.TaskArn != "arn:task/1" {
					t.Errorf("%+v", st)
				}
			}},
		{name: "past the deadline", task: running, gpu: true,
			prev:    &deployment.HealthState{TaskArn: "arn:task/1", Polls: 9, FirstPollAt: now.Add(-31 * time.Minute).Format(time.RFC3339Nano)},
			wantErr: new(*deployment.HealthTimeoutError)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := fakeOllama(t, tt.loaded, 1000, tt.vram)
			h := &Health{ECS: &describer{task: tt.task}, Cluster: "c", HTTP: http.DefaultClient,
				Endpoint: func(context.Context, ecstypes.Task) (string, error) { return url, nil },
				Timeout:  30 * time.Minute, PollInterval: time.Millisecond, Now: func() time.Time { return now }}
			st, err := h.Handle(context.Background(), deployment.State{
				Request: &deployment.Request{DeploymentID: "d", ModelName: "tiny"},
				Task:    &deployment.TaskInfo{TaskArn: "arn:task/1", GPU: tt.gpu, Placement: "EC2 g4dn.xlarge"},
				Health:  tt.prev,
			})
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Fatalf("error %v", err)
				}
				tt.check(t, st)
			case **deployment.ModelNotOnGPUError:
				if !errors.As(err, want) || (*want).SizeVRAM != 400 {
					t.Fatalf("error %T %v", err, err)
				}
			case **deployment.TaskStoppedError:
				if !errors.As(err, want) || (*want).ExitCode == nil || *(*want).ExitCode != 137 {
					t.Fatalf("error %T %v", err, err)
				}
			case **deployment.CapacityError:
				if !errors.As(err, want) {
					t.Fatalf("error %T %v", err, err)
				}
			case **deployment.HealthTimeoutError:
				if !errors.As(err, want) {
					t.Fatalf("error %T %v", err, err)
				}
			}
		})
	}
}
