package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// contractConstants reads the constants of the deployment package (the contract the functions, the local stack
// and the command line share) from its source: infra is its own module and does not import it, so the names both
// sides must agree on are checked as text.
func contractConstants(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "deployment", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deployment sources: %v", err)
	}
	consts := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			gen, ok := d.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
							v, _ := strconv.Unquote(lit.Value)
							if v == "" {
								v = lit.Value
							}
							consts[name.Name] = v
						}
					}
				}
			}
		}
	}
	return consts
}

// TestContractWithFunctions keeps what the stack defines and what the Lambda code assumes equal: container names,
// the Ollama port, the names the stack's IAM is scoped by, the key prefix and the default task-definition families.
func TestContractWithFunctions(t *testing.T) {
	c := contractConstants(t)
	for name, want := range map[string]string{
		"ContainerName":       OllamaContainer,
		"FetchContainerName":  FetchContainer,
		"OllamaPort":          strconv.Itoa(OllamaPort),
		"TargetGroupPrefix":   TargetGroupPrefix,
		"ServicePrefix":       "ollama-",
		"ServiceFamilyPrefix": "ollama-svc-",
	} {
		if got := c[name]; got != want {
			t.Errorf("deployment.%s = %q, the stack has %q", name, got, want)
		}
	}
	config, err := os.ReadFile(filepath.Join("..", "deployment", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{KeyPrefix, SleepPrefix} {
		if !strings.Contains(string(config), strconv.Quote(prefix)) {
			t.Errorf("deployment/config.go does not default to the stack's prefix %q", prefix)
		}
	}
	for _, family := range []string{CpuFamily, GpuFamily} {
		if !strings.Contains(string(config), strconv.Quote(family)) {
			t.Errorf("deployment/config.go does not default to the stack's family %q", family)
		}
	}
}

// TestEnvironmentIsTheFunctionsSettings: every environment variable the stack sets on a function is one the
// functions read (a deployment.Setting* constant), and every setting but the tuning knobs is set somewhere.
func TestEnvironmentIsTheFunctionsSettings(t *testing.T) {
	settings := map[string]bool{}
	for name, v := range contractConstants(t) {
		if strings.HasPrefix(name, "Setting") {
			settings[v] = true
		}
	}
	if len(settings) < 10 {
		t.Fatalf("read %d Setting constants from deployment/: the parse does not work", len(settings))
	}
	f := synth(t)
	set := map[string]bool{}
	for _, name := range FunctionNames {
		_, p := f.function(t, name)
		for key := range p["Environment"].(map[string]interface{})["Variables"].(map[string]interface{}) {
			if !settings[key] {
				t.Errorf("the stack sets %s on %s, which no function reads", key, name)
			}
			set[key] = true
		}
	}
	tuning := map[string]bool{"HEALTH_WATCH": true, "HEALTH_POLL": true, "PROVISIONING_TIMEOUT": true, "SCALE_TARGET_REQUESTS": true, "WAKES_PER_DAY": true, "MODEL_CACHE_DIR": true}
	for key := range settings {
		if !set[key] && !tuning[key] {
			t.Errorf("no function gets %s from the stack", key)
		}
	}
}
