package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	aastypes "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
	"github.com/ollama-ecs/ollama-ecs/planner"
	"github.com/ollama-ecs/ollama-ecs/test/moto"
)

// motoWorkflow stands in for workflow/deploy.asl.json in moto, which runs Pass, Choice, Wait and Fail states
// itself (its Lambda tasks would need Docker): the same state names, the same output record, and the failure path
// for a GPU preference.
const motoWorkflow = `{
  "StartAt": "Validate request",
  "States": {
    "Validate request": {"Type": "Pass", "Parameters": {"deploymentId.$": "$$.Execution.Name", "input.$": "$"}, "Next": "Capacity available?"},
    "Capacity available?": {"Type": "Choice", "Choices": [{"And": [
        {"Variable": "$.input.prefer", "IsPresent": true}, {"Variable": "$.input.prefer", "StringEquals": "gpu"}],
        "Next": "No capacity"}], "Default": "Run ECS task"},
    "Run ECS task": {"Type": "Pass", "Next": "Wait for health"},
    "Wait for health": {"Type": "Wait", "Seconds": 1, "Next": "Deployment ready"},
    "Deployment ready": {"Type": "Pass", "Parameters": {
        "deploymentId.$": "$.deploymentId", "model": "mistral:7b", "env": "dev", "endpoint": "http://10.0.1.23:11434",
        "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/ollama/abc", "placement": "Fargate", "instanceType": "m5.large",
        "hourlyCostUSD": 0.0987, "autoStopAt": "2099-01-01T00:00:00Z", "scheduleName": "ollama-ecs-x",
        "fallbacks": [{"placement": "Fargate Spot", "instanceType": "m5.large", "reason": "no spot capacity"}]}, "End": true},
    "No capacity": {"Type": "Fail", "Error": "NoCapacityError", "Cause": "no capacity for any of 2 candidates: EC2 g4dn.xlarge: no free GPU"}
  }
}`

// motoStack is a stack with the real stack's outputs, for discovery through DescribeStacks.
const motoStack = `{
  "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
  "Outputs": {
    "EventBusName": {"Value": "ollama-ecs"},
    "ModelBucketName": {"Value": "ollama-ecs-models"},
    "ModelPrefix": {"Value": "models/"},
    "StateMachineArn": {"Value": "%SM%"},
    "ClusterName": {"Value": "ollama"},
    "ScheduleGroupName": {"Value": "ollama-ecs"},
    "GpuInstanceTypes": {"Value": "g4dn.xlarge,g4dn.2xlarge"},
    "EndpointBase": {"Value": "http://%DNS%"},
    "KeyPrefix": {"Value": "/ollama-ecs/keys"},
    "ListenerArn": {"Value": "%LISTENER%"},
    "LoadBalancerFullName": {"Value": "%LBNAME%"},
    "WakerTargetGroup": {"Value": "ollamaecs-waker"}
  }
}`

type motoEnv struct {
	srv          *moto.Server
	cfg          aws.Config
	stateMachine string
	runner       *steps.RunTask
	net          moto.Network
	lb           moto.LoadBalancer
}

// startMoto starts moto_server and points the commands at it through the SDK's default chain (environment
// credentials, region and endpoint), as a user's shell would.
func startMoto(t *testing.T) *motoEnv {
	srv := moto.Start(t)
	cfg := srv.Config()
	prevClient, prevPoll := awsHTTPClient, pollInterval
	awsHTTPClient, pollInterval = cfg.HTTPClient, 100*time.Millisecond
	t.Cleanup(func() { awsHTTPClient, pollInterval = prevClient, prevPoll })
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL": srv.URL, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
		"AWS_REGION": moto.Region, "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none"),
		"AWS_PROFILE": "", "AWS_SESSION_TOKEN": "", "OLLAMA_ECS_STACK": "", "OLLAMA_ECS_CLUSTER": "",
		"OLLAMA_ECS_STATE_MACHINE": "", "OLLAMA_ECS_BUS": "", "OLLAMA_ECS_BUCKET": "", "OLLAMA_ECS_MODEL_PREFIX": "",
		"OLLAMA_ECS_SCHEDULE_GROUP": "", "USER": "tester",
	} {
		t.Setenv(k, v)
	}
	m := &motoEnv{srv: srv, cfg: cfg}
	m.reset(t)
	return m
}

