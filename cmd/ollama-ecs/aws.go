package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

// The stack's outputs the commands read (infra/stack.go names them).
const (
	outEventBus      = "EventBusName"
	outBucket        = "ModelBucketName"
	outPrefix        = "ModelPrefix"
	outStateMachine  = "StateMachineArn"
	outCluster       = "ClusterName"
	outScheduleGroup = "ScheduleGroupName"
	// outGPUTypes lists the GPU instance types the cluster has capacity providers for, comma-separated.
	outGPUTypes = "GpuInstanceTypes"
	// outModelRegistry is the registry the stack resolves models the catalog does not list against;
	// outGPUSpotTypes the GPU types with Spot capacity ("none" without any). Both are optional.
	outModelRegistry = "ModelRegistry"
	outGPUSpotTypes  = "GpuSpotInstanceTypes"
	// The load balancer: every endpoint is <outEndpointBase>/d/<id>; keys are SSM parameters under outKeyPrefix;
	// request counts are CloudWatch metrics by outLBName; rules are on outListener.
	outEndpointBase = "EndpointBase"
	outKeyPrefix    = "KeyPrefix"
	outLBName       = "LoadBalancerFullName"
	outListener     = "ListenerArn"
	// outWakerTargetGroup is the waker's target group, where a sleeping deployment's rules forward.
	outWakerTargetGroup = "WakerTargetGroup"

	defaultStack = "OllamaEcs"
)

// The AWS calls the commands make, as small interfaces with the SDK v2 method signatures.

// StackDescriber reads the deployed stack's outputs.
type StackDescriber interface {
	DescribeStacks(ctx context.Context, in *cloudformation.DescribeStacksInput, opts ...func(*cloudformation.Options)) (*cloudformation.DescribeStacksOutput, error)
}

// Executions starts and watches state machine executions.
type Executions interface {
	StartExecution(ctx context.Context, in *sfn.StartExecutionInput, opts ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error)
	DescribeExecution(ctx context.Context, in *sfn.DescribeExecutionInput, opts ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error)
	GetExecutionHistory(ctx context.Context, in *sfn.GetExecutionHistoryInput, opts ...func(*sfn.Options)) (*sfn.GetExecutionHistoryOutput, error)
	ListExecutions(ctx context.Context, in *sfn.ListExecutionsInput, opts ...func(*sfn.Options)) (*sfn.ListExecutionsOutput, error)
}

// EventPutter puts events on the project's bus.
type EventPutter interface {
	PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, opts ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
}

// ObjectUploader puts model files into the bucket, in one request or in parts.
type ObjectUploader interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, opts ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
}

var (
	_ StackDescriber         = (*cloudformation.Client)(nil)
	_ Executions             = (*sfn.Client)(nil)
	_ EventPutter            = (*eventbridge.Client)(nil)
	_ ObjectUploader         = (*s3.Client)(nil)
	_ deployment.TaskStopper = (*ecs.Client)(nil)
	_ deployment.Schedules   = (*scheduler.Client)(nil)
)

// awsFlags are the flags every command that talks to AWS shares: how to sign in and where the system is.
// Each location defaults to its environment variable, and anything still empty comes from the stack's outputs.
type awsFlags struct {
	profile, region, stack string
	// outputs holds the overrides by output name (outCluster, ...).
	outputs map[string]*string
	output  *string
}

