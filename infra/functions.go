package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// FunctionNames are the Lambda folders under functions/ and lambdaDist, in
// workflow order.
var FunctionNames = []string{"validate", "configure", "image", "capacity", "runtask", "health", "autostop", "cleanup", "teardown", "waker"}

// CheckLambdaDist fails early, with the command that fixes it, when a
// bootstrap is missing: Code_FromAsset would otherwise fail deep inside jsii.
func CheckLambdaDist(dist string) error {
	var missing []string
	for _, fn := range FunctionNames {
		if st, err := os.Stat(filepath.Join(dist, fn, "bootstrap")); err != nil || st.IsDir() {
			missing = append(missing, fn+"/bootstrap")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lambdaDist %s lacks %s: run `make lambdas` first (or set ollama-ecs:lambdaDist)",
			dist, strings.Join(missing, ", "))
	}
	return nil
}

// Functions are the eight Lambdas, each with its own role holding only what
// its step needs.
type Functions struct {
	ByName map[string]awslambda.Function
}

// FunctionsProps are the resources the Lambdas are wired to.
type FunctionsProps struct {
	Settings     Settings
	Network      *Network
	Cluster      *Cluster
	Tasks        *Tasks
	Storage      *Storage
	Schedules    *Schedules
	LoadBalancer *LoadBalancer
}

// KeyPrefix is where the deployments' API keys are kept (SSM parameters, SecureString); SleepPrefix where the
// sleeping deployments' records are.
const (
	KeyPrefix   = "/ollama-ecs/keys"
	SleepPrefix = "/ollama-ecs/sleep"
	// ImageLockPrefix holds one parameter per model image being built: concurrent deployments build it once.
	ImageLockPrefix = "/ollama-ecs/image-builds"
)

// TargetGroupPrefix starts every deployment's target group name (deployment.TargetGroupName).
const TargetGroupPrefix = "oe-"

