package main

import (
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	elbv2 "github.com/aws/aws-cdk-go/awscdk/v2/awselasticloadbalancingv2"
	elbv2targets "github.com/aws/aws-cdk-go/awscdk/v2/awselasticloadbalancingv2targets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// LoadBalancer is the stack's one Application Load Balancer: every deployment is a path on its listener
// (/d/<id>), whose target group and rules the runtask function creates at run time. Its listener answers 404 to
// any other path.
type LoadBalancer struct {
	Alb           elbv2.ApplicationLoadBalancer
	Listener      elbv2.ApplicationListener
	SecurityGroup awsec2.SecurityGroup
	// EndpointBase is the URL clients reach it at: http://<dns name>, or https:// with a certificate.
	EndpointBase string
	// WakerTargets is the lambda target group of the waker, where a sleeping deployment's rules forward (the
	// function is added by AddWaker).
	WakerTargets elbv2.ApplicationTargetGroup
}

// WakerTargetGroupName is the waker's target group name for a stack (at most 32 characters).
func WakerTargetGroupName(stackName string) string {
	name := strings.ToLower(stackName)
	return name[:min(len(name), 26)] + "-waker"
}

// AddWaker makes the waker function the target of the waker target group (which lets the load balancer invoke it).
func (lb *LoadBalancer) AddWaker(fn awslambda.IFunction) {
	lb.WakerTargets.AddTarget(elbv2targets.NewLambdaTarget(fn))
}

// NewLoadBalancer creates the load balancer, internal by default (the VPC and the allowed CIDRs may call it);
// internet-facing only with source CIDRs. Only it and the health function may reach the tasks' Ollama port.
func NewLoadBalancer(scope constructs.Construct, id string, s Settings, n *Network, logs *Storage) *LoadBalancer {
	c := constructs.NewConstruct(scope, jsii.String(id))
	sg := awsec2.NewSecurityGroup(c, jsii.String("SecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc: n.Vpc, Description: jsii.String("ollama-ecs load balancer: the allowed sources in, the Ollama port of the tasks out"),
		AllowAllOutbound: jsii.Bool(false),
	})
	subnets := n.PrivateSubnets
	if s.InternetFacing {
		subnets = &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PUBLIC}
	}
	alb := elbv2.NewApplicationLoadBalancer(c, jsii.String("Alb"), &elbv2.ApplicationLoadBalancerProps{
		Vpc: n.Vpc, InternetFacing: jsii.Bool(s.InternetFacing), SecurityGroup: sg, VpcSubnets: subnets,
		DropInvalidHeaderFields: jsii.Bool(true),
		// A generation streams for minutes; the default 60 s idle timeout would cut a slow one between tokens.
		IdleTimeout: awscdk.Duration_Seconds(jsii.Number(600)),
	})
	alb.LogAccessLogs(logs.AccessLogs, jsii.String("alb"))
	props := &elbv2.BaseApplicationListenerProps{
		Protocol: elbv2.ApplicationProtocol_HTTP, Port: jsii.Number(80), Open: jsii.Bool(false),
		DefaultAction: elbv2.ListenerAction_FixedResponse(jsii.Number(404), &elbv2.FixedResponseOptions{
			ContentType: jsii.String("application/json"), MessageBody: jsii.String(`{"error":"no deployment at this path"}`)}),
	}
	scheme := "http://"
	if s.CertificateArn != "" {
		props.Protocol, props.Port, scheme = elbv2.ApplicationProtocol_HTTPS, jsii.Number(443), "https://"
		props.Certificates = &[]elbv2.IListenerCertificate{elbv2.ListenerCertificate_FromArn(jsii.String(s.CertificateArn))}
		props.SslPolicy = elbv2.SslPolicy_RECOMMENDED_TLS
	}
	listener := alb.AddListener(jsii.String("Listener"), props)
	for _, cidr := range s.AllowedCidrs {
		listener.Connections().AllowDefaultPortFrom(awsec2.Peer_Ipv4(jsii.String(cidr)), jsii.String("model clients from "+cidr))
	}
	if !s.InternetFacing {
		listener.Connections().AllowDefaultPortFrom(awsec2.Peer_Ipv4(n.Vpc.VpcCidrBlock()), jsii.String("model clients in the VPC"))
		cdknag.NagSuppressions_AddResourceSuppressions(sg, &[]*cdknag.NagPackSuppression{{
			Id: jsii.String("CdkNagValidationFailure"), Reason: jsii.String(
				"The internal load balancer admits its own VPC's CIDR, a token cdk-nag cannot read at synth; it is never 0.0.0.0/0."),
			AppliesTo: &[]interface{}{"AwsSolutions-EC23"},
		}}, jsii.Bool(true))
	}
	// Target groups are made at run time, so no construct opens the tasks to the load balancer: this adds the
	// tasks' ingress and the load balancer's egress on the Ollama port.
	n.TaskSecurityGroup.Connections().AllowFrom(sg, awsec2.Port_Tcp(jsii.Number(OllamaPort)), jsii.String("Ollama API from the load balancer"))
	// Named, so the functions find it by name: a reference would close a dependency loop (the waker starts the
	// state machine, which runs the functions that point rules at this group).
	waker := elbv2.NewApplicationTargetGroup(c, jsii.String("WakerTargets"), &elbv2.ApplicationTargetGroupProps{
		TargetType: elbv2.TargetType_LAMBDA, TargetGroupName: jsii.String(WakerTargetGroupName(*awscdk.Stack_Of(scope).StackName())),
	})
	return &LoadBalancer{Alb: alb, Listener: listener, SecurityGroup: sg, EndpointBase: scheme + *alb.LoadBalancerDnsName(),
		WakerTargets: waker}
}
