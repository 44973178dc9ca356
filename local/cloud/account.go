package cloud

import (
	"context"
	"path"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"
	sqtypes "github.com/aws/aws-sdk-go-v2/service/servicequotas/types"
)

// Account is the local account's view of EC2 instances and Service Quotas: the cluster's container instances
// are its running instances, and the cluster file's serviceQuotas its quotas.
type Account struct{ ecs *ECS }

// Account returns the EC2 and Service Quotas APIs over this cluster.
func (e *ECS) Account() *Account { return &Account{ecs: e} }

// GetServiceQuota answers the configured quotas of service ec2; any other is NoSuchResourceException.
func (a *Account) GetServiceQuota(_ context.Context, in *servicequotas.GetServiceQuotaInput, _ ...func(*servicequotas.Options)) (*servicequotas.GetServiceQuotaOutput, error) {
	code := aws.ToString(in.QuotaCode)
	v, ok := a.ecs.cfg.ServiceQuotas[code]
	if aws.ToString(in.ServiceCode) != "ec2" || !ok {
		return nil, &sqtypes.NoSuchResourceException{Message: aws.String("The request failed because the specified resource does not exist.")}
	}
	return &servicequotas.GetServiceQuotaOutput{Quota: &sqtypes.ServiceQuota{
		ServiceCode: aws.String("ec2"), QuotaCode: aws.String(code), Value: aws.Float64(v), Unit: aws.String("None"),
	}}, nil
}

// GetAWSDefaultServiceQuota answers as an account where only the applied quotas are known: NoSuchResourceException.
func (a *Account) GetAWSDefaultServiceQuota(_ context.Context, in *servicequotas.GetAWSDefaultServiceQuotaInput, _ ...func(*servicequotas.Options)) (*servicequotas.GetAWSDefaultServiceQuotaOutput, error) {
	return nil, &sqtypes.NoSuchResourceException{Message: aws.String("The request failed because the specified resource does not exist.")}
}

// DescribeInstances lists the cluster's container instances as running EC2 instances, filtered by
// instance-type (with * wildcards) and instance-state-name.
func (a *Account) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	e := a.ecs
	e.mu.Lock()
	defer e.mu.Unlock()
	res := ec2types.Reservation{ReservationId: aws.String("r-local")}
	for _, ci := range e.instances {
		if !matchFilters(in.Filters, map[string]string{"instance-type": ci.typ, "instance-state-name": "running"}) {
			continue
		}
		vcpu := int32(ci.cpu / 1024)
		inst := ec2types.Instance{
			InstanceId: aws.String(ci.ec2ID), InstanceType: ec2types.InstanceType(ci.typ),
			State:      &ec2types.InstanceState{Name: ec2types.InstanceStateNameRunning, Code: aws.Int32(16)},
			CpuOptions: &ec2types.CpuOptions{CoreCount: aws.Int32(max(1, vcpu/2)), ThreadsPerCore: aws.Int32(min(2, max(1, vcpu)))},
			Placement:  &ec2types.Placement{AvailabilityZone: aws.String(ci.az)},
		}
		if p := e.providers[ci.provider]; p != nil && p.cfg.Spot {
			inst.InstanceLifecycle = ec2types.InstanceLifecycleTypeSpot
		}
		res.Instances = append(res.Instances, inst)
	}
	out := &ec2.DescribeInstancesOutput{}
	if len(res.Instances) > 0 {
		out.Reservations = []ec2types.Reservation{res}
	}
	return out, nil
}

// matchFilters applies EC2 filters (any value of a filter matches, every filter must match; * is a wildcard).
func matchFilters(filters []ec2types.Filter, fields map[string]string) bool {
	for _, f := range filters {
		v, known := fields[aws.ToString(f.Name)]
		if !known {
			continue
		}
		if !slices.ContainsFunc(f.Values, func(pattern string) bool {
			ok, err := path.Match(strings.ToLower(pattern), strings.ToLower(v))
			return err == nil && ok
		}) {
			return false
		}
	}
	return true
}