// NewFunctions creates the Lambdas with their environment contract and IAM.
func NewFunctions(scope constructs.Construct, id string, p FunctionsProps) *Functions {
	c := constructs.NewConstruct(scope, jsii.String(id))
	stack := awscdk.Stack_Of(scope)
	s := p.Settings
	clusterArn := p.Cluster.Cluster.ClusterArn()
	clusterName := *p.Cluster.Cluster.ClusterName()
	// Task ARNs are arn:...:task/<cluster name>/<id>: this pins task actions to our cluster.
	tasksInCluster := *stack.FormatArn(&awscdk.ArnComponents{
		Service: jsii.String("ecs"), Resource: jsii.String("task"), ResourceName: jsii.String(clusterName + "/*"),
		ArnFormat: awscdk.ArnFormat_SLASH_RESOURCE_NAME,
	})
	inCluster := &map[string]interface{}{"ArnEquals": map[string]interface{}{"ecs:cluster": clusterArn}}
	schedulesInGroup := p.Schedules.ScheduleArnPattern(stack)

	f := &Functions{ByName: map[string]awslambda.Function{}}
	type spec struct {
		env        map[string]string
		statements []awsiam.PolicyStatement
		inVpc      bool
		timeout    float64
		memory     float64
		// anyResource says why actions on "*" (besides X-Ray) are needed.
		anyResource string
		// wildcards are the other resource patterns the role may hold.
		wildcards []nagWildcard
	}
	privateSubnets := p.Network.Vpc.SelectSubnets(p.Network.PrivateSubnets).SubnetIds
	// The model images' repository; empty turns the images off (every task pulls its model at start).
	modelImageRepository := ""
	if s.ModelImageMaxGiB > 0 {
		modelImageRepository = *p.Tasks.ModelImages.RepositoryUri()
	}

	// The load balancer's side: each deployment's target group, rules and key, and a prod deployment's service.
	lb := p.LoadBalancer
	arn := func(service, resource, name string) string {
		return *stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String(service), Resource: jsii.String(resource),
			ResourceName: jsii.String(name), ArnFormat: awscdk.ArnFormat_SLASH_RESOURCE_NAME})
	}
	targetGroups := arn("elasticloadbalancing", "targetgroup", TargetGroupPrefix+"*/*")
	rules := arn("elasticloadbalancing", "listener-rule", *lb.Alb.LoadBalancerFullName()+"/*")
	keys := arn("ssm", "parameter", KeyPrefix[1:]+"/*")
	sleeps := arn("ssm", "parameter", SleepPrefix[1:]+"/*")
	services := arn("ecs", "service", clusterName+"/ollama-*")
	ecsScaling := &map[string]interface{}{"StringEquals": map[string]interface{}{
		"application-autoscaling:service-namespace": "ecs", "application-autoscaling:scalable-dimension": "ecs:service:DesiredCount"}}
	routeEnv := map[string]string{
		"LISTENER_ARN": *lb.Listener.ListenerArn(), "LOAD_BALANCER_NAME": *lb.Alb.LoadBalancerFullName(),
		"ENDPOINT_BASE": lb.EndpointBase, "VPC_ID": *p.Network.Vpc.VpcId(), "KEY_PREFIX": KeyPrefix,
		"SLEEP_PREFIX": SleepPrefix, "WAKER_TARGET_GROUP": WakerTargetGroupName(*stack.StackName()),
	}
	withRoute := func(env map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range routeEnv {
			out[k] = v
		}
		for k, v := range env {
			out[k] = v
		}
		return out
	}
	lbWildcards := []nagWildcard{
		{`/^Resource::arn:.+:elasticloadbalancing:.+:targetgroup\/` + TargetGroupPrefix + `\*\/\*$/`,
			"Target groups are created per deployment at run time; the name prefix holds the role to the stack's own."},
		{`/^Resource::arn:.+:elasticloadbalancing:.+:listener-rule\/<.+LoadBalancerFullName>\/\*$/`,
			"Listener rules are created per deployment at run time, on this stack's load balancer only."},
		{`/^Resource::arn:.+:ssm:.+:parameter\/ollama-ecs\/(keys|sleep)\/\*$/`,
			"API keys and sleep records are one SSM parameter per deployment, under the stack's prefixes only."},
		{`/^Resource::arn:.+:ecs:.+:service\/<ComputeCluster[0-9A-F]+>\/ollama-\*$/`,
			"A prod deployment's service is created at run time, named ollama-<id>, in this cluster only."},
	}
	specs := map[string]spec{
		"validate": {
			env: map[string]string{"MODEL_BUCKET": *p.Storage.ModelBucket.BucketName(), "MODEL_PREFIX": s.ModelPrefix,
				"UPLOAD_DEFAULTS": s.UploadDefaults, "MODEL_REGISTRY": s.ModelRegistry},
			statements: []awsiam.PolicyStatement{statement([]string{"s3:GetObject"},
				[]string{*p.Storage.ModelBucket.ArnForObjects(jsii.String(s.ModelPrefix + "*"))}, nil)},
			wildcards: []nagWildcard{{`/^Resource::<StorageModels[0-9A-F]+\.Arn>\/.+\*$/`,
				"s3:GetObject on objects under the model prefix only: the keys are user uploads."}},
		},
		"configure": {
			env: map[string]string{
				"GPU_INSTANCE_TYPES": strings.Join(s.GpuInstanceTypes, ","),
				"DEV_TTL":            s.DevTTL,
				"POLICY":             s.Policy,
				"GPU_VOLUME_GIB":     fmt.Sprint(GpuVolumeGiB),
				// The planner offers a type's Spot capacity only where the stack has a Spot provider for it.
				"GPU_CAPACITY_PROVIDERS": p.Cluster.EnvValue(),
			},
		},
		"image": {
			env: map[string]string{
				"MODEL_REGISTRY": s.ModelRegistry, "MODEL_IMAGE_REPOSITORY": modelImageRepository, "OLLAMA_IMAGE": s.Image,
				"MODEL_IMAGE_MAX_GIB": fmt.Sprint(max(1, s.ModelImageMaxGiB)), "IMAGE_LOCK_PREFIX": ImageLockPrefix,
				"CPU_TASK_DEFINITION": CpuFamily, "GPU_TASK_DEFINITION": GpuFamily,
			},
			statements: []awsiam.PolicyStatement{
				// Push (and read back) the Ollama image's mirror and the model images, in the stack's repository only.
				statement([]string{"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage",
					"ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:DescribeImages"},
					[]string{*p.Tasks.ModelImages.RepositoryArn()}, nil),
				statement([]string{"ecr:GetAuthorizationToken"}, []string{"*"}, nil),
				// The model image's copies of the stack's task definitions.
				statement([]string{"ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"}, []string{"*"}, nil),
				statement([]string{"ecs:TagResource"}, []string{arn("ecs", "task-definition", CpuFamily+"-*:*"), arn("ecs", "task-definition", GpuFamily+"-*:*")},
					&map[string]interface{}{"StringEquals": map[string]interface{}{"ecs:CreateAction": "RegisterTaskDefinition"}}),
				statement([]string{"iam:PassRole"},
					[]string{*p.Tasks.TaskRole.RoleArn(), *p.Tasks.ExecutionRole.RoleArn()},
					&map[string]interface{}{"StringEquals": map[string]interface{}{"iam:PassedToService": "ecs-tasks.amazonaws.com"}}),
				statement([]string{"ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter"}, []string{arn("ssm", "parameter", ImageLockPrefix[1:]+"/*")}, nil),
			},
			// A build streams the model from its registry to ECR: 15 minutes and the memory (hence network) to do it.
			timeout: 900, memory: 2048,
			anyResource: "ecr:GetAuthorizationToken, ecs:RegisterTaskDefinition and ecs:DescribeTaskDefinition support no resource-level permissions.",
			wildcards: []nagWildcard{
				{`/^Resource::arn:.+:ecs:.+:task-definition\/ollama-(cpu|gpu)-\*:\*$/`,
					"ecs:TagResource on the model images' task definitions (ollama-cpu-HEX12, ollama-gpu-HEX12), at RegisterTaskDefinition time only (ecs:CreateAction condition)."},
				{`/^Resource::arn:.+:ssm:.+:parameter\/ollama-ecs\/image-builds\/\*$/`,
					"One lock parameter per model image being built (named by its digest), under the stack's prefix only."},
			},
		},
		"capacity": {
			env: map[string]string{"GPU_CAPACITY_PROVIDERS": p.Cluster.EnvValue()},
			statements: []awsiam.PolicyStatement{
				statement([]string{"ecs:ListContainerInstances"}, []string{*clusterArn}, nil),
				statement([]string{"ecs:DescribeContainerInstances"}, []string{*stack.FormatArn(&awscdk.ArnComponents{
					Service: jsii.String("ecs"), Resource: jsii.String("container-instance"),
					ResourceName: jsii.String(clusterName + "/*"), ArnFormat: awscdk.ArnFormat_SLASH_RESOURCE_NAME,
				})}, inCluster),
				// None of these supports resource-level permissions. The quota and the running instances tell
				// whether a GPU instance can launch at all; the group's activities whether its launches fail.
				statement([]string{"ecs:DescribeCapacityProviders", "autoscaling:DescribeAutoScalingGroups",
					"autoscaling:DescribeScalingActivities", "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota",
					"ec2:DescribeInstances"}, []string{"*"}, nil),
			},
			anyResource: "ecs:DescribeCapacityProviders, autoscaling:DescribeAutoScalingGroups and DescribeScalingActivities, servicequotas:GetServiceQuota and GetAWSDefaultServiceQuota and ec2:DescribeInstances are read-only and support no resource-level permissions.",
			wildcards: []nagWildcard{{`/^Resource::arn:.+:ecs:.+:container-instance\/<ComputeCluster[0-9A-F]+>\/\*$/`,
				"ecs:DescribeContainerInstances on the container instances of this cluster only (their ids are generated by ECS)."}},
		},
		"runtask": {
			env: withRoute(map[string]string{
				"CPU_TASK_DEFINITION":    CpuFamily,
				"GPU_TASK_DEFINITION":    GpuFamily,
				"SUBNETS":                joinTokens(privateSubnets),
				"SECURITY_GROUPS":        *p.Network.TaskSecurityGroup.SecurityGroupId(),
				"GPU_CAPACITY_PROVIDERS": p.Cluster.EnvValue(),
				"API_KEYS":               s.APIKeys,
			}),
			statements: []awsiam.PolicyStatement{
				statement([]string{"ecs:RunTask"}, familyArns(stack, p.Tasks.Families()), inCluster),
				// Before RunTask: is a task of this deployment id, started by another request, still running?
				statement([]string{"ecs:ListTasks"}, []string{"*"}, inCluster),
				statement([]string{"ecs:DescribeTasks"}, []string{tasksInCluster}, inCluster),
				statement([]string{"ecs:TagResource"}, []string{tasksInCluster},
					&map[string]interface{}{"StringEquals": map[string]interface{}{"ecs:CreateAction": "RunTask"}}),
				statement([]string{"iam:PassRole"},
					[]string{*p.Tasks.TaskRole.RoleArn(), *p.Tasks.ExecutionRole.RoleArn()},
					&map[string]interface{}{"StringEquals": map[string]interface{}{"iam:PassedToService": "ecs-tasks.amazonaws.com"}}),
				// The deployment's route: its target group, its rules on this listener, its key.
				statement([]string{"elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes",
					"elasticloadbalancing:ModifyTargetGroup"}, []string{targetGroups}, nil),
				statement([]string{"elasticloadbalancing:CreateRule"}, []string{*lb.Listener.ListenerArn()}, nil),
				statement([]string{"elasticloadbalancing:DeleteRule"}, []string{rules}, nil),
				statement([]string{"elasticloadbalancing:AddTags"}, []string{targetGroups, rules}, &map[string]interface{}{"StringEquals": map[string]interface{}{
					"elasticloadbalancing:CreateAction": []string{"CreateTargetGroup", "CreateRule"}}}),
				statement([]string{"elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups"}, []string{"*"}, nil),
				statement([]string{"ssm:PutParameter", "ssm:GetParameter"}, []string{keys}, nil),
				// A prod deployment's service: its own task definition revision, the service, its scaling.
				statement([]string{"ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"}, []string{"*"}, nil),
				// Application Auto Scaling acts on the service as its caller: UpdateService too.
				statement([]string{"ecs:CreateService", "ecs:DescribeServices", "ecs:UpdateService"}, []string{services}, inCluster),
				statement([]string{"ecs:TagResource"}, []string{services, arn("ecs", "task-definition", "ollama-svc-*:*")},
					&map[string]interface{}{"StringEquals": map[string]interface{}{"ecs:CreateAction": []string{"CreateService", "RegisterTaskDefinition"}}}),
				statement([]string{"application-autoscaling:RegisterScalableTarget", "application-autoscaling:PutScalingPolicy"},
					[]string{arn("application-autoscaling", "scalable-target", "*")}, ecsScaling),
				statement([]string{"cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"}, []string{"*"}, nil),
				statement([]string{"iam:CreateServiceLinkedRole"}, []string{"arn:" + *awscdk.Aws_PARTITION() + ":iam::" + *awscdk.Aws_ACCOUNT_ID() +
					":role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService"},
					&map[string]interface{}{"StringEquals": map[string]interface{}{"iam:AWSServiceName": "ecs.application-autoscaling.amazonaws.com"}}),
			},
			anyResource: "ecs:ListTasks is authorised per container instance (the ecs:cluster condition holds it to this cluster); elasticloadbalancing:DescribeRules and DescribeTargetGroups, ecs:RegisterTaskDefinition and DescribeTaskDefinition, and the CloudWatch alarm calls target tracking makes support no resource-level permissions.",
			wildcards: append([]nagWildcard{
				{`/^Resource::arn:.+:ecs:.+:task-definition\/ollama-(cpu|gpu)(-\*)?:\*$/`,
					"ecs:RunTask on any revision (:*) of the stack's own task-definition families and the model images' copies of them (ollama-cpu-HEX12, ollama-gpu-HEX12), in this cluster only (ecs:cluster condition)."},
				{`/^Resource::arn:.+:ecs:.+:task-definition\/ollama-svc-\*:\*$/`,
					"ecs:TagResource on the per-deployment task definitions of prod services, at RegisterTaskDefinition time only (ecs:CreateAction condition)."},
				{`/^Resource::arn:.+:application-autoscaling:.+:scalable-target\/\*$/`,
					"Scalable targets get generated ids; the service-namespace and scalable-dimension conditions hold the role to ECS services' desired count."},
				clusterTasksWildcard("ecs:TagResource on new tasks of this cluster at RunTask time only (ecs:CreateAction condition); ecs:DescribeTasks on tasks of this cluster."),
			}, lbWildcards...),
		},
		"health": {
			env: withRoute(map[string]string{"OLLAMA_PORT": fmt.Sprint(OllamaPort), "HEALTH_TIMEOUT": s.HealthTimeout}),
			statements: []awsiam.PolicyStatement{
				statement([]string{"ecs:DescribeTasks"}, []string{tasksInCluster}, inCluster),
				// A dev task joins its target group once its model is loaded; a service's are watched.
				statement([]string{"elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"}, []string{targetGroups}, nil),
				statement([]string{"elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeRules"}, []string{"*"}, nil),
				// A woken deployment's rules point at its target group again once it serves.
				statement([]string{"elasticloadbalancing:ModifyRule"}, []string{rules}, nil),
				statement([]string{"ssm:GetParameter", "ssm:PutParameter"}, []string{sleeps}, nil),
				statement([]string{"ssm:GetParameter"}, []string{keys}, nil),
				statement([]string{"ecs:ListTasks"}, []string{"*"}, inCluster),
				statement([]string{"ecs:DescribeServices"}, []string{services}, inCluster),
				// A task waiting for a GPU instance: did its capacity provider's group fail to launch one?
				statement([]string{"ecs:DescribeCapacityProviders", "autoscaling:DescribeAutoScalingGroups",
					"autoscaling:DescribeScalingActivities"}, []string{"*"}, nil),
				// Lambda manages the function's ENIs with the function's own
				// role (what AWSLambdaVPCAccessExecutionRole grants, without
				// its log-group wildcard); a supplied role gets none by default.
				statement([]string{"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
					"ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}, []string{"*"}, nil),
			},
			anyResource: "The ec2 network-interface actions Lambda needs to attach a VPC function support no resource-level permissions at creation; ecs:DescribeCapacityProviders, the Auto Scaling describe calls and elasticloadbalancing:DescribeTargetHealth support none; ecs:ListTasks is held to this cluster by the ecs:cluster condition.",
			inVpc:       true,
			wildcards:   []nagWildcard{clusterTasksWildcard("ecs:DescribeTasks on tasks of this cluster only."), lbWildcards[0], lbWildcards[1], lbWildcards[2], lbWildcards[3]},
		},
		"autostop": {
			// STOP_FUNCTION_ARN (the teardown function, the schedules' target) is set once it exists.
			env: map[string]string{
				"SCHEDULE_GROUP":     p.Schedules.GroupName,
				"SCHEDULER_ROLE_ARN": *p.Schedules.Role.RoleArn(),
				"IDLE_WINDOW":        s.IdleWindow,
				"MAX_LIFETIME":       s.MaxLifetime,
			},
			statements: []awsiam.PolicyStatement{
				statement([]string{"scheduler:CreateSchedule", "scheduler:GetSchedule", "scheduler:DeleteSchedule"},
					[]string{schedulesInGroup}, nil),
				statement([]string{"iam:PassRole"}, []string{*p.Schedules.Role.RoleArn()},
					&map[string]interface{}{"StringEquals": map[string]interface{}{"iam:PassedToService": "scheduler.amazonaws.com"}}),
				// After scheduling, the step checks the task is still wanted (a stop may have landed meanwhile).
				statement([]string{"ecs:DescribeTasks"}, []string{tasksInCluster}, inCluster),
			},
			wildcards: []nagWildcard{
				scheduleGroupWildcard("Auto-stop schedules are named per deployment, inside the project's schedule group only."),
				clusterTasksWildcard("ecs:DescribeTasks on tasks of this cluster only."),
			},
		},
	}
	stopper := spec{
		env: withRoute(map[string]string{"SCHEDULE_GROUP": p.Schedules.GroupName}),
		statements: []awsiam.PolicyStatement{
			// ListTasks is authorised per container instance; the ecs:cluster
			// condition keeps it to this cluster.
			statement([]string{"ecs:ListTasks"}, []string{"*"}, inCluster),
			statement([]string{"ecs:DescribeTasks", "ecs:StopTask"}, []string{tasksInCluster}, inCluster),
			// A schedule is deleted only when it stops a task being stopped: read its target first.
			statement([]string{"scheduler:GetSchedule", "scheduler:DeleteSchedule"}, []string{schedulesInGroup}, nil),
			// The deployment's route, key, service and scaling go with it.
			statement([]string{"elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups"}, []string{"*"}, nil),
			statement([]string{"elasticloadbalancing:DeleteRule"}, []string{rules}, nil),
			statement([]string{"elasticloadbalancing:DeleteTargetGroup", "elasticloadbalancing:DeregisterTargets"}, []string{targetGroups}, nil),
			statement([]string{"ssm:DeleteParameter"}, []string{keys, sleeps}, nil),
			// A deployment that wakes on request sleeps instead: its rules forward to the waker, its record is kept.
			statement([]string{"elasticloadbalancing:ModifyRule"}, []string{rules}, nil),
			statement([]string{"elasticloadbalancing:DescribeTargetHealth"}, []string{"*"}, nil),
			statement([]string{"ssm:GetParameter", "ssm:PutParameter"}, []string{sleeps}, nil),
			statement([]string{"ecs:DescribeServices", "ecs:DeleteService"}, []string{services}, inCluster),
			statement([]string{"application-autoscaling:DeregisterScalableTarget"}, []string{arn("application-autoscaling", "scalable-target", "*")}, ecsScaling),
			// Deregistering a scalable target deletes its target-tracking alarms as the caller.
			statement([]string{"cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"}, []string{"*"}, nil),
		},
		timeout:     300,
		anyResource: "ecs:ListTasks is authorised per container instance; the ecs:cluster condition holds it to this cluster. elasticloadbalancing:DescribeRules and DescribeTargetGroups support no resource-level permissions; the CloudWatch alarm calls are target tracking's (alarms named by Application Auto Scaling).",
		wildcards: append([]nagWildcard{
			clusterTasksWildcard("ecs:DescribeTasks and ecs:StopTask on tasks of this cluster only."),
			scheduleGroupWildcard("scheduler:GetSchedule and DeleteSchedule on the auto-stop schedules of the project's schedule group only."),
			{`/^Resource::arn:.+:application-autoscaling:.+:scalable-target\/\*$/`,
				"Scalable targets get generated ids; the service-namespace and scalable-dimension conditions hold the role to ECS services' desired count."},
		}, lbWildcards...),
	}
	// The teardown function also hears stopped tasks: it marks an interrupted one with a tag (the state machine
	// it restarts is granted, and its ARN set, by the stack once the state machine exists).
	teardown := stopper
	teardown.statements = append(slices.Clone(stopper.statements),
		// No ecs:cluster condition: the task ARN pattern already pins the cluster.
		statement([]string{"ecs:TagResource"}, []string{tasksInCluster}, nil),
		// At a deployment's auto-stop time: its requests over the idle window, and the schedule moved on if used.
		statement([]string{"cloudwatch:GetMetricData"}, []string{"*"}, nil),
		statement([]string{"scheduler:UpdateSchedule"}, []string{schedulesInGroup}, nil),
		statement([]string{"iam:PassRole"}, []string{*p.Schedules.Role.RoleArn()},
			&map[string]interface{}{"StringEquals": map[string]interface{}{"iam:PassedToService": "scheduler.amazonaws.com"}}))
	teardown.anyResource += " cloudwatch:GetMetricData supports no resource-level permissions."
	teardown.wildcards = append([]nagWildcard{
		clusterTasksWildcard("ecs:DescribeTasks, ecs:StopTask and ecs:TagResource (marking an interrupted task) on tasks of this cluster only."),
		scheduleGroupWildcard("scheduler:GetSchedule, UpdateSchedule and DeleteSchedule on the auto-stop schedules of the project's schedule group only."),
	}, stopper.wildcards[2:]...)
	specs["cleanup"], specs["teardown"] = stopper, teardown
	// The waker (the load balancer's target for sleeping deployments) reads and updates their records and starts
	// the state machine (granted, and its ARN set, by CanWake once the state machine exists).
	specs["waker"] = spec{
		env:        withRoute(nil),
		statements: []awsiam.PolicyStatement{statement([]string{"ssm:GetParameter", "ssm:PutParameter"}, []string{sleeps}, nil)},
		wildcards:  []nagWildcard{lbWildcards[2]},
	}

	for _, name := range FunctionNames {
		sp := specs[name]
		memory := sp.memory
		if memory == 0 {
			memory = 256
		}
		fnScope := constructs.NewConstruct(c, jsii.String(titleCase(name)))
		logGroup := awslogs.NewLogGroup(fnScope, jsii.String("Logs"), &awslogs.LogGroupProps{
			Retention:     awslogs.RetentionDays_ONE_MONTH,
			RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
		})
		// An own role (not the CDK default with AWSLambdaBasicExecutionRole)
		// so each Lambda can write to its own log group only.
		role := awsiam.NewRole(fnScope, jsii.String("Role"), &awsiam.RoleProps{
			AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
			Description: jsii.String("ollama-ecs " + name + " Lambda"),
		})
		logGroup.GrantWrite(role)
		for _, st := range sp.statements {
			role.AddToPrincipalPolicy(st)
		}
		env := map[string]*string{"CLUSTER": clusterArn}
		for k, v := range sp.env {
			env[k] = jsii.String(v)
		}
		timeout := sp.timeout
		if timeout == 0 {
			timeout = 60
		}
		props := &awslambda.FunctionProps{
			Code:         awslambda.Code_FromAsset(jsii.String(filepath.Join(s.LambdaDist, name)), nil),
			Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
			Architecture: awslambda.Architecture_ARM_64(),
			Handler:      jsii.String("bootstrap"),
			MemorySize:   jsii.Number(memory),
			Timeout:      awscdk.Duration_Seconds(jsii.Number(timeout)),
			Environment:  &env,
			Role:         role,
			LogGroup:     logGroup,
			Tracing:      awslambda.Tracing_ACTIVE,
			Description:  jsii.String("ollama-ecs " + name + " step"),
		}
		if name == "teardown" {
			props.FunctionName = jsii.String(teardownFunctionName(stack))
		}
		if sp.inVpc {
			props.Vpc = p.Network.Vpc
			props.VpcSubnets = p.Network.PrivateSubnets
			props.SecurityGroups = &[]awsec2.ISecurityGroup{p.Network.HealthSecurityGroup}
		}
		fn := awslambda.NewFunction(fnScope, jsii.String("Function"), props)
		f.ByName[name] = fn

		anyReason := "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions."
		if sp.anyResource != "" {
			anyReason += " " + sp.anyResource
		}
		suppressions := []*cdknag.NagPackSuppression{nagWildcard{"Resource::*", anyReason}.suppression()}
		for _, w := range sp.wildcards {
			suppressions = append(suppressions, w.suppression())
		}
		cdknag.NagSuppressions_AddResourceSuppressions(role, &suppressions, jsii.Bool(true))
	}
	return f
}

// CanStop makes the teardown function the auto-stop schedules' target: the autostop function names it in each
// schedule, and the schedules' role may invoke it. The ARN is built from the function's fixed name, not
// referenced: the teardown function depends on the state machine (it restarts deployments), which depends on the
// autostop function.
func (f *Functions) CanStop(schedules *Schedules) {
	fn := f.ByName["teardown"]
	stack := awscdk.Stack_Of(fn)
	arn := stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("lambda"), Resource: jsii.String("function"),
		ResourceName: jsii.String(teardownFunctionName(stack)), ArnFormat: awscdk.ArnFormat_COLON_RESOURCE_NAME})
	f.ByName["autostop"].AddEnvironment(jsii.String("STOP_FUNCTION_ARN"), arn, nil)
	fn.GrantInvoke(schedules.Role)
	cdknag.NagSuppressions_AddResourceSuppressions(schedules.Role, &[]*cdknag.NagPackSuppression{
		nagWildcard{`/^Resource::<FunctionsTeardownFunction[0-9A-F]+\.Arn>:\*$/`,
			"lambda:InvokeFunction on the teardown function's versions and aliases (what GrantInvoke adds beside the function itself)."}.suppression(),
	}, jsii.Bool(true))
}