// reset empties moto and creates the system again: the stack, bus, bucket, schedule group, cluster and state
// machine. moto's executing Step Functions backend runs one execution per reset (a second start deep-copies the
// first's worker thread and fails), so each test that runs an execution starts from here.
func (m *motoEnv) reset(t *testing.T) {
	m.srv.Reset(t)
	for path, body := range map[string]string{
		"/moto-api/config": `{"stepfunctions": {"execute_state_machine": true}}`,
	} {
		resp, err := http.Post(m.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s: %s", path, resp.Status)
		}
	}
	cfg := m.cfg
	ctx := moto.Context(t)
	m.stateMachine = m.newStateMachine(t, "deploy")
	m.runner = m.cluster(t)
	stack := strings.NewReplacer("%SM%", m.stateMachine, "%DNS%", m.lb.DNSName, "%LISTENER%", m.lb.ListenerArn, "%LBNAME%", m.lb.FullName).Replace(motoStack)
	if _, err := cloudformation.NewFromConfig(cfg).CreateStack(ctx, &cloudformation.CreateStackInput{
		StackName: aws.String("OllamaEcs"), TemplateBody: aws.String(stack),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := eventbridge.NewFromConfig(cfg).CreateEventBus(ctx, &eventbridge.CreateEventBusInput{Name: aws.String("ollama-ecs")}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.s3().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("ollama-ecs-models")}); err != nil {
		t.Fatal(err)
	}
	if _, err := scheduler.NewFromConfig(cfg).CreateScheduleGroup(ctx, &scheduler.CreateScheduleGroupInput{Name: aws.String("ollama-ecs")}); err != nil {
		t.Fatal(err)
	}
}

// newStateMachine creates the stand-in workflow.
func (m *motoEnv) newStateMachine(t *testing.T, name string) string {
	sm, err := sfn.NewFromConfig(m.cfg).CreateStateMachine(moto.Context(t), &sfn.CreateStateMachineInput{
		Name: aws.String(name), Definition: aws.String(motoWorkflow), RoleArn: aws.String("arn:aws:iam::123456789012:role/sfn"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(sm.StateMachineArn)
}

func (m *motoEnv) s3() *s3.Client {
	return s3.NewFromConfig(m.cfg, func(o *s3.Options) { o.UsePathStyle = true })
}

// cluster creates the ECS cluster and task definition a deployment runs with, and a RunTask step to start
// deployments the way the state machine does.
func (m *motoEnv) cluster(t *testing.T) *steps.RunTask {
	net := m.srv.Cluster(t, "ollama")
	m.net, m.lb = net, m.srv.LoadBalancer(t, net)
	return &steps.RunTask{ECS: ecs.NewFromConfig(m.cfg), Cluster: "ollama", CPUTaskDefinition: "ollama-cpu",
		Subnets: net.Subnets, SecurityGroups: net.SecurityGroups}
}

// startDeployment runs a task and its auto-stop schedule through the real steps, as a finished execution leaves them.
func (m *motoEnv) startDeployment(t *testing.T, id, model, env string, stopAt time.Time) {
	ctx := moto.Context(t)
	mod, err := catalog.Default().Model(model)
	if err != nil {
		t.Fatal(err)
	}
	p, err := planner.New(catalog.Default(), planner.Request{Model: mod, Env: env, Prefer: planner.PreferCPU})
	if err != nil {
		t.Fatal(err)
	}
	cand := p.Candidates[len(p.Candidates)-1] // on-demand Fargate: moto has no Fargate Spot provider
	for _, c := range p.Candidates {
		if c.Placement == "Fargate" {
			cand = c
		}
	}
	st := deployment.State{
		Request: &deployment.Request{DeploymentID: id, ModelName: model, Source: "ollama://" + model, Env: env, Requester: "tester"},
		Plan:    &p, Capacity: &deployment.CapacityState{Available: true, Candidate: &cand},
	}
	task, err := m.runner.Handle(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	st.Task = &task
	p.AutoStopSeconds = 7200
	a := &steps.AutoStop{Scheduler: scheduler.NewFromConfig(m.cfg), ECS: ecs.NewFromConfig(m.cfg), Cluster: "ollama", Group: "ollama-ecs",
		RoleArn: "arn:aws:iam::123456789012:role/scheduler", StopFunctionArn: "arn:aws:lambda:us-east-1:123456789012:function:teardown", Now: func() time.Time { return stopAt.Add(-2 * time.Hour) }}
	if _, err := a.Handle(ctx, st); err != nil {
		t.Fatal(err)
	}
}

// cli runs one command line and returns its output and error.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(moto.Context(t), args, &out, &errOut)
	return out.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cli(t, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func executionCount(t *testing.T, m *motoEnv) int {
	out, err := sfn.NewFromConfig(m.cfg).ListExecutions(moto.Context(t), &sfn.ListExecutionsInput{StateMachineArn: aws.String(m.stateMachine)})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Executions)
}

func TestCommandsAgainstMoto(t *testing.T) {
	m := startMoto(t)
	// Most subtests point at moto's resources with flags and reset moto (and its stack) between them.
	t.Setenv("OLLAMA_ECS_GPU_TYPES", "g4dn.xlarge,g4dn.2xlarge")

	t.Run("deploy finds the stack, starts the execution and follows it to the record", func(t *testing.T) {
		out := mustCLI(t, "deploy", "mistral:7b", "--prefer", "cpu", "--follow")
		for _, want := range []string{
			"deploying mistral:7b as mistral-7b-dev  env=dev",
			"execution: " + executionARN(m.stateMachine, "mistral-7b-dev"),
			"execution started", "Validate request", "entered", "Wait for health", "done in 1",
			"ready: mistral-7b-dev (mistral:7b, dev)", "endpoint   http://10.0.1.23:11434", "placement  Fargate (m5.large)",
			"cost       $0.0987/hour", "auto-stop  2099-01-01T00:00:00Z (in ", "fell back  from Fargate Spot: no spot capacity",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("the same deploy again starts nothing and says so", func(t *testing.T) {
		before := executionCount(t, m)
		out := mustCLI(t, "deploy", "mistral:7b", "--prefer", "cpu")
		if !strings.Contains(out, "already deployed/deploying as mistral-7b-dev (execution SUCCEEDED") {
			t.Errorf("output:\n%s", out)
		}
		out = mustCLI(t, "deploy", "mistral:7b", "--prefer", "cpu", "--follow", "--output", "json")
		var res struct {
			startResult
			Deployment deployment.Record
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || !res.AlreadyStarted || res.DeploymentID != "mistral-7b-dev" ||
			res.Status != "SUCCEEDED" || res.Deployment.Endpoint != "http://10.0.1.23:11434" || len(res.Deployment.Fallbacks) != 1 {
			t.Errorf("json %+v %v:\n%s", res, err, out)
		}
		if after := executionCount(t, m); after != before {
			t.Errorf("%d executions, want %d", after, before)
		}
	})

	t.Run("history shows the execution as the console does", func(t *testing.T) {
		out := mustCLI(t, "history", "mistral-7b-dev")
		for _, want := range []string{"mistral-7b-dev  SUCCEEDED", "STATE", "Validate request", "Wait for health      Wait", "Succeeded"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if _, err := cli(t, "history", "no-such-deployment"); err == nil || !strings.Contains(err.Error(), `unknown deployment "no-such-deployment"`) {
			t.Errorf("unknown id: %v", err)
		}
	})

	t.Run("a model the planner rejects fails before anything starts", func(t *testing.T) {
		before := executionCount(t, m)
		for _, args := range [][]string{
			{"deploy", "llama2:70b"},
			{"deploy", "mistral:7b", "--prefer", "cpu", "--instance-type", "g4dn.xlarge"},
			{"deploy", "llama3.1:70b", "--prefer", "gpu", "--instance-type", "g4dn.xlarge"},
			{"deploy", "mistral:7b", "--ttl", "5s"},
		} {
			_, err := cli(t, args...)
			if err == nil || strings.Contains(err.Error(), "\n") {
				t.Errorf("%v: error %v, want one line", args, err)
			}
		}
		if after := executionCount(t, m); after != before {
			t.Errorf("%d executions, want %d", after, before)
		}
	})

	t.Run("deploy --via-events puts the request on the bus", func(t *testing.T) {
		out := mustCLI(t, "deploy", "mistral:7b", "--via-events", "--output", "json")
		var res map[string]string
		if err := json.Unmarshal([]byte(out), &res); err != nil || res["eventId"] == "" || res["deploymentId"] != "mistral-7b-dev" || res["eventBus"] != "ollama-ecs" {
			t.Errorf("%v %v", res, err)
		}
		if _, err := cli(t, "deploy", "mistral:7b", "--via-events", "--bus", "no-such-bus"); err == nil {
			t.Error("a missing bus is an error")
		}
	})

	t.Run("a failed deployment ends with the error name and cause and a non-zero exit", func(t *testing.T) {
		m.reset(t)
		out, err := cli(t, "deploy", "mistral:7b", "--prefer", "gpu", "--name", "gpu", "--follow", "--state-machine", m.stateMachine)
		if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "deployment mistral-7b-dev-gpu failed: NoCapacityError: no capacity for any of 2 candidates") {
			t.Errorf("error %v", err)
		}
		if !strings.Contains(out, "No capacity") || !strings.Contains(out, "execution failed") {
			t.Errorf("output:\n%s", out)
		}
		out = mustCLI(t, "history", executionARN(m.stateMachine, "mistral-7b-dev-gpu"), "--output", "json")
		var res struct {
			Status string
			Error  string
			States []stateRunJSON
			Events []json.RawMessage
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != "FAILED" || res.Error != "NoCapacityError" || len(res.Events) == 0 {
			t.Fatalf("%+v %v", res, err)
		}
		last := res.States[len(res.States)-1]
		if last.Name != "No capacity" || last.Status != "Failed" || last.Error != "NoCapacityError" {
			t.Errorf("last state %+v", last)
		}
		// A GPU type the cluster does not run is refused before anything starts.
		if _, err := cli(t, "deploy", "mistral:7b", "--instance-type", "g5.xlarge", "--state-machine", m.stateMachine); err == nil ||
			!strings.Contains(err.Error(), "not one of the cluster's GPU instance types") {
			t.Errorf("deploy on a GPU type outside the cluster: %v", err)
		}
		// The same command again starts nothing and says the earlier attempt failed.
		out, err = cli(t, "deploy", "mistral:7b", "--prefer", "gpu", "--name", "gpu", "--state-machine", m.stateMachine)
		if err == nil || !strings.Contains(err.Error(), "ended FAILED") || !strings.Contains(out, "already tried and ended as mistral-7b-dev-gpu") {
			t.Errorf("redeploy of a failed id: %v\n%s", err, out)
		}
	})

	stopAt := time.Now().UTC().Add(90 * time.Minute).Truncate(time.Minute).Add(time.Minute)
	t.Run("list shows deployments from ECS tags with cost so far and auto-stop", func(t *testing.T) {
		m.reset(t)
		m.startDeployment(t, "mistral-7b-dev", "mistral:7b", "dev", stopAt)
		m.startDeployment(t, "llama2-7b-prod", "llama2:7b", "prod", stopAt.Add(time.Hour))
		out := mustCLI(t, "list")
		for _, want := range []string{"ID", "AUTO-STOP", "llama2-7b-prod", "mistral-7b-dev  mistral:7b", "Fargate (", stopAt.Format("2006-01-02 15:04Z")} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		out = mustCLI(t, "list", "--output", "json", "--cluster", "ollama", "--schedule-group", "ollama-ecs")
		var ds []listedDeployment
		if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 2 {
			t.Fatalf("%v: %s", err, out)
		}
		d := ds[1]
		// moto gives tasks no startedAt or createdAt, so uptime and cost so far are zero here (see the golden test).
		if d.DeploymentID != "mistral-7b-dev" || d.Model != "mistral:7b" || d.Env != "dev" || d.HourlyUSD <= 0 ||
			d.Status != "RUNNING" || d.Placement != "Fargate" || !d.AutoStopAt.Equal(stopAt) || d.Requester != "tester" {
			t.Errorf("deployment %+v", d)
		}
	})

	t.Run("stop stops the task and deletes the schedule; unknown ids are refused", func(t *testing.T) {
		out := mustCLI(t, "stop", "mistral-7b-dev")
		if !strings.Contains(out, "stopped mistral-7b-dev") || !strings.Contains(out, "ollama-ecs-mistral-7b-dev deleted") || !strings.Contains(out, "task/ollama/") {
			t.Errorf("output:\n%s", out)
		}
		out = mustCLI(t, "list", "--output", "json")
		var ds []listedDeployment
		if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 1 || ds[0].DeploymentID != "llama2-7b-prod" {
			t.Errorf("after stop: %v %s", err, out)
		}
		if out, err := cli(t, "stop", "mistral-7b-dev"); err == nil || !strings.Contains(err.Error(), `unknown deployment "mistral-7b-dev"`) {
			t.Errorf("second stop: %v\n%s", err, out)
		}
		out = mustCLI(t, "stop", "llama2-7b-prod", "--via-events")
		if !strings.Contains(out, "stop request for llama2-7b-prod put on bus ollama-ecs") {
			t.Errorf("via events:\n%s", out)
		}
	})

	t.Run("endpoint prints the URL, and the key to those who may read it; scale changes a prod service's bounds", func(t *testing.T) {
		m.reset(t)
		ctx := moto.Context(t)
		base := "http://" + m.lb.DNSName + "/d/chat-prod"
		if out := mustCLI(t, "endpoint", "chat-prod"); strings.TrimSpace(out) != base {
			t.Errorf("endpoint = %q, want %s", out, base)
		}
		if _, err := cli(t, "endpoint", "chat-prod", "--with-key"); err == nil || !strings.Contains(err.Error(), "has no API key") {
			t.Errorf("--with-key without a key: %v", err)
		}
		if _, err := ssm.NewFromConfig(m.cfg).PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/ollama-ecs/keys/chat-prod"),
			Value: aws.String("0123456789abcdef0123456789abcdef"), Type: ssmtypes.ParameterTypeSecureString}); err != nil {
			t.Fatal(err)
		}
		if out := mustCLI(t, "endpoint", "chat-prod", "--with-key"); strings.TrimSpace(out) != base+"/k/0123456789abcdef0123456789abcdef" {
			t.Errorf("endpoint --with-key = %q", out)
		}
		var info endpointInfo
		if err := json.Unmarshal([]byte(mustCLI(t, "endpoint", "chat-prod", "--output", "json")), &info); err != nil || !info.KeyRequired ||
			info.Key != "" || info.OpenAI != base+"/v1" {
			t.Errorf("endpoint json %+v %v: want the key required but not shown", info, err)
		}
		if _, err := cli(t, "scale", "chat-prod", "--min", "2", "--max", "4"); err == nil || !strings.Contains(err.Error(), "no active service") {
			t.Errorf("scale of a deployment without a service: %v", err)
		}
		if _, err := ecs.NewFromConfig(m.cfg).CreateService(ctx, &ecs.CreateServiceInput{Cluster: aws.String("ollama"),
			ServiceName: aws.String("ollama-chat-prod"), TaskDefinition: aws.String("ollama-cpu"), DesiredCount: aws.Int32(1)}); err != nil {
			t.Fatal(err)
		}
		if out := mustCLI(t, "scale", "chat-prod", "--min", "2", "--max", "4"); !strings.Contains(out, "chat-prod scales between 2 and 4 tasks") {
			t.Errorf("scale: %s", out)
		}
		got, err := applicationautoscaling.NewFromConfig(m.cfg).DescribeScalableTargets(ctx, &applicationautoscaling.DescribeScalableTargetsInput{
			ServiceNamespace: aastypes.ServiceNamespaceEcs, ResourceIds: []string{"service/ollama/ollama-chat-prod"}})
		if err != nil || len(got.ScalableTargets) != 1 || aws.ToInt32(got.ScalableTargets[0].MinCapacity) != 2 || aws.ToInt32(got.ScalableTargets[0].MaxCapacity) != 4 {
			t.Errorf("scalable target %+v %v, want 2..4", got, err)
		}
		if _, err := cli(t, "scale", "chat-prod", "--min", "5", "--max", "4"); err == nil || exitCode(err) != 2 {
			t.Errorf("min above max: %v, want a usage error", err)
		}
	})

	t.Run("the console reads the deployed stack through list's and history's code", func(t *testing.T) {
		m.reset(t)
		m.startDeployment(t, "mistral-7b-dev", "mistral:7b", "dev", stopAt)
		ctx := moto.Context(t)
		c := newCloud(m.cfg)
		c.Outputs = map[string]string{outCluster: "ollama", outScheduleGroup: "ollama-ecs", outStateMachine: m.stateMachine,
			outEndpointBase: "http://" + m.lb.DNSName, outKeyPrefix: "/ollama-ecs/keys", outListener: m.lb.ListenerArn}
		backend := awsConsole{c}
		ds, err := backend.deployments(ctx)
		if err != nil || len(ds) != 1 || ds[0].DeploymentID != "mistral-7b-dev" || ds[0].Endpoint != "http://"+m.lb.DNSName+"/d/mistral-7b-dev" {
			t.Fatalf("console deployments %+v %v", ds, err)
		}
		arn, err := backend.deploy(ctx, events.DeployRequest{Model: "mistral:7b", Prefer: "cpu", DeploymentID: "console-moto"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := backend.deploy(ctx, events.DeployRequest{Model: "mistral:7b", TTL: "forever", DeploymentID: "console-bad"}); err == nil ||
			!strings.Contains(err.Error(), `ttl: "forever"`) {
			t.Errorf("a bad TTL from the console: %v", err)
		}
		xs, err := backend.executions(ctx)
		if err != nil || len(xs) != 1 || xs[0].ExecutionArn != arn {
			t.Fatalf("console executions %+v %v", xs, err)
		}
		x, _, err := backend.read(ctx, arn)
		if err != nil || x.Name != "console-moto" {
			t.Errorf("console read %+v %v", x, err)
		}
	})

	t.Run("list shows a deployment whose task was interrupted, until it is restarted", func(t *testing.T) {
		m.reset(t)
		m.startDeployment(t, "mistral-7b-dev", "mistral:7b", "dev", stopAt)
		ctx := moto.Context(t)
		ecsc := ecs.NewFromConfig(m.cfg)
		listed, err := ecsc.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("ollama"), StartedBy: aws.String("mistral-7b-dev")})
		if err != nil || len(listed.TaskArns) != 1 {
			t.Fatalf("%v %+v", err, listed)
		}
		arn := listed.TaskArns[0]
		if _, err := ecsc.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("ollama"), Task: aws.String(arn), Reason: aws.String("Your Spot Task was interrupted.")}); err != nil {
			t.Fatal(err)
		}
		// What the teardown function does on the task's ECS Task State Change.
		if _, err := ecsc.TagResource(ctx, &ecs.TagResourceInput{ResourceArn: aws.String(arn),
			Tags: []ecstypes.Tag{{Key: aws.String(deployment.TagInterrupted), Value: aws.String("SpotInterruption")}}}); err != nil {
			t.Fatal(err)
		}
		out := mustCLI(t, "list")
		if !strings.Contains(out, "mistral-7b-dev") || !strings.Contains(out, "INTERRUPTED (SpotInterruption)") {
			t.Errorf("list:\n%s", out)
		}
		// history shows it too, under the execution's own.
		if _, err := sfn.NewFromConfig(m.cfg).StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(m.stateMachine),
			Name: aws.String("mistral-7b-dev"), Input: aws.String("{}")}); err != nil {
			t.Fatal(err)
		}
		if out := mustCLI(t, "history", "mistral-7b-dev"); !strings.Contains(out, "deployment now: INTERRUPTED (SpotInterruption) on Fargate") {
			t.Errorf("history:\n%s", out)
		}
		m.startDeployment(t, "mistral-7b-dev", "mistral:7b", "dev", stopAt)
		out = mustCLI(t, "list", "--output", "json")
		var ds []listedDeployment
		if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 1 || ds[0].Status != "RUNNING" {
			t.Errorf("after the restart: %v %s", err, out)
		}
		m.reset(t) // moto runs one execution per reset: the next test starts its own
	})

	t.Run("upload puts a GGUF under the prefix, in parts when large, and follows the deployment", func(t *testing.T) {
		dir := t.TempDir()
		small := filepath.Join(dir, "Tiny-Llama.gguf")
		if err := os.WriteFile(small, append([]byte("GGUF"), make([]byte, 1000)...), 0o644); err != nil {
			t.Fatal(err)
		}
		out := mustCLI(t, "upload", small)
		if !strings.Contains(out, "uploaded "+small+" to s3://ollama-ecs-models/models/dev/tiny-llama.gguf (1004 B)") {
			t.Errorf("output:\n%s", out)
		}
		big := filepath.Join(dir, "big.gguf")
		data := append([]byte("GGUF"), bytes.Repeat([]byte{7}, 11<<20)...)
		if err := os.WriteFile(big, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out = mustCLI(t, "upload", big, "--env", "prod", "--part-size", "5", "--output", "json")
		var res uploadResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Parts != 3 || res.Key != "models/prod/big.gguf" {
			t.Fatalf("%+v %v", res, err)
		}
		head, err := m.s3().HeadObject(moto.Context(t), &s3.HeadObjectInput{Bucket: aws.String("ollama-ecs-models"), Key: aws.String(res.Key)})
		if err != nil || aws.ToInt64(head.ContentLength) != int64(len(data)) {
			t.Errorf("head %v %v", head, err)
		}

		// EventBridge's part: once the object is there, start the execution with its Object Created event.
		mf := filepath.Join(dir, "support-bot", "Modelfile")
		_ = os.MkdirAll(filepath.Dir(mf), 0o755)
		if err := os.WriteFile(mf, []byte("FROM mistral:7b\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		uploadSM := m.stateMachine
		ctx, cancel := context.WithCancel(moto.Context(t))
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				h, err := m.s3().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("ollama-ecs-models"), Key: aws.String("models/dev/support-bot/Modelfile")})
				if err == nil {
					ev := objectCreatedEvent("ollama-ecs-models", "models/dev/support-bot/Modelfile", strings.Trim(aws.ToString(h.ETag), `"`), 16)
					_, _ = sfn.NewFromConfig(m.cfg).StartExecution(ctx, &sfn.StartExecutionInput{
						StateMachineArn: aws.String(uploadSM), Name: aws.String("s3-upload-1"), Input: aws.String(string(ev)),
					})
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		out = mustCLI(t, "upload", mf, "--follow", "--state-machine", uploadSM)
		for _, want := range []string{"models/dev/support-bot/Modelfile", "deploying models/dev/support-bot/Modelfile as d-", "ready: s3-upload-1"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if _, err := cli(t, "upload", filepath.Join(dir, "missing.gguf")); err == nil {
			t.Error("a missing file is an error")
		}
		notGGUF := filepath.Join(dir, "fake.gguf")
		_ = os.WriteFile(notGGUF, []byte("hello"), 0o644)
		if _, err := cli(t, "upload", notGGUF); err == nil || !strings.Contains(err.Error(), "not a GGUF file") {
			t.Errorf("not GGUF: %v", err)
		}
		if _, err := cli(t, "upload", small, "--name", "Bad Name!"); err == nil || !strings.Contains(err.Error(), "would not deploy") {
			t.Errorf("bad name: %v", err)
		}
	})

	t.Run("errors are one line: stack not found, no credentials", func(t *testing.T) {
		_, err := cli(t, "list", "--stack", "NoSuchStack")
		if err == nil || !strings.Contains(err.Error(), `stack "NoSuchStack" not found in us-east-1`) {
			t.Errorf("stack: %v", err)
		}
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		_, err = cli(t, "list")
		if err == nil || !strings.HasPrefix(err.Error(), "no AWS credentials") {
			t.Errorf("credentials: %v", err)
		}
	})
}
