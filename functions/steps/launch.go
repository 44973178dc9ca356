package steps

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"
	sqtypes "github.com/aws/aws-sdk-go-v2/service/servicequotas/types"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// Launches tells whether a GPU instance that a capacity provider must add can come at all. "The Auto Scaling group
// is below its maximum" is not enough on a real account: the account's vCPU quota for the instance family may be
// used up, or the zone may have no capacity (InsufficientInstanceCapacity), and then the group records a failed
// launch activity and the task waits in PROVISIONING for an instance that never comes.
type Launches struct {
	ECS    deployment.CapacityProviders
	Groups deployment.AutoScalingGroups
	// Quotas and Instances check the account's running-instance vCPU quota; nil Quotas skips the check.
	Quotas    deployment.ServiceQuotas
	Instances deployment.EC2Instances
	// VCPUs is an instance type's vCPU count; nil means the catalog's.
	VCPUs func(instanceType string) int
	// FailureWindow is how far back a failed launch activity still refuses a group (default 15 minutes): a later
	// successful launch clears it at once.
	FailureWindow time.Duration
	Now           func() time.Time
}

// vcpuQuota is one EC2 quota on running instances, in vCPUs (Service Quotas, service code ec2).
type vcpuQuota struct{ code, name string }

// The EC2 vCPU quotas by instance family: on running On-Demand instances, and on Spot requests.
var (
	vcpuQuotas = map[string]vcpuQuota{
		"g":  {"L-DB2E81BA", "Running On-Demand G and VT instances"},
		"vt": {"L-DB2E81BA", "Running On-Demand G and VT instances"},
		"p":  {"L-417A185B", "Running On-Demand P instances"},
	}
	spotVCPUQuotas = map[string]vcpuQuota{
		"g":  {"L-3819A6DF", "All G and VT Spot Instance Requests"},
		"vt": {"L-3819A6DF", "All G and VT Spot Instance Requests"},
		"p":  {"L-7212CCBC", "All P Spot Instance Requests"},
	}
)

// family is an instance type's family letters: "g4dn.xlarge" → "g", "vt1.3xlarge" → "vt".
func family(instanceType string) string {
	i := strings.IndexAny(instanceType, "0123456789")
	if i < 0 {
		return instanceType
	}
	return instanceType[:i]
}

func (l *Launches) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Launches) vcpus(instanceType string) int {
	if l.VCPUs != nil {
		return l.VCPUs(instanceType)
	}
	if t, err := catalog.Default().InstanceType(instanceType); err == nil {
		return t.VCPU
	}
	return 0
}

// QuotaRoom reports whether one more instance of the type fits in the account's vCPU quota for its family, the
// On-Demand one or (spot) the Spot one. An unknown family, or a quota Service Quotas does not report, is room
// (said in the reason).
func (l *Launches) QuotaRoom(ctx context.Context, instanceType string, spot bool) (bool, string, error) {
	quotas := vcpuQuotas
	if spot {
		quotas = spotVCPUQuotas
	}
	q, ok := quotas[family(instanceType)]
	if !ok || l.Quotas == nil {
		return true, "no vCPU quota checked for " + instanceType, nil
	}
	// The account's applied value; an account that never had one applied has only the default (0 G vCPUs on a
	// new account, which is the case this check exists for).
	var quota *sqtypes.ServiceQuota
	out, err := l.Quotas.GetServiceQuota(ctx, &servicequotas.GetServiceQuotaInput{
		ServiceCode: aws.String("ec2"), QuotaCode: aws.String(q.code)})
	switch {
	case err == nil:
		quota = out.Quota
	case deployment.IsCode(err, "NoSuchResourceException"):
		def, derr := l.Quotas.GetAWSDefaultServiceQuota(ctx, &servicequotas.GetAWSDefaultServiceQuotaInput{
			ServiceCode: aws.String("ec2"), QuotaCode: aws.String(q.code)})
		if deployment.IsCode(derr, "NoSuchResourceException") {
			return true, fmt.Sprintf("quota %s (%s) not reported", q.code, q.name), nil
		}
		if derr != nil {
			return false, "", deployment.AWSError("servicequotas:GetAWSDefaultServiceQuota", derr)
		}
		quota = def.Quota
	default:
		return false, "", deployment.AWSError("servicequotas:GetServiceQuota", err)
	}
	if quota == nil || quota.Value == nil {
		return true, fmt.Sprintf("quota %s (%s) has no value", q.code, q.name), nil
	}
	limit := int(*quota.Value)
	used, err := l.runningVCPUs(ctx, quotas, q.code, spot)
	if err != nil {
		return false, "", err
	}
	need := l.vcpus(instanceType)
	detail := fmt.Sprintf("account quota %q is %d vCPUs, %d in use, %s needs %d", q.name, limit, used, instanceType, need)
	return used+need <= limit, detail, nil
}

