package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsscheduler"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsschedulertargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

const (
	// EventBusName, EventSource and the detail types are the contract of
	// the CLI and anyone else who puts deploy or stop requests.
	EventBusName      = "ollama-ecs"
	EventSource       = "ollama-ecs"
	DeployRequestType = "Deploy Request"
	StopRequestType   = "Stop Request"
	// TeardownSource and TeardownType are the scheduled teardown's input; TaskStateSource and TaskStateType
	// ECS's task state change events.
	TeardownSource  = "aws.scheduler"
	TeardownType    = "Scheduled Event"
	TaskStateSource = "aws.ecs"
	TaskStateType   = "ECS Task State Change"
)

// Triggers are the ways a deployment starts or stops.
type Triggers struct {
	Bus awsevents.EventBus
}

// TriggersProps are what the rules target.
type TriggersProps struct {
	Settings     Settings
	StateMachine awsstepfunctions.IStateMachine
	Teardown     awslambda.IFunction
	ModelBucket  awss3.IBucket
	// ClusterArn is the cluster whose stopped tasks the teardown function hears.
	ClusterArn *string
}

// NewTriggers creates the project's event bus with the deploy and stop
// rules, the S3 upload rule and the task-stopped rule on the default bus
// (where S3 and ECS send their events), and the nightly dev teardown. Every target receives the whole event, so
// the workflow sees the same envelope whatever started it.
func NewTriggers(scope constructs.Construct, id string, p TriggersProps) *Triggers {
	c := constructs.NewConstruct(scope, jsii.String(id))
	bus := awsevents.NewEventBus(c, jsii.String("Bus"), &awsevents.EventBusProps{EventBusName: jsii.String(EventBusName)})

	awsevents.NewRule(c, jsii.String("DeployRequest"), &awsevents.RuleProps{
		EventBus:    bus,
		Description: jsii.String("ollama-ecs deploy requests start the deploy workflow"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings(EventSource),
			DetailType: jsii.Strings(DeployRequestType),
		},
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewSfnStateMachine(p.StateMachine, nil)},
	})
	awsevents.NewRule(c, jsii.String("StopRequest"), &awsevents.RuleProps{
		EventBus:    bus,
		Description: jsii.String("ollama-ecs stop requests go to the teardown Lambda"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings(EventSource),
			DetailType: jsii.Strings(StopRequestType),
		},
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(p.Teardown, nil)},
	})
	awsevents.NewRule(c, jsii.String("ModelUploaded"), &awsevents.RuleProps{
		Description: jsii.String("a model uploaded under the model prefix starts the deploy workflow"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings("aws.s3"),
			DetailType: jsii.Strings("Object Created"),
			Detail: &map[string]interface{}{
				"bucket": map[string]interface{}{"name": []interface{}{p.ModelBucket.BucketName()}},
				"object": map[string]interface{}{"key": []interface{}{map[string]interface{}{"prefix": p.Settings.ModelPrefix}}},
			},
		},
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewSfnStateMachine(p.StateMachine, nil)},
	})
	awsevents.NewRule(c, jsii.String("TaskStopped"), &awsevents.RuleProps{
		Description: jsii.String("a task of the cluster that stopped on its own (interruption, crash) goes to the teardown Lambda"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings(TaskStateSource),
			DetailType: jsii.Strings(TaskStateType),
			Detail: &map[string]interface{}{
				"clusterArn": []interface{}{p.ClusterArn},
				"lastStatus": []interface{}{"STOPPED"},
				// Stops this system and its users ask for are not interruptions.
				"stopCode": []interface{}{map[string]interface{}{"anything-but": []interface{}{"UserInitiated"}}},
			},
		},
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(p.Teardown, nil)},
	})
	// EventBridge Scheduler, unlike a rule, reads the cron in a time zone, so "every evening" is the operator's
	// evening. The input has the shape of a scheduled event, which the teardown function reads as the teardown.
	// Only schedules of this account may assume its role (confused deputy).
	role := awsiam.NewRole(c, jsii.String("TeardownScheduleRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("scheduler.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]interface{}{
				"StringEquals": map[string]interface{}{"aws:SourceAccount": awscdk.Stack_Of(scope).Account()},
			},
		}),
		Description: jsii.String("ollama-ecs nightly dev teardown schedule: invoke the teardown Lambda only"),
	})
	awsscheduler.NewSchedule(c, jsii.String("DevTeardownSchedule"), &awsscheduler.ScheduleProps{
		Description: jsii.String("scheduled stop of every dev deployment, behind the per-deployment TTL"),
		Schedule: awsscheduler.ScheduleExpression_Expression(jsii.String(p.Settings.TeardownCron),
			awscdk.TimeZone_Of(jsii.String(p.Settings.TeardownTimezone))),
		Target: awsschedulertargets.NewLambdaInvoke(p.Teardown, &awsschedulertargets.ScheduleTargetBaseProps{
			Input: awsscheduler.ScheduleTargetInput_FromObject(map[string]interface{}{
				"version": "0", "id": awsscheduler.ContextAttribute_ExecutionId(),
				"source": TeardownSource, "detail-type": TeardownType,
				"time":      awsscheduler.ContextAttribute_ScheduledTime(),
				"resources": []interface{}{awsscheduler.ContextAttribute_ScheduleArn()},
				"detail":    map[string]interface{}{},
			}),
			RetryAttempts: jsii.Number(3),
			Role:          role,
		}),
	})
	// After the schedule: its target wrote the role's policy.
	cdknag.NagSuppressions_AddResourceSuppressions(role, &[]*cdknag.NagPackSuppression{
		nagWildcard{`/^Resource::<FunctionsTeardownFunction[0-9A-F]+\.Arn>:\*$/`,
			"lambda:InvokeFunction on the teardown function and its versions (:*), as grantInvoke writes it."}.suppression(),
	}, jsii.Bool(true))
	return &Triggers{Bus: bus}
}
