package moto

import (
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// Network is where a test cluster's awsvpc tasks go.
type Network struct {
	Subnets, SecurityGroups []string
	VpcID                   string
}

// Cluster creates what the stack gives the steps in moto: an ECS cluster, a VPC with DNS host names (moto needs
// them to give a task an ENI), a subnet and a security group, and the two task definitions, ollama-cpu (Fargate)
// and ollama-gpu (EC2), with the ollama and fetch containers. moto needs a memory figure on each container.
func (s *Server) Cluster(t testing.TB, name string) Network {
	t.Helper()
	ctx := Context(t)
	cfg := s.Config()
	ecsc, ec2c := ecs.NewFromConfig(cfg), ec2.NewFromConfig(cfg)
	if _, err := ecsc.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	vpc, err := ec2c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: vpc.Vpc.VpcId,
		EnableDnsHostnames: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)}}); err != nil {
		t.Fatal(err)
	}
	subnet, err := ec2c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.0.1.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	sg, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("ollama-task"),
		Description: aws.String("task"), VpcId: vpc.Vpc.VpcId})
	if err != nil {
		t.Fatal(err)
	}
	for family, compat := range map[string]ecstypes.Compatibility{"ollama-cpu": ecstypes.CompatibilityFargate, "ollama-gpu": ecstypes.CompatibilityEc2} {
		if _, err := ecsc.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
			Family: aws.String(family), NetworkMode: ecstypes.NetworkModeAwsvpc, Cpu: aws.String("2048"), Memory: aws.String("8192"),
			RequiresCompatibilities: []ecstypes.Compatibility{compat},
			ContainerDefinitions: []ecstypes.ContainerDefinition{
				{Name: aws.String("ollama"), Image: aws.String("ollama/ollama:0.17.4"), Essential: aws.Bool(true), MemoryReservation: aws.Int32(1024)},
				{Name: aws.String("fetch"), Image: aws.String("public.ecr.aws/aws-cli/aws-cli"), Essential: aws.Bool(false), MemoryReservation: aws.Int32(128)},
			},
		}); err != nil {
			t.Fatal(err)
		}
	}
	return Network{Subnets: []string{aws.ToString(subnet.Subnet.SubnetId)}, SecurityGroups: []string{aws.ToString(sg.GroupId)},
		VpcID: aws.ToString(vpc.Vpc.VpcId)}
}

// LoadBalancer is what the stack's load balancer gives the steps: its listener, its CloudWatch name and its URL.
type LoadBalancer struct {
	ListenerArn, FullName, DNSName string
}

// LoadBalancer creates an internal Application Load Balancer in the network's VPC (a second subnet in another
// zone, as an ALB needs) and its listener, whose default action is the stack's 404.
func (s *Server) LoadBalancer(t testing.TB, n Network) LoadBalancer {
	t.Helper()
	ctx := Context(t)
	cfg := s.Config()
	ec2c, lb := ec2.NewFromConfig(cfg), elbv2.NewFromConfig(cfg)
	second, err := ec2c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(n.VpcID), CidrBlock: aws.String("10.0.2.0/24"),
		AvailabilityZone: aws.String("us-east-1b")})
	if err != nil {
		t.Fatal(err)
	}
	alb, err := lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("ollama-ecs"), Type: elbtypes.LoadBalancerTypeEnumApplication,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: append(slices.Clone(n.Subnets), aws.ToString(second.Subnet.SubnetId)),
		SecurityGroups: n.SecurityGroups})
	if err != nil {
		t.Fatal(err)
	}
	a := alb.LoadBalancers[0]
	l, err := lb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: a.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumHttp, Port: aws.Int32(80),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumFixedResponse, FixedResponseConfig: &elbtypes.FixedResponseActionConfig{
			StatusCode: aws.String("404"), ContentType: aws.String("application/json"), MessageBody: aws.String(`{"error":"no deployment at this path"}`)}}}})
	if err != nil {
		t.Fatal(err)
	}
	arn := aws.ToString(a.LoadBalancerArn)
	return LoadBalancer{ListenerArn: aws.ToString(l.Listeners[0].ListenerArn), FullName: arn[strings.Index(arn, "loadbalancer/")+len("loadbalancer/"):],
		DNSName: aws.ToString(a.DNSName)}
}