func addAWSFlags(fs *pflag.FlagSet) *awsFlags {
	f := &awsFlags{outputs: map[string]*string{}}
	fs.StringVar(&f.profile, "profile", "", "AWS profile (default: the SDK's chain: AWS_PROFILE, env keys, SSO, ...)")
	fs.StringVar(&f.region, "region", "", "AWS region (default: AWS_REGION or the profile's)")
	fs.StringVar(&f.stack, "stack", envOr("OLLAMA_ECS_STACK", defaultStack), "CloudFormation stack to read the system from ($OLLAMA_ECS_STACK)")
	for _, o := range []struct{ flag, env, output, usage string }{
		{"cluster", "OLLAMA_ECS_CLUSTER", outCluster, "ECS cluster"},
		{"state-machine", "OLLAMA_ECS_STATE_MACHINE", outStateMachine, "deploy state machine ARN"},
		{"bus", "OLLAMA_ECS_BUS", outEventBus, "event bus name"},
		{"bucket", "OLLAMA_ECS_BUCKET", outBucket, "model bucket"},
		{"prefix", "OLLAMA_ECS_MODEL_PREFIX", outPrefix, "model key prefix"},
		{"schedule-group", "OLLAMA_ECS_SCHEDULE_GROUP", outScheduleGroup, "auto-stop schedule group"},
		{"gpu-types", "OLLAMA_ECS_GPU_TYPES", outGPUTypes, "GPU instance types the cluster runs, comma-separated"},
	} {
		f.outputs[o.output] = fs.String(o.flag, os.Getenv(o.env), o.usage+" (default: the stack's "+o.output+"; $"+o.env+")")
	}
	f.output = outputFlag(fs)
	return f
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (f *awsFlags) json() bool { return *f.output == "json" }

// awsHTTPClient, when set, carries every SDK request; nil is the SDK's default client.
var awsHTTPClient aws.HTTPClient

// cloud is the deployed system as the commands see it: the clients and the resolved locations.
type cloud struct {
	Region    string
	Stack     StackDescriber
	SFN       Executions
	Events    EventPutter
	S3        ObjectUploader
	ECS       deployment.ECSAPI
	Scheduler deployment.Schedules
	// The load balancer's side of a deployment: its route, key, service, scaling and request counts.
	LB       deployment.LoadBalancer
	Params   deployment.Parameters
	Services deployment.Services
	Scaling  deployment.Scaling
	Metrics  deployment.Metrics
	// Outputs are the system's locations by stack output name.
	Outputs map[string]string
}

// connect loads the SDK configuration through the default chain, checks that credentials exist, and resolves the
// outputs the command needs: from flags and environment first, then one DescribeStacks for the rest.
// target is what the deployed stack checks requests against: its GPU types and its model registry.
func (c *cloud) target() target {
	t := target{GPUTypes: splitList(c.Outputs[outGPUTypes]), Registry: registryHost(c.Outputs[outModelRegistry])}
	if v, ok := c.Outputs[outGPUSpotTypes]; ok {
		t.SpotTypes = []string{}
		if v != "none" {
			t.SpotTypes = splitList(v)
		}
	}
	return t
}

func connect(ctx context.Context, f *awsFlags, need ...string) (*cloud, error) {
	opts := []func(*config.LoadOptions) error{}
	if f.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(f.profile))
	}
	if f.region != "" {
		opts = append(opts, config.WithRegion(f.region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %s", oneLine(err.Error()))
	}
	if awsHTTPClient != nil {
		cfg.HTTPClient = awsHTTPClient
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region: pass --region or set AWS_REGION (or a region in your profile)")
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, errors.New("no AWS credentials: pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run 'aws sso login'")
	}
	c := newCloud(cfg)
	return c, c.resolve(ctx, f, need)
}

func newCloud(cfg aws.Config) *cloud {
	return &cloud{
		Region:    cfg.Region,
		Stack:     cloudformation.NewFromConfig(cfg),
		SFN:       sfn.NewFromConfig(cfg),
		Events:    eventbridge.NewFromConfig(cfg),
		S3:        s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = o.BaseEndpoint != nil }),
		ECS:       ecs.NewFromConfig(cfg),
		Scheduler: scheduler.NewFromConfig(cfg),
		LB:        elbv2.NewFromConfig(cfg),
		Params:    ssm.NewFromConfig(cfg),
		Services:  ecs.NewFromConfig(cfg),
		Scaling:   applicationautoscaling.NewFromConfig(cfg),
		Metrics:   cloudwatch.NewFromConfig(cfg),
		Outputs:   map[string]string{},
	}
}

