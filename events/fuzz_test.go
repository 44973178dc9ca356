package events

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any bytes either parse into a consistent Input or are refused with an *Error; never a panic.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/valid/*.json")
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"model":"llama2:7b","ttl":"-1h"}`))
	f.Add([]byte(`{"id":"1","source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"b"},"object":{"key":"models/../x.gguf"}}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		in, err := Parse(raw, Config{ModelPrefix: "models/"}, "fuzz-exec")
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		switch in.Kind {
		case KindDeploy, KindDirect:
			if in.Deploy == nil || in.Deploy.Validate() != nil || !ValidDeploymentID(in.DeploymentID) {
				t.Fatalf("accepted an invalid deploy request %+v", in.Deploy)
			}
		case KindUpload:
			if in.Upload == nil || !ValidDeploymentID(in.DeploymentID) || in.Upload.ModelName == "" {
				t.Fatalf("accepted an invalid upload %+v", in.Upload)
			}
		case KindStop:
			if in.Stop == nil || !ValidDeploymentID(in.DeploymentID) {
				t.Fatalf("accepted an invalid stop %+v", in.Stop)
			}
		case KindTaskStopped:
			if in.TaskStopped == nil || in.TaskStopped.TaskArn == "" || (in.DeploymentID != "" && !ValidDeploymentID(in.DeploymentID)) {
				t.Fatalf("accepted an invalid task state change %+v", in.TaskStopped)
			}
		case KindTeardown:
		default:
			t.Fatalf("unknown kind %q", in.Kind)
		}
	})
}
