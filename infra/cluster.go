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
	vpc                  awsec2.IVpc
	subnets              *awsec2.SubnetSelection
}

// GpuCapacityProvider is one GPU instance type's Auto Scaling capacity.
type GpuCapacityProvider struct {
	InstanceType string
	Name         string
	// Spot is true for the type's Spot group.
	Spot     bool
	Group    awsautoscaling.AutoScalingGroup
	Provider awsecs.AsgCapacityProvider
}

// EnvValue renders the mapping as the Lambdas read it from
// GPU_CAPACITY_PROVIDERS: "type=providerName,type:spot=spotProviderName".
func (c *Cluster) EnvValue() string {
	parts := make([]string, 0, len(c.GpuCapacityProviders))
	for _, p := range c.GpuCapacityProviders {
		key := p.InstanceType
		if p.Spot {
			key += ":spot"
		}
		parts = append(parts, key+"="+p.Name)
	}
	return strings.Join(parts, ",")
}

// SpotInstanceTypes are the GPU types with a Spot capacity provider, in settings order.
func (c *Cluster) SpotInstanceTypes() []string {
	types := []string{}
	for _, p := range c.GpuCapacityProviders {
		if p.Spot {
			types = append(types, p.InstanceType)
		}
	}
	return types
}

// CapacityProviderName derives a stable provider name from the stack name and
// the instance type. A fixed, readable name lets the capacity Lambda and the
// console agree without a lookup; ECS forbids names starting with aws, ecs or
// fargate, which the stack-name prefix avoids.
func CapacityProviderName(stackName, instanceType string) string {
	return stackName + "-" + strings.ReplaceAll(instanceType, ".", "-")
}

// GpuVolumeGiB is the GPU instances' root volume, which holds the image and the
// model of an EC2 task; the configure step plans disk against it.
const GpuVolumeGiB = 100

// SpotSuffix ends a Spot capacity provider's name, and its key in
// GPU_CAPACITY_PROVIDERS ends in ":spot" (the planner's SpotProviderSuffix).
const SpotSuffix = "-spot"

// NewCluster creates the cluster. One Auto Scaling group per GPU type (not a
// mixed-instances group) because ECS places by instance type: a provider per
// type lets the workflow ask for exactly the type the planner chose, and
// managed scaling grows that group from zero when a task waits for it. With
// gpuSpot on, each type has a second group of Spot instances and its own
// provider, which dev deployments try first.
func NewCluster(scope constructs.Construct, id string, s Settings, net *Network) *Cluster {
	c := constructs.NewConstruct(scope, jsii.String(id))
	stackName := *awscdk.Stack_Of(scope).StackName()
	cluster := awsecs.NewCluster(c, jsii.String("Cluster"), &awsecs.ClusterProps{
		Vpc:                            net.Vpc,
		EnableFargateCapacityProviders: jsii.Bool(true),
		ContainerInsightsV2:            awsecs.ContainerInsights_ENABLED,
	})
	out := &Cluster{Cluster: cluster, vpc: net.Vpc, subnets: net.PrivateSubnets}

	if region := awscdk.Stack_Of(scope).Region(); len(s.SpotMaxPrices) > 0 && !*awscdk.Token_IsUnresolved(region) && *region != s.ComputeDataRegion {
		awscdk.Annotations_Of(c).AddWarningV2(jsii.String("ollama-ecs:spotPriceRegion"), jsii.String(fmt.Sprintf(
			"the Spot groups' maximum prices are %s on-demand prices (catalog/data/compute.json); this stack is in %s, where on-demand may cost more and Spot launches may be refused: run `make prices REGION=%s` first",
			s.ComputeDataRegion, *region, *region)), nil)
	}
	for _, instanceType := range s.GpuInstanceTypes {
		out.addGpuCapacity(c, stackName, instanceType, s, "")
		if price := s.SpotMaxPrices[instanceType]; price != "" {
			out.addGpuCapacity(c, stackName, instanceType, s, price)
		}
	}
	return out
}

// addGpuCapacity adds one GPU type's Auto Scaling group and capacity provider:
// on-demand, or Spot at most at spotMaxPrice (an hourly USD price) when set.
func (out *Cluster) addGpuCapacity(c constructs.Construct, stackName, instanceType string, s Settings, spotMaxPrice string) {
	key := strings.ReplaceAll(instanceType, ".", "")
	name := CapacityProviderName(stackName, instanceType)
	var spotPrice *string
	if spotMaxPrice != "" {
		key, name, spotPrice = key+"Spot", name+SpotSuffix, jsii.String(spotMaxPrice)
	}
	group := awsautoscaling.NewAutoScalingGroup(c, jsii.String("Gpu"+key), &awsautoscaling.AutoScalingGroupProps{
		Vpc:          out.vpc,
		VpcSubnets:   out.subnets,
		InstanceType: awsec2.NewInstanceType(jsii.String(instanceType)),
		// The SSM parameter of the GPU-optimised ECS AMI is resolved at
		// deploy time, so synth needs no AWS access.
		MachineImage:  awsecs.EcsOptimizedImage_AmazonLinux2023(awsecs.AmiHardwareType_GPU, nil),
		MinCapacity:   jsii.Number(0),
		MaxCapacity:   jsii.Number(float64(s.MaxGpuInstances)),
		RequireImdsv2: jsii.Bool(true),
		// A Spot launch template: one-time requests that terminate on
		// interruption, never above the on-demand price.
		SpotPrice: spotPrice,
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
	// Spot draining: on the two-minute interruption notice the agent sets the
	// instance DRAINING, so nothing new lands on it.
	out.Cluster.AddAsgCapacityProvider(provider, &awsecs.AddAutoScalingGroupCapacityOptions{
		SpotInstanceDraining: jsii.Bool(spotMaxPrice != ""),
	})
	out.GpuCapacityProviders = append(out.GpuCapacityProviders, GpuCapacityProvider{
		InstanceType: instanceType, Name: name, Spot: spotMaxPrice != "", Group: group, Provider: provider,
	})
}
