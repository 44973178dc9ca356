package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

const (
	// EventBusName, EventSource and the detail types are the contract of
	// the CLI and anyone else who puts deploy or stop requests.
	EventBusName      = "ollama-ecs"
	EventSource       = "ollama-ecs"
	DeployRequestType = "Deploy Request"
	StopRequestType   = "Stop Request"
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
}

// NewTriggers creates the project's event bus with the deploy and stop
// rules, the S3 upload rule on the default bus (where S3 sends its events),
// and the nightly dev teardown. Every target receives the whole event, so
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
	awsevents.NewRule(c, jsii.String("DevTeardown"), &awsevents.RuleProps{
		Description: jsii.String("scheduled stop of every dev deployment, behind the per-deployment TTL"),
		Schedule:    awsevents.Schedule_Expression(jsii.String(p.Settings.TeardownCron)),
		Targets:     &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(p.Teardown, nil)},
	})
	return &Triggers{Bus: bus}
}