// teardownFunctionName is the teardown function's fixed name.
func teardownFunctionName(stack awscdk.Stack) string { return *stack.StackName() + "-teardown" }

// CanRestart lets the teardown function read the deploy state machine's
// executions and start one: the restart of a kept-running deployment whose
// task died on its own.
func (f *Functions) CanRestart(sm awsstepfunctions.StateMachine) {
	fn := f.ByName["teardown"]
	fn.AddEnvironment(jsii.String("STATE_MACHINE_ARN"), sm.StateMachineArn(), nil)
	sm.GrantStartExecution(fn)
	sm.GrantExecution(fn, jsii.String("states:DescribeExecution"))
	cdknag.NagSuppressions_AddResourceSuppressions(fn.Role(), &[]*cdknag.NagPackSuppression{
		nagWildcard{`/^Resource::arn:.+:states:.+:execution:.+:\*$/`,
			"states:DescribeExecution on the executions of the deploy state machine only (their names are generated or per deployment)."}.suppression(),
	}, jsii.Bool(true))
}

// CanWake lets the waker start the deploy state machine and read its executions (a wake is one).
func (f *Functions) CanWake(sm awsstepfunctions.StateMachine) {
	fn := f.ByName["waker"]
	fn.AddEnvironment(jsii.String("STATE_MACHINE_ARN"), sm.StateMachineArn(), nil)
	sm.GrantStartExecution(fn)
	sm.GrantExecution(fn, jsii.String("states:DescribeExecution"))
	cdknag.NagSuppressions_AddResourceSuppressions(fn.Role(), &[]*cdknag.NagPackSuppression{
		nagWildcard{`/^Resource::arn:.+:states:.+:execution:.+:\*$/`,
			"states:DescribeExecution on the executions of the deploy state machine only (a wake's is named <id>-w<n>)."}.suppression(),
	}, jsii.Bool(true))
}