// usage reads deployments' request counts from the load balancer's metrics (nil without the load balancer's
// name among the resolved outputs).
func (c *cloud) usage() *steps.UsageReader {
	if c.Outputs[outLBName] == "" {
		return nil
	}
	return &steps.UsageReader{Metrics: c.Metrics, LoadBalancer: c.Outputs[outLBName], LB: c.LB}
}

// router is the load balancer side of deployments as the functions see it (it needs outListener and outKeyPrefix
// resolved): sleep records, keys, rules.
func (c *cloud) router() *steps.Router {
	cfg := deployment.DefaultConfig()
	return &steps.Router{LB: c.LB, Keys: c.Params, ListenerArn: c.Outputs[outListener], KeyPrefix: cmp.Or(c.Outputs[outKeyPrefix], cfg.KeyPrefix),
		SleepPrefix: cfg.SleepPrefix, Port: cfg.OllamaPort}
}

// stopper stops deployments as the stack's stop function does: tasks, schedule, service and route (it needs
// outCluster, outScheduleGroup, outListener and outLBName resolved).
func (c *cloud) stopper() *deployment.Stopper {
	cfg := deployment.DefaultConfig()
	cfg.Cluster, cfg.ScheduleGroup, cfg.ListenerArn, cfg.LoadBalancerName = c.Outputs[outCluster], c.Outputs[outScheduleGroup],
		c.Outputs[outListener], c.Outputs[outLBName]
	cfg.KeyPrefix = cmp.Or(c.Outputs[outKeyPrefix], cfg.KeyPrefix)
	cfg.WakerTargetGroup = c.Outputs[outWakerTargetGroup]
	return steps.Build(cfg, steps.Clients{ECS: c.ECS, Scheduler: c.Scheduler, LB: c.LB, Parameters: c.Params,
		Services: c.Services, Scaling: c.Scaling}, nil).Teardown.Stopper
}

// resolve fills Outputs: overrides first, then the stack's outputs for whatever is still missing.
func (c *cloud) resolve(ctx context.Context, f *awsFlags, need []string) error {
	var missing []string
	for _, name := range need {
		if v := f.outputs[name]; v != nil && *v != "" {
			c.Outputs[name] = *v
			continue
		}
		missing = append(missing, name)
	}
	if len(missing) == 0 {
		return nil
	}
	out, err := c.Stack.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: aws.String(f.stack)})
	if err != nil {
		var api smithy.APIError
		if errors.As(err, &api) && api.ErrorCode() == "ValidationError" && strings.Contains(api.ErrorMessage(), "does not exist") {
			return fmt.Errorf("stack %q not found in %s: deploy it with 'cdk deploy', or pass --stack or the locations (--cluster, --state-machine, --bus, --bucket)", f.stack, c.Region)
		}
		return awsErr("cloudformation:DescribeStacks", err)
	}
	if len(out.Stacks) == 0 {
		return fmt.Errorf("stack %q not found in %s", f.stack, c.Region)
	}
	got := map[string]string{}
	for _, o := range out.Stacks[0].Outputs {
		got[aws.ToString(o.OutputKey)] = aws.ToString(o.OutputValue)
	}
	for _, name := range missing {
		v, ok := got[name]
		if !ok || (v == "" && name != outPrefix) {
			return fmt.Errorf("stack %q has no output %s: is it an ollama-ecs stack?", f.stack, name)
		}
		c.Outputs[name] = v
	}
	// Outputs a stack of an earlier version lacks: read when there, never required.
	for _, name := range []string{outModelRegistry, outGPUSpotTypes} {
		if v, ok := got[name]; ok {
			c.Outputs[name] = v
		}
	}
	return nil
}

// awsErr makes an SDK error one line: the call, the error code and AWS's message.
func awsErr(op string, err error) error {
	var api smithy.APIError
	if errors.As(err, &api) {
		return fmt.Errorf("%s: %s: %s", op, api.ErrorCode(), oneLine(api.ErrorMessage()))
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%s: %s", op, oneLine(err.Error()))
}

func isCode(err error, codes ...string) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	for _, c := range codes {
		if api.ErrorCode() == c {
			return true
		}
	}
	return false
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