// runningVCPUs adds up the vCPUs of the account's pending and running instances whose family the quota covers:
// Spot instances for a Spot quota, the others for an On-Demand one. The family is matched here rather than by a
// wildcard instance-type filter, which not every EC2 endpoint (moto, for one) honours.
func (l *Launches) runningVCPUs(ctx context.Context, quotas map[string]vcpuQuota, quotaCode string, spot bool) (int, error) {
	in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}},
	}}
	total := 0
	for {
		out, err := l.Instances.DescribeInstances(ctx, in)
		if err != nil {
			return 0, deployment.AWSError("ec2:DescribeInstances", err)
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				if q, ok := quotas[family(string(inst.InstanceType))]; !ok || q.code != quotaCode ||
					(inst.InstanceLifecycle == ec2types.InstanceLifecycleTypeSpot) != spot {
					continue
				}
				if c := inst.CpuOptions; c != nil && c.CoreCount != nil && c.ThreadsPerCore != nil {
					total += int(*c.CoreCount * *c.ThreadsPerCore)
				} else {
					total += l.vcpus(string(inst.InstanceType))
				}
			}
		}
		if out.NextToken == nil {
			return total, nil
		}
		in.NextToken = out.NextToken
	}
}

// Group finds a capacity provider's Auto Scaling group; ok is false (with why) when it has none.
func (l *Launches) Group(ctx context.Context, provider string) (g astypes.AutoScalingGroup, why string, err error) {
	out, err := l.ECS.DescribeCapacityProviders(ctx, &ecs.DescribeCapacityProvidersInput{CapacityProviders: []string{provider}})
	if err != nil {
		return g, "", deployment.AWSError("ecs:DescribeCapacityProviders", err)
	}
	if len(out.CapacityProviders) == 0 || out.CapacityProviders[0].AutoScalingGroupProvider == nil {
		return g, "capacity provider not found", nil
	}
	name := aws.ToString(out.CapacityProviders[0].AutoScalingGroupProvider.AutoScalingGroupArn)
	if i := strings.LastIndex(name, "autoScalingGroupName/"); i >= 0 {
		name = name[i+len("autoScalingGroupName/"):]
	}
	if l.Groups == nil {
		return g, "no Auto Scaling client", nil
	}
	groups, err := l.Groups.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		return g, "", deployment.AWSError("autoscaling:DescribeAutoScalingGroups", err)
	}
	if len(groups.AutoScalingGroups) == 0 {
		return g, "Auto Scaling group " + name + " not found", nil
	}
	return groups.AutoScalingGroups[0], "", nil
}

// LaunchFailure returns the status message of the group's newest launch activity when it failed or was cancelled
// at or after since, and "" otherwise: no launch since, or the newest one succeeded or is still under way (Auto
// Scaling often fails in one zone, then launches in another). Scale-in activities are not launches.
func (l *Launches) LaunchFailure(ctx context.Context, group string, since time.Time) (string, error) {
	out, err := l.Groups.DescribeScalingActivities(ctx, &autoscaling.DescribeScalingActivitiesInput{
		AutoScalingGroupName: aws.String(group), MaxRecords: aws.Int32(10)})
	if err != nil {
		return "", deployment.AWSError("autoscaling:DescribeScalingActivities", err)
	}
	// Activities come newest first; the newest launch decides.
	for _, a := range out.Activities {
		if a.StartTime != nil && a.StartTime.Before(since) {
			return "", nil
		}
		if !strings.HasPrefix(aws.ToString(a.Description), "Launching") {
			continue
		}
		switch a.StatusCode {
		case astypes.ScalingActivityStatusCodeFailed, astypes.ScalingActivityStatusCodeCancelled:
			msg := aws.ToString(a.StatusMessage)
			if msg == "" {
				msg = aws.ToString(a.Description)
			}
			return fmt.Sprintf("Auto Scaling group %s could not launch an instance: %s", group, msg), nil
		}
		return "", nil
	}
	return "", nil
}

func (l *Launches) failureWindow() time.Duration {
	if l.FailureWindow > 0 {
		return l.FailureWindow
	}
	return 15 * time.Minute
}