// Workflow returns the eight Lambdas the state machine invokes (all but
// teardown, which EventBridge invokes), keyed by placeholder name.
func (f *Functions) Workflow() map[string]awslambda.Function {
	return map[string]awslambda.Function{
		"ValidateFunctionArn":  f.ByName["validate"],
		"ConfigureFunctionArn": f.ByName["configure"],
		"ImageFunctionArn":     f.ByName["image"],
		"CapacityFunctionArn":  f.ByName["capacity"],
		"RunTaskFunctionArn":   f.ByName["runtask"],
		"HealthFunctionArn":    f.ByName["health"],
		"AutoStopFunctionArn":  f.ByName["autostop"],
		"CleanupFunctionArn":   f.ByName["cleanup"],
	}
}

func statement(actions, resources []string, conditions *map[string]interface{}) awsiam.PolicyStatement {
	return awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:    jsii.Strings(actions...),
		Resources:  jsii.Strings(resources...),
		Conditions: conditions,
	})
}

// familyArns lets RunTask use any revision of the given families, and no
// other task definition.
func familyArns(stack awscdk.Stack, families []string) []string {
	out := make([]string, 0, len(families))
	for _, fam := range families {
		out = append(out, *stack.FormatArn(&awscdk.ArnComponents{
			Service: jsii.String("ecs"), Resource: jsii.String("task-definition"), ResourceName: jsii.String(fam + ":*"),
			ArnFormat: awscdk.ArnFormat_SLASH_RESOURCE_NAME,
		}))
	}
	return out
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// joinTokens joins possibly-unresolved string tokens with commas; CDK turns
// the result into an Fn::Join at synth.
func joinTokens(values *[]*string) string {
	parts := make([]string, 0, len(*values))
	for _, v := range *values {
		parts = append(parts, *v)
	}
	return strings.Join(parts, ",")
}

// nagWildcard is one cdk-nag AwsSolutions-IAM5 finding a role may keep, and
// why. Suppressing by finding (not the whole rule) means a new wildcard added
// later still fails the nag test.
type nagWildcard struct {
	// finding is cdk-nag's finding text ("Resource::*"), or a "/regex/"
	// when it holds logical ids or an account that varies.
	finding string
	reason  string
}

func (w nagWildcard) suppression() *cdknag.NagPackSuppression {
	var applies interface{} = w.finding
	if strings.HasPrefix(w.finding, "/") {
		applies = &cdknag.RegexAppliesTo{Regex: jsii.String(w.finding)}
	}
	return &cdknag.NagPackSuppression{
		Id: jsii.String("AwsSolutions-IAM5"), Reason: jsii.String(w.reason), AppliesTo: &[]interface{}{applies},
	}
}

// clusterTasksWildcard allows arn:...:task/<cluster>/*: task ids are
// generated by ECS, so the cluster is the narrowest scope.
func clusterTasksWildcard(reason string) nagWildcard {
	return nagWildcard{`/^Resource::arn:.+:ecs:.+:task\/<ComputeCluster[0-9A-F]+>\/\*$/`, reason}
}

// scheduleGroupWildcard allows every schedule of the project's group.
func scheduleGroupWildcard(reason string) nagWildcard {
	return nagWildcard{`/^Resource::arn:.+:scheduler:.+:schedule\/` + ScheduleGroupName + `\/\*$/`, reason}
}
