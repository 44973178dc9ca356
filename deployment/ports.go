package deployment

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
)

// The AWS calls each step makes, as small interfaces with the SDK v2 method signatures: the SDK clients satisfy
// them on AWS, the local cloud satisfies them in local mode.

// ObjectReader reads model uploads.
type ObjectReader interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// ContainerInstances finds room for EC2 placements.
type ContainerInstances interface {
	ListContainerInstances(ctx context.Context, in *ecs.ListContainerInstancesInput, opts ...func(*ecs.Options)) (*ecs.ListContainerInstancesOutput, error)
	DescribeContainerInstances(ctx context.Context, in *ecs.DescribeContainerInstancesInput, opts ...func(*ecs.Options)) (*ecs.DescribeContainerInstancesOutput, error)
}

// CapacityProviders finds a capacity provider's Auto Scaling group.
type CapacityProviders interface {
	DescribeCapacityProviders(ctx context.Context, in *ecs.DescribeCapacityProvidersInput, opts ...func(*ecs.Options)) (*ecs.DescribeCapacityProvidersOutput, error)
}

// AutoScalingGroups tells whether a capacity provider's group can still scale out, and whether its launches fail.
type AutoScalingGroups interface {
	DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, opts ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	DescribeScalingActivities(ctx context.Context, in *autoscaling.DescribeScalingActivitiesInput, opts ...func(*autoscaling.Options)) (*autoscaling.DescribeScalingActivitiesOutput, error)
}

// Executions reads the deploy state machine's executions and starts new ones (a restart after an interruption).
type Executions interface {
	DescribeExecution(ctx context.Context, in *sfn.DescribeExecutionInput, opts ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error)
	StartExecution(ctx context.Context, in *sfn.StartExecutionInput, opts ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error)
}

// TaskTagger marks a stopped task (interrupted).
type TaskTagger interface {
	TagResource(ctx context.Context, in *ecs.TagResourceInput, opts ...func(*ecs.Options)) (*ecs.TagResourceOutput, error)
}

// ServiceQuotas reads the account's quotas (the EC2 running-instance vCPU quotas), applied or default.
type ServiceQuotas interface {
	GetServiceQuota(ctx context.Context, in *servicequotas.GetServiceQuotaInput, opts ...func(*servicequotas.Options)) (*servicequotas.GetServiceQuotaOutput, error)
	GetAWSDefaultServiceQuota(ctx context.Context, in *servicequotas.GetAWSDefaultServiceQuotaInput, opts ...func(*servicequotas.Options)) (*servicequotas.GetAWSDefaultServiceQuotaOutput, error)
}

// EC2Instances counts the vCPUs of running instances against a quota.
type EC2Instances interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// TaskLister lists and describes tasks.
type TaskLister interface {
	ListTasks(ctx context.Context, in *ecs.ListTasksInput, opts ...func(*ecs.Options)) (*ecs.ListTasksOutput, error)
	DescribeTasks(ctx context.Context, in *ecs.DescribeTasksInput, opts ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error)
}

// TaskRunner starts tasks, after looking for a live deployment of the same id.
type TaskRunner interface {
	TaskLister
	RunTask(ctx context.Context, in *ecs.RunTaskInput, opts ...func(*ecs.Options)) (*ecs.RunTaskOutput, error)
}

// TaskDescriber reads task state.
type TaskDescriber interface {
	DescribeTasks(ctx context.Context, in *ecs.DescribeTasksInput, opts ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error)
}

// TaskStopper finds and stops tasks.
type TaskStopper interface {
	TaskLister
	StopTask(ctx context.Context, in *ecs.StopTaskInput, opts ...func(*ecs.Options)) (*ecs.StopTaskOutput, error)
}

// Schedules creates and deletes one-time schedules.
type Schedules interface {
	CreateSchedule(ctx context.Context, in *scheduler.CreateScheduleInput, opts ...func(*scheduler.Options)) (*scheduler.CreateScheduleOutput, error)
	GetSchedule(ctx context.Context, in *scheduler.GetScheduleInput, opts ...func(*scheduler.Options)) (*scheduler.GetScheduleOutput, error)
	UpdateSchedule(ctx context.Context, in *scheduler.UpdateScheduleInput, opts ...func(*scheduler.Options)) (*scheduler.UpdateScheduleOutput, error)
	DeleteSchedule(ctx context.Context, in *scheduler.DeleteScheduleInput, opts ...func(*scheduler.Options)) (*scheduler.DeleteScheduleOutput, error)
}

var (
	_ ObjectReader       = (*s3.Client)(nil)
	_ ContainerInstances = (*ecs.Client)(nil)
	_ CapacityProviders  = (*ecs.Client)(nil)
	_ ServiceQuotas      = (*servicequotas.Client)(nil)
	_ EC2Instances       = (*ec2.Client)(nil)
	_ Executions         = (*sfn.Client)(nil)
	_ TaskTagger         = (*ecs.Client)(nil)
	_ AutoScalingGroups  = (*autoscaling.Client)(nil)
	_ TaskRunner         = (*ecs.Client)(nil)
	_ TaskDescriber      = (*ecs.Client)(nil)
	_ TaskStopper        = (*ecs.Client)(nil)
	_ Schedules          = (*scheduler.Client)(nil)
)

// ECSAPI is every ECS call the steps make, as one port (the SDK client on AWS, the local cluster in local mode).
type ECSAPI interface {
	TaskRunner
	TaskStopper
	TaskTagger
	ContainerInstances
	CapacityProviders
}

var _ ECSAPI = (*ecs.Client)(nil)
