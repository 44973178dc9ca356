package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

var testConfig = Config{ModelPrefix: "models/", Bucket: "ollama-ecs-models"}

func compileSchema(t *testing.T, file string) *jsonschema.Schema {
	t.Helper()
	raw, err := Schemas.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(file, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return s
}

// TestSamples parses every sample, checks it against its schema, and round-trips the typed detail.
func TestSamples(t *testing.T) {
	want := map[string]Kind{
		"deploy-request.json": KindDeploy, "deploy-request-gpu.json": KindDeploy, "stop-request.json": KindStop,
		"s3-object-created.json": KindUpload, "s3-modelfile-created.json": KindUpload,
		"scheduled-teardown.json": KindTeardown, "direct-request.json": KindDirect, "ecs-task-stopped.json": KindTaskStopped,
	}
	files, _ := filepath.Glob("testdata/valid/*.json")
	if len(files) != len(want) {
		t.Fatalf("%d sample files, want %d", len(files), len(want))
	}
	envelope := compileSchema(t, "schemas/envelope.schema.json")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, err := Parse(raw, testConfig, "exec-name-1")
			if err != nil {
				t.Fatal(err)
			}
			if in.Kind != want[filepath.Base(f)] {
				t.Fatalf("kind %q, want %q", in.Kind, want[filepath.Base(f)])
			}
			var doc map[string]any
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			detail := any(doc)
			if in.Envelope != nil {
				if err := envelope.Validate(doc); err != nil {
					t.Errorf("envelope schema: %v", err)
				}
				detail = doc["detail"]
			}
			if schema, ok := SchemaFiles[in.Kind]; ok {
				if err := compileSchema(t, schema).Validate(detail); err != nil {
					t.Errorf("detail schema: %v", err)
				}
			}
			// Round trip: the typed value marshals back to the same detail (ids derived only where absent).
			var typed any
			switch {
			case in.Deploy != nil:
				d := *in.Deploy
				if !strings.Contains(string(raw), `"deploymentId"`) {
					d.DeploymentID = ""
				}
				typed = d
			case in.Stop != nil:
				typed = *in.Stop
			default:
				return
			}
			got, _ := json.Marshal(typed)
			var a, b any
			_ = json.Unmarshal(got, &a)
			wantDetail, _ := json.Marshal(detail)
			_ = json.Unmarshal(wantDetail, &b)
			if !jsonEqual(a, b) {
				t.Errorf("round trip:\n got %s\nwant %s", got, wantDetail)
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestStableDeploymentIDs(t *testing.T) {
	for _, f := range []string{"deploy-request.json", "s3-object-created.json"} {
		raw, _ := os.ReadFile("testdata/valid/" + f)
		a, err := Parse(raw, testConfig, "one")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Parse(raw, testConfig, "another-execution")
		if a.DeploymentID == "" || a.DeploymentID != b.DeploymentID || !deploymentIDPattern.MatchString(a.DeploymentID) {
			t.Errorf("%s: ids %q and %q", f, a.DeploymentID, b.DeploymentID)
		}
	}
	// A different upload of the same key is a different deployment.
	raw, _ := os.ReadFile("testdata/valid/s3-object-created.json")
	other := bytes.Replace(raw, []byte("IYV3p45BhZA0"), []byte("second-version"), 1)
	a, _ := Parse(raw, testConfig, "")
	b, _ := Parse(other, testConfig, "")
	if a.DeploymentID == b.DeploymentID {
		t.Error("two object versions share a deployment id")
	}
	// A direct request takes the execution name as its id.
	d, err := Parse([]byte(`{"model":"mistral:7b"}`), testConfig, "my-deploy-1")
	if err != nil || d.DeploymentID != "my-deploy-1" {
		t.Errorf("direct id %q, %v", d.DeploymentID, err)
	}
}

func TestUploadNaming(t *testing.T) {
	raw, _ := os.ReadFile("testdata/valid/s3-modelfile-created.json")
	in, err := Parse(raw, testConfig, "")
	if err != nil {
		t.Fatal(err)
	}
	if u := in.Upload; u.ModelName != "support-bot" || !u.Modelfile || u.Env != "prod" {
		t.Errorf("upload %+v", u)
	}
	raw, _ = os.ReadFile("testdata/valid/s3-object-created.json")
	in, _ = Parse(raw, testConfig, "")
	if u := in.Upload; u.ModelName != "tiny-llama" || u.Modelfile || u.Env != "dev" {
		t.Errorf("upload %+v", u)
	}
}

// TestRejects checks that each hostile or mistaken input is refused with a message naming the problem.
func TestRejects(t *testing.T) {
	deploy := func(detail string) string {
		return `{"id":"e1","source":"ollama-ecs","detail-type":"Deploy Request","detail":` + detail + `}`
	}
	s3 := func(bucket, key string) string {
		return `{"id":"e2","source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"` + bucket +
			`"},"object":{"key":"` + key + `","size":10,"etag":"x","sequencer":"1"}}}`
	}
	tests := []struct{ name, event, wantInMessage string }{
		{"not JSON", `{"model":`, "not a JSON object"},
		{"array", `[1,2]`, "not a JSON object"},
		{"oversized", `{"model":"` + strings.Repeat("a", MaxEventBytes) + `"}`, "at most"},
		{"typo field", deploy(`{"model":"llama2:7b","instancetype":"g4dn.xlarge"}`), `unknown field "instancetype"`},
		{"wrong type", deploy(`{"model":"llama2:7b","contextLength":"big"}`), `"contextLength" must be int`},
		{"missing model", deploy(`{"env":"dev"}`), "detail.model: missing"},
		{"bad env", deploy(`{"model":"llama2:7b","env":"staging"}`), "detail.env"},
		{"negative context", deploy(`{"model":"llama2:7b","contextLength":-5}`), "detail.contextLength"},
		{"absurd context", deploy(`{"model":"llama2:7b","contextLength":99999999}`), "detail.contextLength"},
		{"negative ttl", deploy(`{"model":"llama2:7b","ttl":"-5m"}`), "detail.ttl"},
		{"absurd ttl", deploy(`{"model":"llama2:7b","ttl":"9000h"}`), "detail.ttl"},
		{"ttl not a duration", deploy(`{"model":"llama2:7b","ttl":"soon"}`), "detail.ttl"},
		{"negative speed", deploy(`{"model":"llama2:7b","minTokensPerSecond":-1}`), "detail.minTokensPerSecond"},
		{"absurd ttft", deploy(`{"model":"llama2:7b","maxTimeToFirstToken":99999}`), "detail.maxTimeToFirstToken"},
		{"bad optimize", deploy(`{"model":"llama2:7b","optimize":"fastest"}`), "detail.optimize"},
		{"model with shell chars", deploy(`{"model":"llama2;rm -rf /"}`), "detail.model"},
		{"bad deployment id", deploy(`{"model":"llama2:7b","deploymentId":"../../etc"}`), "detail.deploymentId"},
		{"null detail", deploy(`null`), "detail: missing"},
		{"no id", `{"source":"ollama-ecs","detail-type":"Deploy Request","detail":{"model":"x"}}`, "id: missing"},
		{"unknown detail type", `{"id":"1","source":"ollama-ecs","detail-type":"Reboot","detail":{}}`, "unknown event"},
		{"key outside prefix", s3("ollama-ecs-models", "other/x.gguf"), "outside the model prefix"},
		{"path trick", s3("ollama-ecs-models", "models/../secrets/x.gguf"), "not a clean path"},
		{"double slash", s3("ollama-ecs-models", "models//x.gguf"), "not a clean path"},
		{"other bucket", s3("someone-else", "models/x.gguf"), "not the model bucket"},
		{"not a model file", s3("ollama-ecs-models", "models/readme.txt"), "neither"},
		{"nested gguf", s3("ollama-ecs-models", "models/a/b/c.gguf"), "neither"},
		{"bad model name", s3("ollama-ecs-models", "models/$(x).gguf"), "does not give a model name"},
		{"direct with typo", `{"model":"llama2:7b","evn":"dev"}`, `unknown field "evn"`},
		{"invalid utf8", "{\"model\":\"\xff\"}", "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.event), testConfig, "exec")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %T %v, want *events.Error", err, err)
			}
			if !strings.Contains(err.Error(), tt.wantInMessage) {
				t.Errorf("message %q lacks %q", err, tt.wantInMessage)
			}
		})
	}
}
