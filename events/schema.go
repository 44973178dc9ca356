package events

import (
	"embed"
	"encoding/json"
	"fmt"
)

// Schemas are the JSON Schemas of each detail and of the envelope, for people and for tools outside Go (the CLI's
// `events validate`, editors). Parse is the authority; tests keep the two in agreement.
//
//go:embed schemas/*.json
var Schemas embed.FS

// SchemaFiles maps each input kind to its detail schema file in Schemas.
var SchemaFiles = map[Kind]string{
	KindDeploy: "schemas/deploy-request.schema.json",
	KindDirect: "schemas/deploy-request.schema.json",
	KindStop:   "schemas/stop-request.schema.json",
	KindUpload: "schemas/object-created.schema.json",
}

// Sample returns an example event of a kind, as the tests check it.
func Sample(kind Kind) ([]byte, error) {
	files := map[Kind]string{
		KindDeploy:      "deploy-request.json",
		KindDirect:      "direct-request.json",
		KindStop:        "stop-request.json",
		KindUpload:      "s3-object-created.json",
		KindTeardown:    "scheduled-teardown.json",
		KindTaskStopped: "ecs-task-stopped.json",
	}
	f, ok := files[kind]
	if !ok {
		return nil, fmt.Errorf("no sample for %q; kinds: deploy, direct, stop, upload, teardown, task-stopped", kind)
	}
	raw, err := samples.ReadFile("testdata/valid/" + f)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return json.MarshalIndent(v, "", "  ")
}

//go:embed testdata/valid/*.json
var samples embed.FS
