package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
)

// The stack is synthesised once per test binary (a synth costs seconds of
// jsii round trips); tests that need no template never trigger it.

const testRegion = "us-east-1"

type fixture struct {
	stack          awscdk.Stack
	template       assertions.Template
	annotations    assertions.Annotations
	settings       Settings
	definitionPath string
	definition     string
	// resources is the template's Resources as plain JSON values.
	resources map[string]resource
	outputs   map[string]interface{}
}

type resource struct {
	Type       string                 `json:"Type"`
	Properties map[string]interface{} `json:"Properties"`
	Metadata   map[string]interface{} `json:"Metadata"`
}

var (
	fixtureOnce sync.Once
	theFixture  *fixture
	fixtureErr  error
	tempDirs    []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range tempDirs {
		os.RemoveAll(d)
	}
	jsii.Close()
	os.Exit(code)
}

// synth returns the shared fixture, failing the calling test if synth failed.
func synth(t *testing.T) *fixture {
	t.Helper()
	fixtureOnce.Do(func() { theFixture, fixtureErr = buildFixture(nil) })
	if fixtureErr != nil {
		t.Fatalf("synth: %v", fixtureErr)
	}
	return theFixture
}

// fakeLambdaDist writes a dummy bootstrap per function, so the tests do not
// need the real Lambdas built.
func fakeLambdaDist() (string, error) {
	dir, err := os.MkdirTemp("", "ollama-ecs-dist-")
	if err != nil {
		return "", err
	}
	tempDirs = append(tempDirs, dir)
	for _, fn := range FunctionNames {
		if err := os.MkdirAll(filepath.Join(dir, fn), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, fn, "bootstrap"), []byte("#!/bin/sh\necho "+fn+"\n"), 0o755); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// repoContext is cdk.json's context, so the tests run with the same feature
// flags as `cdk synth`.
func repoContext() (map[string]interface{}, error) {
	raw, err := os.ReadFile(filepath.Join("..", "cdk.json"))
	if err != nil {
		return nil, err
	}
	var cfg struct {
		App     string                 `json:"app"`
		Context map[string]interface{} `json:"context"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("cdk.json: %w", err)
	}
	return cfg.Context, nil
}

func buildFixture(extra map[string]interface{}) (f *fixture, err error) {
	// jsii reports construct errors as panics; make them a test failure.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	dist, err := fakeLambdaDist()
	if err != nil {
		return nil, err
	}
	out, err := os.MkdirTemp("", "ollama-ecs-cdk-out-")
	if err != nil {
		return nil, err
	}
	tempDirs = append(tempDirs, out)
	ctx, err := repoContext()
	if err != nil {
		return nil, err
	}
	definitionPath, err := filepath.Abs(filepath.Join("testdata", "deploy.asl.json"))
	if err != nil {
		return nil, err
	}
	ctx[contextPrefix+"lambdaDist"] = dist
	ctx[contextPrefix+"definitionFile"] = definitionPath
	for k, v := range extra {
		ctx[k] = v
	}

	root, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	app := awscdk.NewApp(&awscdk.AppProps{Context: &ctx, Outdir: jsii.String(out)})
	settings, err := LoadSettings(app.Node(), root)
	if err != nil {
		return nil, err
	}
	if err := CheckLambdaDist(settings.LambdaDist); err != nil {
		return nil, err
	}
	if err := settings.LoadSpotMaxPrices(); err != nil {
		return nil, err
	}
	if err := settings.LoadContainerScripts(); err != nil {
		return nil, err
	}
	definition, err := LoadDefinition(settings.DefinitionFile, WorkflowPlaceholders)
	if err != nil {
		return nil, err
	}
	stack := NewOllamaEcsStack(app, StackID, &OllamaEcsStackProps{
		// Like `cdk synth` without credentials: the CLI knows a region but
		// not the account, so ARNs hold {"Ref": "AWS::AccountId"}.
		StackProps: awscdk.StackProps{Env: &awscdk.Environment{Region: jsii.String(testRegion)}},
		Settings:   settings,
		Definition: definition,
	})
	AddChecks(app)

	f = &fixture{
		stack: stack, settings: settings, definitionPath: definitionPath, definition: definition,
		template:    assertions.Template_FromStack(stack, nil),
		annotations: assertions.Annotations_FromStack(stack),
	}
	raw, err := json.Marshal(f.template.ToJSON())
	if err != nil {
		return nil, err
	}
	var doc struct {
		Resources map[string]resource    `json:"Resources"`
		Outputs   map[string]interface{} `json:"Outputs"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	f.resources, f.outputs = doc.Resources, doc.Outputs
	return f, nil
}

// ofType returns the logical ids of every resource of a type, sorted.
func (f *fixture) ofType(typ string) []string {
	var ids []string
	for id, r := range f.resources {
		if r.Type == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// taskDefinition finds a task definition by family.
func (f *fixture) taskDefinition(t *testing.T, family string) map[string]interface{} {
	t.Helper()
	for _, id := range f.ofType("AWS::ECS::TaskDefinition") {
		if p := f.resources[id].Properties; p["Family"] == family {
			return p
		}
	}
	t.Fatalf("no task definition with family %q", family)
	return nil
}

// container finds a container definition by name.
func container(t *testing.T, td map[string]interface{}, name string) map[string]interface{} {
	t.Helper()
	for _, c := range td["ContainerDefinitions"].([]interface{}) {
		if c := c.(map[string]interface{}); c["Name"] == name {
			return c
		}
	}
	t.Fatalf("task definition %v has no container %q", td["Family"], name)
	return nil
}

// function finds a Lambda by its step name (the description names it).
func (f *fixture) function(t *testing.T, name string) (string, map[string]interface{}) {
	t.Helper()
	for _, id := range f.ofType("AWS::Lambda::Function") {
		if p := f.resources[id].Properties; p["Description"] == "ollama-ecs "+name+" step" {
			return id, p
		}
	}
	t.Fatalf("no Lambda for step %q", name)
	return "", nil
}

// policyStatement is one IAM policy statement, normalised to lists.
type policyStatement struct {
	Actions    []string
	Resources  []interface{}
	Conditions map[string]interface{}
}

// roleStatements collects the statements of every AWS::IAM::Policy attached
// to a role.
func (f *fixture) roleStatements(t *testing.T, roleID string) []policyStatement {
	t.Helper()
	var out []policyStatement
	for _, id := range f.ofType("AWS::IAM::Policy") {
		p := f.resources[id].Properties
		attached := false
		for _, r := range p["Roles"].([]interface{}) {
			if reflect.DeepEqual(r, map[string]interface{}{"Ref": roleID}) {
				attached = true
			}
		}
		if !attached {
			continue
		}
		doc := p["PolicyDocument"].(map[string]interface{})
		for _, s := range doc["Statement"].([]interface{}) {
			s := s.(map[string]interface{})
			if s["Effect"] != "Allow" {
				t.Errorf("policy %s has a non-Allow statement %v", id, s)
			}
			st := policyStatement{Actions: asStrings(s["Action"]), Resources: asList(s["Resource"])}
			if c, ok := s["Condition"].(map[string]interface{}); ok {
				st.Conditions = c
			}
			out = append(out, st)
		}
	}
	return out
}

// functionStatements are the statements of a Lambda's own role.
func (f *fixture) functionStatements(t *testing.T, name string) []policyStatement {
	t.Helper()
	_, p := f.function(t, name)
	roleID := p["Role"].(map[string]interface{})["Fn::GetAtt"].([]interface{})[0].(string)
	return f.roleStatements(t, roleID)
}

// withAction returns the statements that grant the action.
func withAction(stmts []policyStatement, action string) []policyStatement {
	var out []policyStatement
	for _, s := range stmts {
		for _, a := range s.Actions {
			if a == action {
				out = append(out, s)
			}
		}
	}
	return out
}

// allActions lists every action of a set of statements, sorted and unique.
func allActions(stmts []policyStatement) []string {
	set := map[string]bool{}
	for _, s := range stmts {
		for _, a := range s.Actions {
			set[a] = true
		}
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func asList(v interface{}) []interface{} {
	if l, ok := v.([]interface{}); ok {
		return l
	}
	return []interface{}{v}
}

func asStrings(v interface{}) []string {
	var out []string
	for _, x := range asList(v) {
		out = append(out, x.(string))
	}
	return out
}

func ref(id string) map[string]interface{} { return map[string]interface{}{"Ref": id} }

func getAtt(id, attr string) map[string]interface{} {
	return map[string]interface{}{"Fn::GetAtt": []interface{}{id, attr}}
}

// onlyID returns the single logical id with the given prefix among ids.
func onlyID(t *testing.T, ids []string, prefix string) string {
	t.Helper()
	var found []string
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			found = append(found, id)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one logical id starting with %q, got %v", prefix, found)
	}
	return found[0]
}

func mustJSON(v interface{}) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// accountArn is how CDK renders an ARN in this region and the deploying
// account: "arn:aws:<service>:us-east-1:" + account + rest, where rest may hold
// tokens (given as separate parts).
func accountArn(service string, rest ...interface{}) map[string]interface{} {
	parts := []interface{}{"arn:aws:" + service + ":" + testRegion + ":", map[string]interface{}{"Ref": "AWS::AccountId"}}
	parts = append(parts, rest...)
	return map[string]interface{}{"Fn::Join": []interface{}{"", parts}}
}
