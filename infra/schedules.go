package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsscheduler"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// ScheduleGroupName is the EventBridge Scheduler group holding every dev
// auto-stop schedule; IAM scopes schedule actions to it.
const ScheduleGroupName = "ollama-ecs"

// Schedules is the schedule group and the role its schedules run as.
type Schedules struct {
	GroupName string
	Group     awsscheduler.ScheduleGroup
	// Role is assumed by EventBridge Scheduler and may only invoke the stop
	// (teardown) function (Functions.CanStop grants it).
	Role awsiam.Role
}

// NewSchedules creates the group and the scheduler role.
func NewSchedules(scope constructs.Construct, id string) *Schedules {
	c := constructs.NewConstruct(scope, jsii.String(id))
	stack := awscdk.Stack_Of(scope)
	group := awsscheduler.NewScheduleGroup(c, jsii.String("Group"), &awsscheduler.ScheduleGroupProps{
		ScheduleGroupName: jsii.String(ScheduleGroupName),
		RemovalPolicy:     awscdk.RemovalPolicy_DESTROY,
	})
	// Only schedules of this account may assume the role (confused deputy).
	role := awsiam.NewRole(c, jsii.String("Role"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("scheduler.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]interface{}{
				"StringEquals": map[string]interface{}{"aws:SourceAccount": stack.Account()},
			},
		}),
		Description: jsii.String("ollama-ecs auto-stop schedules: invoke the stop function only"),
	})
	return &Schedules{GroupName: ScheduleGroupName, Group: group, Role: role}
}

// ScheduleArnPattern matches every schedule in the group.
func (s *Schedules) ScheduleArnPattern(stack awscdk.Stack) string {
	return *stack.FormatArn(&awscdk.ArnComponents{
		Service: jsii.String("scheduler"), Resource: jsii.String("schedule"),
		ResourceName: jsii.String(s.GroupName + "/*"), ArnFormat: awscdk.ArnFormat_SLASH_RESOURCE_NAME,
	})
}
