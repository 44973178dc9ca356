package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPlaceholders(t *testing.T) {
	cases := []struct {
		name, body string
		subs       []string
		wantErr    []string
	}{
		{"match", `{"a":"${A}","b":"${B}","again":"${A}"}`, []string{"A", "B"}, nil},
		{"placeholder without substitution", `{"a":"${A}","c":"${C}"}`, []string{"A"}, []string{"${C}"}},
		{"substitution never used", `{"a":"${A}"}`, []string{"A", "Unused"}, []string{"Unused"}},
		{"both", `{"x":"${X}"}`, []string{"Y"}, []string{"${X}", "Y"}},
		{"JSONPath is not a placeholder", `{"p":"$.a","q":"${A}"}`, []string{"A"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckPlaceholders(c.body, c.subs)
			if (err != nil) != (len(c.wantErr) > 0) {
				t.Fatalf("err = %v, want errors mentioning %v", err, c.wantErr)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to mention %s", err, w)
				}
			}
		})
	}
}

func TestLoadDefinitionErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadDefinition(filepath.Join(dir, "missing.json"), WorkflowPlaceholders); err == nil || !strings.Contains(err.Error(), "definitionFile") {
		t.Errorf("missing file: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"States": `), 0o644)
	if _, err := LoadDefinition(bad, WorkflowPlaceholders); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("bad JSON: err = %v", err)
	}
	extra := filepath.Join(dir, "extra.json")
	os.WriteFile(extra, []byte(`{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"${TeardownFunctionArn}","End":true}}}`), 0o644)
	_, err := LoadDefinition(extra, WorkflowPlaceholders)
	if err == nil || !strings.Contains(err.Error(), "${TeardownFunctionArn}") || !strings.Contains(err.Error(), "ValidateFunctionArn") {
		t.Errorf("mismatch: err = %v", err)
	}
}

// TestStandInDefinition keeps the test stand-in honest: it uses exactly the
// placeholders the stack substitutes.
func TestStandInDefinition(t *testing.T) {
	if _, err := LoadDefinition(filepath.Join("testdata", "deploy.asl.json"), WorkflowPlaceholders); err != nil {
		t.Fatal(err)
	}
}

// TestWorkflowDefinition checks the real ASL file the CDK app deploys: it
// must exist and use exactly the stack's placeholders, or `cdk synth` fails.
func TestWorkflowDefinition(t *testing.T) {
	path := filepath.Join("..", "workflow", "deploy.asl.json")
	if _, err := LoadDefinition(path, WorkflowPlaceholders); err != nil {
		t.Fatal(err)
	}
}
