package steps

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"
	sqtypes "github.com/aws/aws-sdk-go-v2/service/servicequotas/types"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// activities answers DescribeScalingActivities with a fixed list, newest first.
type activities struct{ list []astypes.Activity }

var _ deployment.AutoScalingGroups = (*activities)(nil)

func (a *activities) DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	return &autoscaling.DescribeAutoScalingGroupsOutput{}, nil
}

func (a *activities) DescribeScalingActivities(context.Context, *autoscaling.DescribeScalingActivitiesInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeScalingActivitiesOutput, error) {
	return &autoscaling.DescribeScalingActivitiesOutput{Activities: a.list}, nil
}

func TestLaunchFailure(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	act := func(desc string, code astypes.ScalingActivityStatusCode, ago time.Duration) astypes.Activity {
		return astypes.Activity{Description: aws.String(desc), StatusCode: code, StartTime: aws.Time(now.Add(-ago)),
			StatusMessage: aws.String(desc + ": " + string(code))}
	}
	const launch, terminate = "Launching a new EC2 instance", "Terminating EC2 instance: i-1"
	tests := []struct {
		name string
		list []astypes.Activity
		want string // part of the failure; "" for none
	}{
		{"newest launch failed", []astypes.Activity{act(launch, "Failed", time.Minute)}, "could not launch"},
		{"a newer launch is under way (another zone)", []astypes.Activity{act(launch, "InProgress", 0), act(launch, "Failed", time.Minute)}, ""},
		{"a later launch succeeded", []astypes.Activity{act(launch, "Successful", 0), act(launch, "Cancelled", time.Minute)}, ""},
		{"a scale-in is not a launch", []astypes.Activity{act(terminate, "Successful", 0), act(launch, "Cancelled", time.Minute)}, "Cancelled"},
		{"a failure before the window", []astypes.Activity{act(launch, "Failed", time.Hour)}, ""},
		{"no activity", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &Launches{Groups: &activities{list: tt.list}}
			got, err := l.LaunchFailure(context.Background(), "asg", now.Add(-15*time.Minute))
			if err != nil || (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("LaunchFailure = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// quotas answers the applied quota (or NoSuchResourceException when applied < 0) and the default.
type quotas struct{ applied, def float64 }

var _ deployment.ServiceQuotas = quotas{}

func (q quotas) GetServiceQuota(context.Context, *servicequotas.GetServiceQuotaInput, ...func(*servicequotas.Options)) (*servicequotas.GetServiceQuotaOutput, error) {
	if q.applied < 0 {
		return nil, &sqtypes.NoSuchResourceException{Message: aws.String("none")}
	}
	return &servicequotas.GetServiceQuotaOutput{Quota: &sqtypes.ServiceQuota{Value: aws.Float64(q.applied)}}, nil
}

func (q quotas) GetAWSDefaultServiceQuota(context.Context, *servicequotas.GetAWSDefaultServiceQuotaInput, ...func(*servicequotas.Options)) (*servicequotas.GetAWSDefaultServiceQuotaOutput, error) {
	if q.def < 0 {
		return nil, &sqtypes.NoSuchResourceException{Message: aws.String("none")}
	}
	return &servicequotas.GetAWSDefaultServiceQuotaOutput{Quota: &sqtypes.ServiceQuota{Value: aws.Float64(q.def)}}, nil
}

// instances answers DescribeInstances with fixed instances.
type instances []ec2types.Instance

func (i instances) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: i}}}, nil
}

func TestQuotaRoom(t *testing.T) {
	running := instances{
		{InstanceType: "g4dn.xlarge"}, // 4 vCPUs
		{InstanceType: "g5.xlarge", InstanceLifecycle: ec2types.InstanceLifecycleTypeSpot}, // Spot: another quota
		{InstanceType: "p3.2xlarge"}, // P family: another quota
		{InstanceType: "m5.large"},
	}
	tests := []struct {
		name string
		q    quotas
		ok   bool
		want string
	}{
		{"room", quotas{applied: 16}, true, "is 16 vCPUs, 4 in use, g4dn.2xlarge needs 8"},
		{"full", quotas{applied: 8}, false, "is 8 vCPUs, 4 in use, g4dn.2xlarge needs 8"},
		{"no applied value: the default, 0 on a new account", quotas{applied: -1, def: 0}, false, "is 0 vCPUs"},
		{"not reported at all", quotas{applied: -1, def: -1}, true, "not reported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &Launches{Quotas: tt.q, Instances: running}
			ok, reason, err := l.QuotaRoom(context.Background(), "g4dn.2xlarge", false)
			if err != nil || ok != tt.ok || !strings.Contains(reason, tt.want) {
				t.Errorf("QuotaRoom = %v, %q, %v; want %v and %q", ok, reason, err, tt.ok, tt.want)
			}
		})
	}
	// A Spot instance counts against the Spot quota only: the g5.xlarge Spot instance is the 4 vCPUs in use.
	ok, reason, err := (&Launches{Quotas: quotas{applied: 8}, Instances: running}).QuotaRoom(context.Background(), "g4dn.xlarge", true)
	if !ok || err != nil || !strings.Contains(reason, `"All G and VT Spot Instance Requests" is 8 vCPUs, 4 in use, g4dn.xlarge needs 4`) {
		t.Errorf("Spot quota: %v %q %v", ok, reason, err)
	}
	if ok, reason, err := (&Launches{Quotas: quotas{applied: 0}, Instances: running}).QuotaRoom(context.Background(), "inf2.xlarge", false); !ok || err != nil || !strings.Contains(reason, "no vCPU quota checked") {
		t.Errorf("a family without a checked quota: %v %q %v", ok, reason, err)
	}
}
