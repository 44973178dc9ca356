package cloud

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/local/ollama/ollamatest"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
)

// TestOllamaTasks runs tasks as real Ollama servers: a tiny GGUF uploaded to the bucket becomes a loaded model
// (also under another name); a pull with no internet stops the task with exit code 1 and
// the pull's error; StopTask leaves no process behind.
func TestOllamaTasks(t *testing.T) {
	bin := ollamatest.Binary(t)
	ctx := context.Background()
	bucket, err := NewBucket(BucketOptions{Name: "models", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	gguf, err := tinymodel.Bytes(tinymodel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for key, body := range map[string][]byte{"models/tiny.gguf": gguf} {
		if _, err := bucket.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("models"), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	e, err := NewECS(ECSOptions{Runner: &OllamaRunner{Binary: bin, TempDir: t.TempDir(), Objects: bucket, Log: ollamatest.Logger(t)}, Log: ollamatest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := e.Close(closeCtx); err != nil {
			t.Error(err)
		}
	}()

	cases := []struct {
		name, model, source string
		wantReason          string // "" means the model loads
	}{
		{"gguf upload", "tiny", "s3://models/models/tiny.gguf", ""},
		{"gguf under another name", "tiny-chat", "s3://models/models/tiny.gguf", ""},
		{"pull offline", "llama3.2:1b", "ollama://llama3.2:1b", "ollama pull llama3.2:1b failed"},
		{"missing object", "gone", "s3://models/models/gone.gguf", "NoSuchKey"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := gpuRun("dep-"+strings.ReplaceAll(c.name, " ", "-"), 1024, 2048, 1, "")
			in.Overrides.ContainerOverrides[0].Environment = []ecstypes.KeyValuePair{
				{Name: aws.String(deployment.EnvModel), Value: aws.String(c.model)},
				{Name: aws.String(deployment.EnvSource), Value: aws.String(c.source)},
				{Name: aws.String(deployment.EnvKeepAlive), Value: aws.String("-1")},
			}
			out, err := e.RunTask(ctx, in)
			if err != nil || len(out.Tasks) != 1 {
				t.Fatalf("RunTask: %v %+v", err, out)
			}
			arn := aws.ToString(out.Tasks[0].TaskArn)
			waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if c.wantReason != "" {
				// A failed fetch (the init container) may end the task before it is seen RUNNING.
				stopped, err := e.WaitStatus(waitCtx, arn, StatusStopped)
				if err != nil {
					t.Fatal(err)
				}
				ctr := stopped.Containers[0]
				if stopped.StopCode != "EssentialContainerExited" || aws.ToInt32(ctr.ExitCode) != 1 || !strings.Contains(aws.ToString(ctr.Reason), c.wantReason) {
					t.Fatalf("stopped %s, exit %s, reason %q; want EssentialContainerExited, 1, %q", stopped.StopCode, fmtExit(ctr.ExitCode), aws.ToString(ctr.Reason), c.wantReason)
				}
				return
			}
			task, err := e.WaitStatus(waitCtx, arn, StatusRunning)
			if err != nil {
				t.Fatal(err)
			}
			ep, err := e.Endpoint(ctx, task)
			if err != nil {
				t.Fatal(err)
			}
			client := api.NewClient(mustURL(t, ep), &http.Client{Timeout: 10 * time.Second})
			loaded := false
			for !loaded && waitCtx.Err() == nil {
				ps, err := client.ListRunning(waitCtx)
				if err == nil {
					for _, m := range ps.Models {
						loaded = loaded || m.Name == c.model+":latest"
					}
				}
				if !loaded {
					time.Sleep(50 * time.Millisecond)
				}
			}
			if !loaded {
				t.Fatalf("%s never listed in /api/ps (stage %s)", c.model, e.Stage(arn))
			}
			pid := e.Processes()[0].PID
			if _, err := e.StopTask(ctx, &ecs.StopTaskInput{Task: aws.String(arn), Reason: aws.String("test over")}); err != nil {
				t.Fatal(err)
			}
			stopped, err := e.WaitStatus(waitCtx, arn, StatusStopped)
			if err != nil {
				t.Fatal(err)
			}
			if stopped.StopCode != "UserInitiated" || aws.ToString(stopped.StoppedReason) != "test over" || aws.ToInt32(stopped.Containers[0].ExitCode) != 143 {
				t.Errorf("stopped %s %q exit %s; want UserInitiated, test over, 143", stopped.StopCode, aws.ToString(stopped.StoppedReason), fmtExit(stopped.Containers[0].ExitCode))
			}
			if left := e.Processes(); len(left) != 0 {
				t.Errorf("processes left after StopTask: %+v", left)
			}
			if groupRunning(pid) {
				t.Errorf("process group %d still has live processes", pid)
			}
		})
	}
}

// groupRunning reports whether any non-zombie process of group pgid is left (signal 0 would count zombies).
func groupRunning(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range entries {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
