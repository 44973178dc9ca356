package test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/workflow"
)

func s3Event(bucket, key string, size int64) []byte {
	raw, _ := json.Marshal(map[string]any{"version": "0", "id": "s3-" + key, "source": events.SourceS3,
		"detail-type": events.DetailTypeObjectCreated, "account": "111122223333", "region": "us-east-1",
		"detail": map[string]any{"version": "0", "bucket": map[string]any{"name": bucket},
			"object": map[string]any{"key": key, "size": size, "etag": "0123", "sequencer": "01"}, "reason": "PutObject"}})
	return raw
}

// ggufClaiming is a GGUF header whose one key claims a string of n bytes.
func ggufClaiming(n uint64) []byte {
	var b bytes.Buffer
	b.WriteString("GGUF")
	for _, v := range []any{uint32(3), uint64(0), uint64(1), n} {
		_ = binary.Write(&b, binary.LittleEndian, v)
	}
	b.Write(make([]byte, 64))
	return b.Bytes()
}

// TestHostileInputChangesNothing sends hostile events through the stack's entry points (the bus rules, direct
// StartExecution, S3 uploads). Each ends in a readable failure: an execution FAILED at "Request rejected" with the
// error name and its cause in the history, or, for an event no rule matches or that fails before any execution,
// a clear error. Nothing is started or scheduled.
func TestHostileInputChangesNothing(t *testing.T) {
	s := stackWithTiny(t, local.Options{})
	tiny := tinyGGUF(t)
	detail := func(kv ...any) map[string]any {
		d := map[string]any{"model": "tiny", "source": tinySource}
		for i := 0; i+1 < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	bus := func(d any) func(t *testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			routed, err := s.PutEvent(ctxFor(t, 10*time.Second), deployEvent("hostile-event", d))
			return routed.ExecutionArn, err
		}
	}
	raw := func(b []byte) func(t *testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			routed, err := s.PutEvent(ctxFor(t, 10*time.Second), b)
			return routed.ExecutionArn, err
		}
	}
	direct := func(req events.DeployRequest) func(t *testing.T) (string, error) {
		return func(t *testing.T) (string, error) { return s.Deploy(ctxFor(t, 10*time.Second), req) }
	}
	upload := func(key string, body []byte) func(t *testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			n := len(s.Executions())
			if err := s.Upload(ctxFor(t, 10*time.Second), key, bytes.NewReader(body)); err != nil {
				return "", err
			}
			started, err := s.WaitForExecution(ctxFor(t, 10*time.Second), n)
			return started.ExecutionArn, err
		}
	}
	// StartExecution with any JSON as input, as a caller with states:StartExecution can.
	startRaw := func(input string) func(t *testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			cfg := s.ECS.Config()
			def, err := workflow.LocalDefinition(cfg.Region, cfg.Account)
			if err != nil {
				return "", err
			}
			return s.Engine.StartExecution(ctxFor(t, 10*time.Second), def, "", json.RawMessage(input),
				engine.WithStateMachineName(local.StateMachine))
		}
	}
	huge := strings.Repeat("a", 300<<10)
	tests := []struct {
		name string
		send func(t *testing.T) (string, error)
		// wantError is the error name the execution fails with at "Request rejected"; empty means the event must
		// be refused before any execution with an error containing refused.
		wantError, refused string
	}{
		{name: "model is a number", send: bus(map[string]any{"model": 7}), wantError: "InvalidEventError"},
		{name: "contextLength is a string", send: bus(detail("contextLength", "big")), wantError: "InvalidEventError"},
		{name: "detail is an array", send: bus([]int{1, 2}), wantError: "InvalidEventError"},
		{name: "detail is null", send: bus(nil), wantError: "InvalidEventError"},
		{name: "misspelt field instancetype", send: bus(detail("instancetype", "g5.xlarge")), wantError: "InvalidEventError"},
		{name: "unknown field", send: bus(detail("command", "rm -rf /")), wantError: "InvalidEventError"},
		{name: "300 KiB event", send: bus(detail("requester", huge)), wantError: "InvalidEventError"},
		{name: "64 KiB model name", send: bus(map[string]any{"model": huge[:64<<10]}), wantError: "InvalidEventError"},
		{name: "unknown model", send: bus(map[string]any{"model": "llama9:70b"}), wantError: "UnknownModelError"},
		{name: "unknown instance type", send: bus(map[string]any{"model": "llama3.2:3b", "instanceType": "x9.mega"}), wantError: "UnknownInstanceTypeError"},
		{name: "GPU type with FARGATE", send: bus(map[string]any{"model": "llama3.2:3b", "instanceType": "g4dn.xlarge", "launchType": "FARGATE"}), wantError: "GPUOnFargateError"},
		{name: "too large for every placement", send: bus(map[string]any{"model": "llama3.1:70b", "launchType": "EC2"}), wantError: "ModelTooLargeError"},
		{name: "negative TTL", send: bus(detail("ttl", "-5m")), wantError: "InvalidEventError"},
		{name: "absurd TTL", send: bus(detail("ttl", "100000h")), wantError: "InvalidEventError"},
		{name: "TTL below a minute", send: bus(detail("ttl", "10s")), wantError: "InvalidEventError"},
		{name: "TTL not a duration", send: bus(detail("ttl", "forever")), wantError: "InvalidEventError"},
		{name: "negative context", send: bus(detail("contextLength", -1)), wantError: "InvalidEventError"},
		{name: "absurd context", send: bus(detail("contextLength", int64(1)<<40)), wantError: "InvalidEventError"},
		{name: "context below 256", send: bus(detail("contextLength", 100)), wantError: "InvalidRequestError"},
		{name: "context above the model's", send: bus(detail("contextLength", 1<<20)), wantError: "InvalidRequestError"},
		{name: "bad env", send: bus(detail("env", "staging")), wantError: "InvalidEventError"},
		{name: "control characters in requester", send: bus(detail("requester", "alice\x00\n")), wantError: "InvalidEventError"},
		{name: "deployment id with a path", send: bus(detail("deploymentId", "../../etc")), wantError: "InvalidEventError"},
		{name: "source in another bucket", send: bus(detail("source", "s3://other-bucket/models/tiny.gguf")), wantError: "InvalidEventError"},
		{name: "source escapes the prefix", send: bus(detail("source", "s3://"+local.Bucket+"/models/../secrets/x.gguf")), wantError: "InvalidEventError"},
		{name: "source outside the prefix", send: bus(detail("source", "s3://"+local.Bucket+"/secrets/x.gguf")), wantError: "InvalidEventError"},
		{name: "source does not exist", send: bus(detail("source", "s3://"+local.Bucket+"/models/absent.gguf")), wantError: "NotGGUFError"},
		{name: "envelope without id", send: raw([]byte(`{"source":"ollama-ecs","detail-type":"Deploy Request","detail":{"model":"tiny"}}`)), wantError: "InvalidEventError"},
		{name: "direct request with a bad id", send: direct(events.DeployRequest{Model: "tiny", Source: tinySource, DeploymentID: "Bad_ID"}), wantError: "InvalidEventError"},
		{name: "direct request without id", send: direct(events.DeployRequest{Model: "tiny"}), refused: "deployment id"},
		{name: "execution input is a string", send: startRaw(`"deploy everything"`), wantError: "InvalidEventError"},
		{name: "execution input is an array", send: startRaw(`[{"model":"tiny"}]`), wantError: "InvalidEventError"},
		{name: "execution input is null", send: startRaw(`null`), wantError: "InvalidEventError"},
		{name: "S3 key with ..", send: raw(s3Event(local.Bucket, "models/../../etc/passwd.gguf", 100)), wantError: "InvalidEventError"},
		{name: "S3 key with //", send: raw(s3Event(local.Bucket, "models//x.gguf", 100)), wantError: "InvalidEventError"},
		{name: "S3 key with a backslash", send: raw(s3Event(local.Bucket, `models/..\x.gguf`, 100)), wantError: "InvalidEventError"},
		{name: "S3 key not a model", send: raw(s3Event(local.Bucket, "models/x.exe", 100)), wantError: "InvalidEventError"},
		{name: "S3 event from another bucket", send: raw(s3Event("other-bucket", "models/x.gguf", 100)), refused: "no rule matches"},
		{name: "S3 event outside the prefix", send: raw(s3Event(local.Bucket, "secrets/x.gguf", 100)), refused: "no rule matches"},
		{name: "unknown source", send: raw([]byte(`{"id":"x","source":"evil","detail-type":"Deploy Request","detail":{}}`)), refused: "no rule matches"},
		{name: "not JSON", send: raw([]byte(`{"source":`)), refused: "not an EventBridge event"},
		{name: "stop request for *", send: raw(stopEvent("*")), refused: "not a deployment id"},
		{name: "upload: not a GGUF", send: upload("models/junk.gguf", []byte(strings.Repeat("not a model ", 100))), wantError: "NotGGUFError"},
		{name: "upload: empty", send: upload("models/empty.gguf", nil), wantError: "InvalidEventError"},
		{name: "upload: header cut short", send: upload("models/cut.gguf", tiny[:2000]), wantError: "NotGGUFError"},
		{name: "upload: tensor data cut short", send: upload("models/half.gguf", tiny[:len(tiny)/2]), wantError: "NotGGUFError"},
		{name: "upload: string of 1 TiB claimed", send: upload("models/claim.gguf", ggufClaiming(1<<40)), wantError: "NotGGUFError"},
		{name: "upload: Modelfile FROM escapes the prefix", send: upload("models/evil/Modelfile", []byte("FROM ../../secrets/x.gguf\n")), wantError: "InvalidEventError"},
		{name: "upload: Modelfile FROM an absolute path", send: upload("models/evil2/Modelfile", []byte("FROM /etc/passwd\n")), wantError: "UnknownModelError"},
		{name: "upload: Modelfile without FROM", send: upload("models/evil3/Modelfile", []byte("PARAMETER x 1\n")), wantError: "InvalidEventError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arn, err := tt.send(t)
			if tt.wantError == "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("want a refusal containing %q, got arn %q error %v", tt.refused, arn, err)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("sending: %v", err)
			}
			ex := waitDone(t, s, arn)
			failedWith(t, ex, tt.wantError, "Request rejected")
			if strings.TrimSpace(ex.Cause) == "" {
				t.Error("no cause")
			}
			var failedEvent bool
			for _, ev := range ex.Events {
				failedEvent = failedEvent || (ev.Type == deployment.EventStateFailed || ev.Type == "ExecutionFailed") && ev.Error == tt.wantError
			}
			if !failedEvent {
				t.Errorf("no history event carries %s", tt.wantError)
			}
			cause := ex.Cause
			if len(cause) > 200 {
				cause = cause[:200] + "..."
			}
			t.Logf("%s: %s", ex.Error, cause)
		})
	}
	if tasks := allTasks(t, s); len(tasks) != 0 {
		t.Errorf("hostile input started %d tasks", len(tasks))
	}
	if names := scheduleNames(t, s); len(names) != 0 {
		t.Errorf("hostile input created schedules %v", names)
	}
	if p := s.ECS.Processes(); len(p) != 0 {
		t.Errorf("hostile input started %d processes", len(p))
	}
}
