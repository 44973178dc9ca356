package main

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// InstanceTypeAttribute is the attribute ECS sets on every container instance;
// the workflow pins a GPU task to a type with a memberOf constraint on it.
const InstanceTypeAttribute = "ecs.instance-type"

// PlacementExpression is the memberOf expression the runtask Lambda sends for
// a GPU instance type (the seed's get_task_configuration).
func PlacementExpression(instanceType string) string {
	return fmt.Sprintf("attribute:%s == %s", InstanceTypeAttribute, instanceType)
}

// Cluster is the ECS cluster with Fargate, Fargate Spot and one EC2 capacity
// provider per GPU instance type.
type Cluster struct {
	Cluster awsecs.Cluster
	// GpuCapacityProviders maps an instance type to its capacity provider
	// name, in settings order.
	GpuCapacityProviders []GpuCapacityProvider
}

// GpuCapacityProvider is one GPU instance type's Auto Scaling capacity.
type GpuCapacityProvider struct {
	InstanceType string
	Name         string
	Group        awsautoscaling.AutoScalingGroup
	Provider     awsecs.AsgCapacityProvider
}

// EnvValue renders the mapping as the Lambdas read it from
// GPU_CAPACITY_PROVIDERS: "type=providerName,type=providerName".
func (c *Cluster) EnvValue() string {
	parts := make([]string, 0, len(c.GpuCapacityProviders))
	for _, p := range c.GpuCapacityProviders {
		parts = append(parts, p.InstanceType+"="+p.Name)
	}
	return strings.Join(parts, ",")
}

// CapacityProviderName derives a stable provider name from the stack name and
// the instance type. A fixed, readable name lets the capacity Lambda and the
// console agree without a lookup; ECS forbids names starting with aws, ecs or
// fargate, which the stack-name prefix avoids.
func CapacityProviderName(stackName, instanceType string) string {
	return stackName + "-" + strings.ReplaceAll(instanceType, ".", "-")
}

// NewCluster creates the cluster. One Auto Scaling group per GPU type (not a
// mixed-instances group) because ECS places by instance type: a provider per
// type lets the workflow ask for exactly the type the planner chose, and
// managed scaling grows that group from zero when a task waits for it.
// GpuVolumeGiB is the GPU instances' root volume, which holds the image and the
// model of an EC2 task; the configure step plans disk against it.
const GpuVolumeGiB = 100

func NewCluster(scope constructs.Construct, id string, s Settings, net *Network) *Cluster {
	c := constructs.NewConstruct(scope, jsii.String(id))
	stackName := *awscdk.Stack_Of(scope).StackName()
	cluster := awsecs.NewCluster(c, jsii.String("Cluster"), &awsecs.ClusterProps{
		Vpc:                            net.Vpc,
		EnableFargateCapacityProviders: jsii.Bool(true),
		ContainerInsightsV2:            awsecs.ContainerInsights_ENABLED,
	})
	out := &Cluster{Cluster: cluster}

	for _, instanceType := range s.GpuInstanceTypes {
		key := strings.ReplaceAll(instanceType, ".", "")
		group := awsautoscaling.NewAutoScalingGroup(c, jsii.String("Gpu"+key), &awsautoscaling.AutoScalingGroupProps{
			Vpc:          net.Vpc,
			VpcSubnets:   net.PrivateSubnets,
			InstanceType: awsec2.NewInstanceType(jsii.String(instanceType)),
			// The SSM parameter of the GPU-optimised ECS AMI is resolved at
			// deploy time, so synth needs no AWS access.
			MachineImage:  awsecs.EcsOptimizedImage_AmazonLinux2023(awsecs.AmiHardwareType_GPU, nil),
			MinCapacity:   jsii.Number(0),
			MaxCapacity:   jsii.Number(float64(s.MaxGpuInstances)),
			RequireImdsv2: jsii.Bool(true),
			// The model cache (/var/lib/ollama) lives on the root volume so a
			// restarted task on the same instance does not download again.
			BlockDevices: &[]*awsautoscaling.BlockDevice{{
				DeviceName: jsii.String("/dev/xvda"),
				Volume: awsautoscaling.BlockDeviceVolume_Ebs(jsii.Number(GpuVolumeGiB), &awsautoscaling.EbsDeviceOptions{
					VolumeType: awsautoscaling.EbsDeviceVolumeType_GP3,
					Encrypted:  jsii.Bool(true),
				}),
			}},
		})
		name := CapacityProviderName(stackName, instanceType)
		provider := awsecs.NewAsgCapacityProvider(c, jsii.String("Gpu"+key+"Provider"), &awsecs.AsgCapacityProviderProps{
			AutoScalingGroup:      group,
			CapacityProviderName:  jsii.String(name),
			EnableManagedScaling:  jsii.Bool(true),
			TargetCapacityPercent: jsii.Number(100),
			// Managed termination protection stays off: with it on, instances
			// are protected from scale-in and `cdk destroy` hangs deleting the
			// capacity provider while any instance exists (aws-cdk issue 18179).
			// Managed scaling only removes instances that run no task, and
			// managed draining moves work off an instance before it goes, so
			// a running model is not cut by scale-in either way.
			EnableManagedTerminationProtection: jsii.Bool(false),
			EnableManagedDraining:              jsii.Bool(true),
		})
		cluster.AddAsgCapacityProvider(provider, nil)
		out.GpuCapacityProviders = append(out.GpuCapacityProviders, GpuCapacityProvider{
			InstanceType: instanceType, Name: name, Group: group, Provider: provider,
		})
	}
	return out
}
