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

// stepsConstants reads the constants of functions/steps from its source: infra is its own module and does not
// import the functions, so the names both sides must agree on are checked as text.
func stepsConstants(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "functions", "steps", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no functions/steps sources: %v", err)
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
// the Ollama port, the stop target of the auto-stop schedules and the default task-definition families.
func TestContractWithFunctions(t *testing.T) {
	c := stepsConstants(t)
	for name, want := range map[string]string{
		"ContainerName":      OllamaContainer,
		"FetchContainerName": FetchContainer,
		"OllamaPort":         strconv.Itoa(OllamaPort),
		"StopTaskTarget":     StopTaskTarget,
	} {
		if got := c[name]; got != want {
			t.Errorf("functions/steps %s = %q, the stack has %q", name, got, want)
		}
	}
	config, err := os.ReadFile(filepath.Join("..", "functions", "steps", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range []string{CpuFamily, GpuFamily} {
		if !strings.Contains(string(config), strconv.Quote(family)) {
			t.Errorf("functions/steps/config.go does not default to the stack's family %q", family)
		}
	}
}
