package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// OllamaPort is where every Ollama container listens; the health Lambda is
// the only client the stack lets in.
const OllamaPort = 11434

// Network is the VPC side of the stack: where tasks and the health Lambda run,
// and the two security groups that make the Ollama port private to the
// health Lambda.
type Network struct {
	Vpc awsec2.IVpc
	// PrivateSubnets are where tasks, GPU instances and the health Lambda go:
	// nothing gets a public IP, image pulls leave through NAT.
	PrivateSubnets *awsec2.SubnetSelection
	// TaskSecurityGroup is attached to every Ollama task (RunTask SECURITY_GROUPS).
	TaskSecurityGroup awsec2.SecurityGroup
	// HealthSecurityGroup is the health Lambda's; it alone may reach port 11434.
	HealthSecurityGroup awsec2.SecurityGroup
}

// NewNetwork creates a VPC (two AZs, one NAT gateway: image pulls need egress
// but one gateway is enough for a dev-heavy, cost-first workload) or looks up
// the existing one from settings.
func NewNetwork(scope constructs.Construct, id string, s Settings) *Network {
	c := constructs.NewConstruct(scope, jsii.String(id))
	n := &Network{
		PrivateSubnets: &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS},
	}
	if s.VpcID != "" {
		n.Vpc = awsec2.Vpc_FromLookup(c, jsii.String("Vpc"), &awsec2.VpcLookupOptions{VpcId: jsii.String(s.VpcID)})
	} else {
		vpc := awsec2.NewVpc(c, jsii.String("Vpc"), &awsec2.VpcProps{
			MaxAzs:      jsii.Number(2),
			NatGateways: jsii.Number(1),
			SubnetConfiguration: &[]*awsec2.SubnetConfiguration{
				{Name: jsii.String("public"), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: jsii.Number(24)},
				{Name: jsii.String("private"), SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS, CidrMask: jsii.Number(20)},
			},
			RestrictDefaultSecurityGroup: jsii.Bool(true),
		})
		// Rejected traffic is what one looks for when a health check cannot
		// reach a task; a month of it is enough for that.
		flowLogs := awslogs.NewLogGroup(c, jsii.String("FlowLogs"), &awslogs.LogGroupProps{
			Retention:     awslogs.RetentionDays_ONE_MONTH,
			RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
		})
		vpc.AddFlowLog(jsii.String("FlowLog"), &awsec2.FlowLogOptions{
			Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(flowLogs, nil),
			TrafficType: awsec2.FlowLogTrafficType_REJECT,
		})
		n.Vpc = vpc
	}

	n.HealthSecurityGroup = awsec2.NewSecurityGroup(c, jsii.String("HealthSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              n.Vpc,
		Description:      jsii.String("ollama-ecs health Lambda: the only client of the Ollama port"),
		AllowAllOutbound: jsii.Bool(true),
	})
	n.TaskSecurityGroup = awsec2.NewSecurityGroup(c, jsii.String("TaskSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              n.Vpc,
		Description:      jsii.String("ollama-ecs tasks: Ollama port open to the health Lambda only"),
		AllowAllOutbound: jsii.Bool(true),
	})
	n.TaskSecurityGroup.AddIngressRule(n.HealthSecurityGroup, awsec2.Port_Tcp(jsii.Number(OllamaPort)),
		jsii.String("Ollama API from the health Lambda"), jsii.Bool(false))
	return n
}
