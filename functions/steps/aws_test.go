package steps

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/planner"
	"github.com/ollama-ecs/ollama-ecs/test/moto"
)

// TestAdaptersAgainstMoto runs the steps' AWS calls against moto_server, so the requests they build are real
// wire requests and the answers are parsed by the SDK as on AWS.
func TestAdaptersAgainstMoto(t *testing.T) {
	srv := moto.Start(t)
	cfg := srv.Config()
	ecsc, s3c, sched := ecs.NewFromConfig(cfg), s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }),
		scheduler.NewFromConfig(cfg)
	asg := autoscaling.NewFromConfig(cfg)
	ec2c := ec2.NewFromConfig(cfg)
	runner := &RunTask{ECS: ecsc, Cluster: "ollama", CPUTaskDefinition: "ollama-cpu", GPUTaskDefinition: "ollama-gpu"}

	setupCluster := func(t *testing.T) {
		srv.Reset(t)
		net := srv.Cluster(t, "ollama")
		runner.Subnets, runner.SecurityGroups = net.Subnets, net.SecurityGroups
	}
	plan := func(t *testing.T, model string, prefer string) *planner.Plan {
		m, _ := catalog.Default().Model(model)
		// The moto cluster has no capacity providers, so no Spot ones.
		p, err := planner.New(catalog.Default(), planner.Request{Model: m, Env: "dev", Prefer: prefer, GPUSpotInstanceTypes: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	request := &deployment.Request{DeploymentID: "d-moto-1", ModelName: "mistral:7b", Source: "ollama://mistral:7b", Env: "dev", Requester: "tester"}

	t.Run("run a Fargate task with tags, startedBy and overrides", func(t *testing.T) {
		setupCluster(t)
		ctx := moto.Context(t)
		p := plan(t, "mistral:7b", planner.PreferCPU)
		cand := p.Candidates[1] // on-demand Fargate: moto has no Fargate Spot provider
		info, err := runner.Handle(ctx, deployment.State{Request: request, Plan: p, Capacity: &deployment.CapacityState{Available: true, Candidate: &cand}})
		if err != nil {
			t.Fatal(err)
		}
		out, err := ecsc.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("ollama"), Tasks: []string{info.TaskArn},
			Include: []ecstypes.TaskField{ecstypes.TaskFieldTags}})
		if err != nil || len(out.Tasks) != 1 {
			t.Fatalf("describe: %v %+v", err, out)
		}
		task := out.Tasks[0]
		if aws.ToString(task.StartedBy) != "d-moto-1" || deployment.TagValue(task.Tags, deployment.TagDeploymentID) != "d-moto-1" ||
			deployment.TagValue(task.Tags, deployment.TagManagedBy) != deployment.ManagedByValue || deployment.TagValue(task.Tags, deployment.TagModel) != "mistral:7b" {
			t.Errorf("startedBy %q tags %+v", aws.ToString(task.StartedBy), task.Tags)
		}
		if !strings.Contains(aws.ToString(task.TaskDefinitionArn), "ollama-cpu") {
			t.Errorf("task definition %s", aws.ToString(task.TaskDefinitionArn))
		}
	})

	t.Run("GPU RunTask: placed on a matching instance, and an empty answer is a capacity error", func(t *testing.T) {
		setupCluster(t)
		ctx := moto.Context(t)
		images, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{})
		if err != nil || len(images.Images) == 0 {
			t.Fatalf("images: %v", err)
		}
		inst, err := ec2c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: images.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			InstanceType: ec2types.InstanceTypeG4dnXlarge})
		if err != nil {
			t.Fatal(err)
		}
		doc, _ := json.Marshal(map[string]string{"instanceId": aws.ToString(inst.Instances[0].InstanceId), "instanceType": "g4dn.xlarge"})
		if _, err := ecsc.RegisterContainerInstance(ctx, &ecs.RegisterContainerInstanceInput{Cluster: aws.String("ollama"),
			InstanceIdentityDocument: aws.String(string(doc)),
			TotalResources:           []ecstypes.Resource{{Name: aws.String("GPU"), Type: aws.String("STRINGSET"), StringSetValue: []string{"gpu-0"}}}}); err != nil {
			t.Fatal(err)
		}
		p := plan(t, "mistral:7b", planner.PreferGPU)
		cand := p.Candidates[0]
		info, err := runner.Handle(ctx, deployment.State{Request: request, Plan: p, Capacity: &deployment.CapacityState{Available: true, Candidate: &cand}})
		if err != nil || !info.GPU || info.InstanceType != "g4dn.xlarge" {
			t.Fatalf("GPU run: %+v %v", info, err)
		}
		// moto answers a task it cannot place with no task and no failure: that must not pass for a success.
		if _, err := ecsc.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
			Family: aws.String("ollama-gpu-huge"), NetworkMode: ecstypes.NetworkModeAwsvpc,
			RequiresCompatibilities: []ecstypes.Compatibility{ecstypes.CompatibilityEc2},
			ContainerDefinitions:    []ecstypes.ContainerDefinition{{Name: aws.String(deployment.ContainerName), Image: aws.String("x"), Memory: aws.Int32(400000)}},
		}); err != nil {
			t.Fatal(err)
		}
		huge := *runner
		huge.GPUTaskDefinition = "ollama-gpu-huge"
		_, err = huge.Handle(ctx, deployment.State{Request: &deployment.Request{DeploymentID: "d-moto-2", ModelName: "mistral:7b", Env: "dev"}, Plan: p,
			Capacity: &deployment.CapacityState{Available: true, Candidate: &cand}})
		var capErr *deployment.CapacityError
		if !errors.As(err, &capErr) {
			t.Fatalf("got %T %v, want *deployment.CapacityError", err, err)
		}
	})

	t.Run("launch checks: the vCPU quota, running G instances and the group's activities", func(t *testing.T) {
		setupCluster(t)
		ctx := moto.Context(t)
		l := &Launches{ECS: ecsc, Groups: asg, Quotas: servicequotas.NewFromConfig(cfg), Instances: ec2c}
		// moto reports Service Quotas for vpc only (NoSuchResourceException for the EC2 code, which sends the check
		// to the default quota) and does not implement GetAWSDefaultServiceQuota: its 500 must come back as a
		// retryable AWSServiceError, never as room.
		_, _, err := l.QuotaRoom(ctx, "g4dn.xlarge", false)
		var svc *deployment.AWSServiceError
		if !errors.As(err, &svc) || !strings.Contains(svc.Op, "GetAWSDefaultServiceQuota") {
			t.Fatalf("quota: %T %v, want an deployment.AWSServiceError from the default quota", err, err)
		}
		images, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{})
		if err != nil || len(images.Images) == 0 {
			t.Fatalf("images: %v", err)
		}
		for _, typ := range []ec2types.InstanceType{ec2types.InstanceTypeG4dnXlarge, ec2types.InstanceTypeG4dn2xlarge, ec2types.InstanceTypeM5Large} {
			if _, err := ec2c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: images.Images[0].ImageId, MinCount: aws.Int32(1),
				MaxCount: aws.Int32(1), InstanceType: typ}); err != nil {
				t.Fatal(err)
			}
		}
		if used, err := l.runningVCPUs(ctx, vcpuQuotas, "L-DB2E81BA", false); err != nil || used != 4+8 {
			t.Errorf("G-family vCPUs in use: %d %v, want 12 (g4dn.xlarge + g4dn.2xlarge, not the m5)", used, err)
		}
		if _, err := asg.CreateLaunchConfiguration(ctx, &autoscaling.CreateLaunchConfigurationInput{LaunchConfigurationName: aws.String("lc"),
			ImageId: images.Images[0].ImageId, InstanceType: aws.String("g4dn.xlarge")}); err != nil {
			t.Fatal(err)
		}
		if _, err := asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("asg-g4dn"),
			LaunchConfigurationName: aws.String("lc"), MinSize: aws.Int32(0), MaxSize: aws.Int32(2), DesiredCapacity: aws.Int32(1),
			AvailabilityZones: []string{"us-east-1a"}}); err != nil {
			t.Fatal(err)
		}
		if failure, err := l.LaunchFailure(ctx, "asg-g4dn", time.Now().Add(-time.Hour)); err != nil || failure != "" {
			t.Errorf("a group whose launch succeeded: %q %v", failure, err)
		}
	})

	t.Run("capacity: Fargate passes, EC2 without instances is refused with a reason", func(t *testing.T) {
		setupCluster(t)
		ctx := moto.Context(t)
		c := &Capacity{ECS: ecsc, Launches: &Launches{ECS: ecsc, Groups: asg}, Cluster: "ollama"}
		p := plan(t, "mistral:7b", planner.PreferGPU)
		st, err := c.Handle(ctx, deployment.State{Request: request, Plan: p})
		if err != nil || st.Available || len(st.Attempts) != 1 || !strings.Contains(st.Attempts[0].Reason, "no g4dn.xlarge container instance") {
			t.Fatalf("first GPU candidate: %+v %v", st, err)
		}
		// Walk the ladder to the end: every GPU type refused, then the Fargate rungs pass.
		for !st.Available {
			st, err = c.Handle(ctx, deployment.State{Request: request, Plan: p, Capacity: &st})
			if err != nil {
				t.Fatal(err)
			}
		}
		if st.Candidate.LaunchType != planner.LaunchTypeFargate {
			t.Errorf("ladder ended on %+v", st.Candidate)
		}
		gpuOnly := *p
		gpuOnly.Candidates = p.Candidates[:1]
		_, err = c.Handle(ctx, deployment.State{Request: request, Plan: &gpuOnly, Capacity: &deployment.CapacityState{Attempts: []deployment.Attempt{{Reason: "x"}}}})
		var none *deployment.NoCapacityError
		if !errors.As(err, &none) {
			t.Errorf("past the last candidate: %T %v", err, err)
		}
	})

	t.Run("autostop creates a one-time self-deleting schedule, and a retry finds it", func(t *testing.T) {
		setupCluster(t)
		ctx := moto.Context(t)
		p := plan(t, "mistral:7b", planner.PreferCPU)
		fargate := p.Candidates[1]
		info, err := runner.Handle(ctx, deployment.State{Request: request, Plan: p, Capacity: &deployment.CapacityState{Available: true, Candidate: &fargate}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sched.CreateScheduleGroup(ctx, &scheduler.CreateScheduleGroupInput{Name: aws.String("ollama-ecs")}); err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 11, 27, 10, 0, 30, 0, time.UTC)
		stopFn := "arn:aws:lambda:us-east-1:123456789012:function:teardown"
		a := &AutoStop{Scheduler: sched, ECS: ecsc, Cluster: "ollama", Group: "ollama-ecs", RoleArn: "arn:aws:iam::123456789012:role/sched",
			StopFunctionArn: stopFn, IdleWindow: 30 * time.Minute, MaxLifetime: 12 * time.Hour, Now: func() time.Time { return now }}
		st := deployment.State{Request: request, Plan: &planner.Plan{AutoStopSeconds: 3600}, Task: &deployment.TaskInfo{TaskArn: info.TaskArn}}
		res, err := a.Handle(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if res.StopAt != "2026-11-27T11:01:00Z" || res.ScheduleName != "ollama-ecs-d-moto-1" {
			t.Errorf("result %+v", res)
		}
		got, err := sched.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(res.ScheduleName), GroupName: aws.String("ollama-ecs")})
		if err != nil {
			t.Fatal(err)
		}
		var input deployment.AutoStopPayload
		_ = json.Unmarshal([]byte(aws.ToString(got.Target.Input)), &input)
		if aws.ToString(got.ScheduleExpression) != "at(2026-11-27T11:01:00)" || aws.ToString(got.Target.Arn) != stopFn ||
			got.ActionAfterCompletion != "NONE" || input.AutoStop == nil || input.AutoStop.Task != st.Task.TaskArn ||
			input.AutoStop.IdleSeconds != 1800 || input.AutoStop.StopBy != "2026-11-27T22:01:00Z" {
			t.Errorf("schedule %s target %s action %s input %+v", aws.ToString(got.ScheduleExpression), aws.ToString(got.Target.Arn), got.ActionAfterCompletion, input.AutoStop)
		}
		if _, err := a.Handle(ctx, st); err != nil {
			t.Errorf("retried create: %v", err)
		}
		// Cleanup stops the task and deletes the schedule; a second cleanup finds nothing and is fine.
		s := &deployment.Stopper{ECS: ecsc, Scheduler: sched, Cluster: "ollama", Group: "ollama-ecs"}
		for i, want := range []int{1, 0} {
			res, err := s.StopDeployment(ctx, "d-moto-1", "test", deployment.Forget)
			if err != nil || len(res.Schedules) != want || len(res.Tasks) != want {
				t.Errorf("cleanup %d: %+v %v", i, res, err)
			}
		}
		// A task stopped before the step runs: the step reports it, so the state machine cleans up.
		_, err = a.Handle(ctx, st)
		var stopped *deployment.TaskStoppedError
		if !errors.As(err, &stopped) {
			t.Errorf("auto-stop of a stopped task: %T %v", err, err)
		}
	})

	t.Run("cleanup and teardown stop only this system's tasks", func(t *testing.T) {
		setupCluster(t)
		ctx := moto.Context(t)
		if _, err := sched.CreateScheduleGroup(ctx, &scheduler.CreateScheduleGroupInput{Name: aws.String("ollama-ecs")}); err != nil {
			t.Fatal(err)
		}
		p := plan(t, "mistral:7b", planner.PreferCPU)
		cand := p.Candidates[1]
		var arns []string
		for _, r := range []deployment.Request{
			{DeploymentID: "dev-one", ModelName: "mistral:7b", Env: "dev"},
			{DeploymentID: "dev-two", ModelName: "mistral:7b", Env: "dev"},
			{DeploymentID: "prod-one", ModelName: "mistral:7b", Env: "prod"},
		} {
			info, err := runner.Handle(ctx, deployment.State{Request: &r, Plan: p, Capacity: &deployment.CapacityState{Available: true, Candidate: &cand}})
			if err != nil {
				t.Fatal(err)
			}
			arns = append(arns, info.TaskArn)
		}
		// A task someone else started in the same cluster, with a look-alike startedBy.
		other, err := ecsc.RunTask(ctx, &ecs.RunTaskInput{Cluster: aws.String("ollama"), TaskDefinition: aws.String("ollama-cpu"),
			StartedBy: aws.String("dev-one"), LaunchType: ecstypes.LaunchTypeFargate,
			NetworkConfiguration: &ecstypes.NetworkConfiguration{AwsvpcConfiguration: &ecstypes.AwsVpcConfiguration{Subnets: runner.Subnets, SecurityGroups: runner.SecurityGroups}}})
		if err != nil {
			t.Fatal(err)
		}
		td := &Teardown{Stopper: &deployment.Stopper{ECS: ecsc, Scheduler: sched, Cluster: "ollama", Group: "ollama-ecs"}}
		raw, _ := json.Marshal(map[string]any{"version": "0", "id": "x", "source": "aws.events", "detail-type": "Scheduled Event", "detail": map[string]any{}})
		res, err := td.Handle(ctx, raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) != 2 || len(res.Deployments) != 2 {
			t.Errorf("teardown stopped %+v, want the two dev deployments", res)
		}
		status := func(arn string) string {
			out, _ := ecsc.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("ollama"), Tasks: []string{arn}})
			return aws.ToString(out.Tasks[0].DesiredStatus)
		}
		if status(arns[0]) != "STOPPED" || status(arns[1]) != "STOPPED" || status(arns[2]) != "RUNNING" ||
			status(aws.ToString(other.Tasks[0].TaskArn)) != "RUNNING" {
			t.Errorf("statuses: dev %s %s prod %s other %s", status(arns[0]), status(arns[1]), status(arns[2]), status(aws.ToString(other.Tasks[0].TaskArn)))
		}
	})

	t.Run("validate sizes an uploaded GGUF from its header and refuses other files", func(t *testing.T) {
		srv.Reset(t)
		ctx := moto.Context(t)
		if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("models-bucket")}); err != nil {
			t.Fatal(err)
		}
		gguf, err := tinymodel.Bytes(tinymodel.Options{})
		if err != nil {
			t.Fatal(err)
		}
		put := func(key string, body []byte) {
			if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("models-bucket"), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
				t.Fatal(err)
			}
		}
		put("models/tiny.gguf", gguf)
		put("models/notes.gguf", bytes.Repeat([]byte("not a model "), 100))
		hostile := append([]byte("GGUF\x03\x00\x00\x00"), make([]byte, 16)...)
		hostile[8+8] = 1                                                          // one KV
		hostile = append(hostile, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f) // its key claims 9 EB
		put("models/hostile.gguf", hostile)
		v := &Validate{Catalog: catalog.Default(), S3: s3c, Bucket: "models-bucket", Prefix: "models/"}
		event := func(key string, size int) json.RawMessage {
			raw, _ := json.Marshal(map[string]any{"version": "0", "id": "ev-" + key, "source": "aws.s3", "detail-type": "Object Created",
				"account": "123456789012", "detail": map[string]any{"bucket": map[string]any{"name": "models-bucket"},
					"object": map[string]any{"key": key, "size": size, "etag": "e", "sequencer": "1"}}})
			return raw
		}
		out, err := v.Handle(ctx, ValidateInput{Event: event("models/tiny.gguf", len(gguf))})
		if err != nil {
			t.Fatal(err)
		}
		m := out.Request.Model
		if m.Family != "llama" || m.BlockCount != 2 || m.EmbeddingLength != 64 || m.HeadCountKV != 2 || m.SizeBytes != int64(len(gguf)) ||
			out.Request.Source != "s3://models-bucket/models/tiny.gguf" || out.Request.ModelName != "tiny" {
			t.Errorf("request %+v", out.Request)
		}
		for _, key := range []string{"models/notes.gguf", "models/hostile.gguf"} {
			_, err := v.Handle(ctx, ValidateInput{Event: event(key, 1200)})
			var notGGUF *deployment.NotGGUFError
			if !errors.As(err, &notGGUF) {
				t.Errorf("%s: got %T %v, want *deployment.NotGGUFError", key, err, err)
			}
		}
	})
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{
		"CLUSTER": "c", "GPU_CAPACITY_PROVIDERS": "g4dn.xlarge=OllamaEcs-g4dn-xlarge, g5.xlarge=p2",
		"DEV_TTL": "90m", "SUBNETS": "subnet-a,subnet-b",
		"UPLOAD_DEFAULTS": "minTokensPerSecond=10, optimize=cost-per-token",
	}
	c, err := deployment.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Providers["g5.xlarge"] != "p2" || c.DevTTL != 90*time.Minute || len(c.Subnets) != 2 ||
		c.HealthTimeout != 30*time.Minute ||
		c.UploadDefaults != (events.Requirements{MinTokensPerSecond: 10, Optimize: "cost-per-token"}) {
		t.Errorf("config %+v", c)
	}
	r := &RunTask{CPUTaskDefinition: "ollama-cpu", GPUTaskDefinition: "ollama-gpu"}
	gpu := planner.Candidate{TaskDefinition: planner.TaskDefinitionGPU, LaunchType: "EC2", GPUCount: 1}
	image := &deployment.ImageState{TaskDefinitions: &deployment.TaskDefinitions{CPU: "ollama-cpu-0123456789ab", GPU: "ollama-gpu-0123456789ab"}}
	if td := aws.ToString(r.input(&deployment.Request{ModelName: "llama3.1:8b", DeploymentID: "x"}, image, gpu, 0).TaskDefinition); td != "ollama-gpu-0123456789ab" {
		t.Errorf("model image family %s", td)
	}
	for _, pulled := range []*deployment.ImageState{nil, {PullAtStart: "an upload"}} {
		if td := aws.ToString(r.input(&deployment.Request{ModelName: "mistral:7b", DeploymentID: "x"}, pulled, gpu, 0).TaskDefinition); td != "ollama-gpu" {
			t.Errorf("default family %s", td)
		}
	}
	for _, bad := range []map[string]string{{"GPU_CAPACITY_PROVIDERS": "nope"}, {"DEV_TTL": "soon"}, {"MODEL_IMAGE_MAX_GIB": "0"},
		{"UPLOAD_DEFAULTS": "minTokensPerSecond=-1"}, {"UPLOAD_DEFAULTS": "minTokensPerSecond=fast"},
		{"UPLOAD_DEFAULTS": "maxTimeToFirstToken=1e9"}, {"UPLOAD_DEFAULTS": "optimize=fastest"}, {"UPLOAD_DEFAULTS": "speed=10"}} {
		if _, err := deployment.ConfigFromEnv(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}
