package main

import (
	"cmp"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// StackID is the stack's construct id (and, unless overridden, its name).
const StackID = "OllamaEcs"

// WorkflowPlaceholders are the ${...} names the ASL file may use as Task
// resources, one per workflow Lambda.
var WorkflowPlaceholders = []string{
	"AutoStopFunctionArn", "CapacityFunctionArn", "CleanupFunctionArn", "ConfigureFunctionArn", "HealthFunctionArn",
	"ImageFunctionArn", "RunTaskFunctionArn", "ValidateFunctionArn",
}

// OllamaEcsStackProps carries the typed settings and the ASL text, both read
// and checked before any construct exists.
type OllamaEcsStackProps struct {
	awscdk.StackProps
	Settings Settings
	// Definition is the ASL of the deploy workflow (see LoadDefinition).
	Definition string
}

// NewOllamaEcsStack composes the constructs; each file in this package owns
// one concern (network, cluster, tasks, functions, workflow, triggers).
func NewOllamaEcsStack(scope constructs.Construct, id string, props *OllamaEcsStackProps) awscdk.Stack {
	sprops := props.StackProps
	if sprops.Description == nil {
		sprops.Description = jsii.String("ollama-ecs: event-driven Ollama model deployments on ECS (Fargate and GPU EC2)")
	}
	stack := awscdk.NewStack(scope, jsii.String(id), &sprops)
	s := props.Settings

	network := NewNetwork(stack, "Network", s)
	storage := NewStorage(stack, "Storage")
	cluster := NewCluster(stack, "Compute", s, network)
	tasks := NewTasks(stack, "Tasks", s, storage.ModelBucket)
	schedules := NewSchedules(stack, "Schedules")
	lb := NewLoadBalancer(stack, "LoadBalancer", s, network, storage)
	functions := NewFunctions(stack, "Functions", FunctionsProps{
		Settings: s, Network: network, Cluster: cluster, Tasks: tasks, Storage: storage, Schedules: schedules, LoadBalancer: lb,
	})
	functions.CanStop(schedules)
	lb.AddWaker(functions.ByName["waker"])
	stateMachine := NewDeployStateMachine(stack, "Deploy", props.Definition, functions.Workflow())
	triggers := NewTriggers(stack, "Triggers", TriggersProps{
		Settings: s, StateMachine: stateMachine, Teardown: functions.ByName["teardown"], ModelBucket: storage.ModelBucket,
		ClusterArn: cluster.Cluster.ClusterArn(),
	})
	functions.CanRestart(stateMachine)
	functions.CanWake(stateMachine)
	stopDeploymentsOnDelete(stack, functions.ByName["teardown"], cluster, lb)
	addNagSuppressions(stack, cluster, tasks)

	outputs := map[string]*string{
		"EventBusName":      triggers.Bus.EventBusName(),
		"ModelBucketName":   storage.ModelBucket.BucketName(),
		"ModelPrefix":       jsii.String(s.ModelPrefix),
		"StateMachineArn":   stateMachine.StateMachineArn(),
		"ClusterName":       cluster.Cluster.ClusterName(),
		"ScheduleGroupName": schedules.Group.ScheduleGroupName(),
		// The CLI plans against the cluster's GPU types before it starts anything.
		"GpuInstanceTypes": jsii.String(strings.Join(s.GpuInstanceTypes, ",")),
		"ModelRegistry":    jsii.String(s.ModelRegistry),
		// Where "Ensure model image" keeps the Ollama image's mirror and the model images.
		"ModelImageRepository": tasks.ModelImages.RepositoryUri(),
		// An output may not be empty: "none" when the stack has no Spot GPU capacity (gpuSpot off).
		"GpuSpotInstanceTypes": jsii.String(cmp.Or(strings.Join(cluster.SpotInstanceTypes(), ","), "none")),
		// Every deployment's endpoint is <EndpointBase>/d/<id>; the CLI reads keys under KeyPrefix, metrics by
		// LoadBalancerFullName, and changes a prod service's scaling.
		"EndpointBase":         jsii.String(lb.EndpointBase),
		"LoadBalancerFullName": lb.Alb.LoadBalancerFullName(),
		"KeyPrefix":            jsii.String(KeyPrefix),
		"ListenerArn":          lb.Listener.ListenerArn(),
		"WakerTargetGroup":     jsii.String(WakerTargetGroupName(*stack.StackName())),
	}
	for _, name := range SortedKeys(outputs) {
		awscdk.NewCfnOutput(stack, jsii.String(name), &awscdk.CfnOutputProps{Value: outputs[name]})
	}
	return stack
}

// stopDeploymentsOnDelete adds the custom resource whose deletion, before the cluster, its capacity providers and
// their groups, stops every deployment (the teardown function answers it): a running standalone task would hold
// its instance's termination under managed draining, and `cdk destroy` with it.
func stopDeploymentsOnDelete(stack awscdk.Stack, teardown awslambda.IFunction, cluster *Cluster, lb *LoadBalancer) {
	cr := awscdk.NewCustomResource(stack, jsii.String("StopDeploymentsOnDelete"), &awscdk.CustomResourceProps{
		ServiceToken: teardown.FunctionArn(),
		ResourceType: jsii.String("Custom::StopDeployments"),
	})
	cr.Node().AddDependency(cluster.Cluster)
	// The deployments' run-time rules hold the listener and the waker's target group: they go first.
	cr.Node().AddDependency(lb.Listener, lb.WakerTargets)
	for _, p := range cluster.GpuCapacityProviders {
		cr.Node().AddDependency(p.Group, p.Provider)
	}
}

// AddChecks runs the cdk-nag AWS Solutions pack over the app: its errors
// fail synth, so every finding is either fixed or suppressed with a reason.
func AddChecks(app awscdk.App) {
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
}

// addNagSuppressions holds the findings that are design choices of the
// compute side, each with its reason.
func addNagSuppressions(stack awscdk.Stack, cluster *Cluster, tasks *Tasks) {
	for _, p := range cluster.GpuCapacityProviders {
		cdknag.NagSuppressions_AddResourceSuppressions(p.Group, &[]*cdknag.NagPackSuppression{
			{Id: jsii.String("AwsSolutions-AS3"), Reason: jsii.String(
				"ECS managed scaling drives this group from 0; scaling activity is visible in the ECS capacity provider and CloudTrail, so no SNS notifications.")},
			{Id: jsii.String("AwsSolutions-IAM5"), Reason: jsii.String(
				"The ECS agent policy CDK attaches to container instances: ecs:Submit* is the agent's state-change reporting, and Poll/StartTelemetrySession/DiscoverPollEndpoint support no narrower resource."),
				AppliesTo: &[]interface{}{"Action::ecs:Submit*", "Resource::*"}},
		}, jsii.Bool(true))
	}
	for _, td := range tasks.Definitions {
		cdknag.NagSuppressions_AddResourceSuppressions(td, &[]*cdknag.NagPackSuppression{{
			Id: jsii.String("AwsSolutions-ECS2"), Reason: jsii.String(
				"The environment holds only non-secret defaults (keep-alive, context length, a mount path); the per-deployment values come from RunTask overrides, and no secret is ever needed."),
		}}, jsii.Bool(true))
	}
	// S3 EventBridge notifications are switched on by CDK's singleton
	// custom-resource Lambda, whose role CDK builds.
	cdknag.NagSuppressions_AddResourceSuppressionsByPath(stack,
		jsii.String("/"+*stack.StackName()+"/BucketNotificationsHandler050a0587b7544547bf325f094a3db834/Role/Resource"),
		&[]*cdknag.NagPackSuppression{{
			Id:        jsii.String("AwsSolutions-IAM4"),
			Reason:    jsii.String("CDK's bucket-notification handler logs through AWSLambdaBasicExecutionRole (CloudWatch Logs writes only); CDK owns this role."),
			AppliesTo: &[]interface{}{"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"},
		}}, nil)
	cdknag.NagSuppressions_AddResourceSuppressions(tasks.TaskRole, &[]*cdknag.NagPackSuppression{
		nagWildcard{`/^Resource::<StorageModels[0-9A-F]+\.Arn>\/.+\*$/`,
			"The fetch container reads the uploaded GGUF named in the request: s3:GetObject on keys under the model prefix only."}.suppression(),
	}, jsii.Bool(true))
	cdknag.NagSuppressions_AddResourceSuppressions(tasks.ExecutionRole, &[]*cdknag.NagPackSuppression{
		nagWildcard{"Resource::*",
			"ecr:GetAuthorizationToken (granted only when a model image is in ECR) supports no resource-level permissions; image pulls are scoped to the repository."}.suppression(),
	}, jsii.Bool(true))
}
