package deployment

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Every deployment is reached through the stack's one Application Load Balancer: its listener has, per
// deployment, a target group and rules that match the path prefix /d/<id> and strip it before the request reaches
// Ollama. Clients use <load balancer>/d/<id> as their base URL: OLLAMA_HOST for the ollama CLI, the Ollama API,
// and <endpoint>/v1 for OpenAI-compatible clients. Path routing needs no DNS zone; the price is that every
// deployment shares the load balancer's host name, so browsers see them as one origin.
const (
	// RoutePrefix starts every deployment's path.
	RoutePrefix = "/d/"
	// KeySegment follows the deployment's path when the API key is carried in the URL, for clients that cannot
	// send a header (the ollama CLI): <endpoint>/k/<key>.
	KeySegment = "/k/"
	// ServicePrefix starts a prod deployment's ECS service name, and ServiceFamilyPrefix its task definition
	// family (apart from the stack's ollama-cpu and ollama-gpu whatever the id); the deployment id follows.
	ServicePrefix       = "ollama-"
	ServiceFamilyPrefix = "ollama-svc-"
	// TargetGroupPrefix starts every deployment's target group name (the stack's IAM is scoped by it).
	TargetGroupPrefix = "oe-"
)

// RoutePath is the path prefix of a deployment on the load balancer.
func RoutePath(deploymentID string) string { return RoutePrefix + deploymentID }

// ServiceName is a prod deployment's ECS service.
func ServiceName(deploymentID string) string { return ServicePrefix + deploymentID }

// ServiceFamily is a prod deployment's task definition family.
func ServiceFamily(deploymentID string) string { return ServiceFamilyPrefix + deploymentID }

// TargetGroupName is a deployment's target group name: at most 32 characters of letters, digits and hyphens,
// unique per deployment id (a short hash follows a readable prefix of the id).
func TargetGroupName(deploymentID string) string {
	sum := sha256.Sum256([]byte(deploymentID))
	short := strings.TrimRight(deploymentID[:min(len(deploymentID), 18)], "-")
	return TargetGroupPrefix + short + "-" + hex.EncodeToString(sum[:4])
}

// KeyParameterName is where a deployment's API key is kept (an SSM SecureString parameter under the stack's
// prefix).
func KeyParameterName(prefix, deploymentID string) string {
	return strings.TrimRight(prefix, "/") + "/" + deploymentID
}

// Route is what a deployment is reached through: its target group, its listener rules, the endpoint clients use,
// and where its API key is kept (empty without one).
type Route struct {
	TargetGroupArn string   `json:"targetGroupArn"`
	RuleArns       []string `json:"ruleArns"`
	Endpoint       string   `json:"endpoint"`
	KeyParameter   string   `json:"keyParameter,omitempty"`
}

// LoadBalancer is the Elastic Load Balancing v2 calls that route a deployment.
type LoadBalancer interface {
	CreateTargetGroup(ctx context.Context, in *elbv2.CreateTargetGroupInput, opts ...func(*elbv2.Options)) (*elbv2.CreateTargetGroupOutput, error)
	DescribeTargetGroups(ctx context.Context, in *elbv2.DescribeTargetGroupsInput, opts ...func(*elbv2.Options)) (*elbv2.DescribeTargetGroupsOutput, error)
	ModifyTargetGroupAttributes(ctx context.Context, in *elbv2.ModifyTargetGroupAttributesInput, opts ...func(*elbv2.Options)) (*elbv2.ModifyTargetGroupAttributesOutput, error)
	ModifyTargetGroup(ctx context.Context, in *elbv2.ModifyTargetGroupInput, opts ...func(*elbv2.Options)) (*elbv2.ModifyTargetGroupOutput, error)
	DeleteTargetGroup(ctx context.Context, in *elbv2.DeleteTargetGroupInput, opts ...func(*elbv2.Options)) (*elbv2.DeleteTargetGroupOutput, error)
	CreateRule(ctx context.Context, in *elbv2.CreateRuleInput, opts ...func(*elbv2.Options)) (*elbv2.CreateRuleOutput, error)
	DescribeRules(ctx context.Context, in *elbv2.DescribeRulesInput, opts ...func(*elbv2.Options)) (*elbv2.DescribeRulesOutput, error)
	DeleteRule(ctx context.Context, in *elbv2.DeleteRuleInput, opts ...func(*elbv2.Options)) (*elbv2.DeleteRuleOutput, error)
	ModifyRule(ctx context.Context, in *elbv2.ModifyRuleInput, opts ...func(*elbv2.Options)) (*elbv2.ModifyRuleOutput, error)
	RegisterTargets(ctx context.Context, in *elbv2.RegisterTargetsInput, opts ...func(*elbv2.Options)) (*elbv2.RegisterTargetsOutput, error)
	DeregisterTargets(ctx context.Context, in *elbv2.DeregisterTargetsInput, opts ...func(*elbv2.Options)) (*elbv2.DeregisterTargetsOutput, error)
	DescribeTargetHealth(ctx context.Context, in *elbv2.DescribeTargetHealthInput, opts ...func(*elbv2.Options)) (*elbv2.DescribeTargetHealthOutput, error)
}

// Metrics reads the load balancer's CloudWatch metrics (requests per target group).
type Metrics interface {
	GetMetricData(ctx context.Context, in *cloudwatch.GetMetricDataInput, opts ...func(*cloudwatch.Options)) (*cloudwatch.GetMetricDataOutput, error)
}

// Services runs prod deployments as ECS services.
type Services interface {
	CreateService(ctx context.Context, in *ecs.CreateServiceInput, opts ...func(*ecs.Options)) (*ecs.CreateServiceOutput, error)
	UpdateService(ctx context.Context, in *ecs.UpdateServiceInput, opts ...func(*ecs.Options)) (*ecs.UpdateServiceOutput, error)
	DeleteService(ctx context.Context, in *ecs.DeleteServiceInput, opts ...func(*ecs.Options)) (*ecs.DeleteServiceOutput, error)
	DescribeServices(ctx context.Context, in *ecs.DescribeServicesInput, opts ...func(*ecs.Options)) (*ecs.DescribeServicesOutput, error)
	DescribeTaskDefinition(ctx context.Context, in *ecs.DescribeTaskDefinitionInput, opts ...func(*ecs.Options)) (*ecs.DescribeTaskDefinitionOutput, error)
	RegisterTaskDefinition(ctx context.Context, in *ecs.RegisterTaskDefinitionInput, opts ...func(*ecs.Options)) (*ecs.RegisterTaskDefinitionOutput, error)
}

// Scaling is Application Auto Scaling: a prod service's desired count between its min and max, tracking load.
type Scaling interface {
	RegisterScalableTarget(ctx context.Context, in *applicationautoscaling.RegisterScalableTargetInput, opts ...func(*applicationautoscaling.Options)) (*applicationautoscaling.RegisterScalableTargetOutput, error)
	PutScalingPolicy(ctx context.Context, in *applicationautoscaling.PutScalingPolicyInput, opts ...func(*applicationautoscaling.Options)) (*applicationautoscaling.PutScalingPolicyOutput, error)
	DeregisterScalableTarget(ctx context.Context, in *applicationautoscaling.DeregisterScalableTargetInput, opts ...func(*applicationautoscaling.Options)) (*applicationautoscaling.DeregisterScalableTargetOutput, error)
}

// Parameters keeps deployments' API keys (SSM Parameter Store, SecureString).
type Parameters interface {
	PutParameter(ctx context.Context, in *ssm.PutParameterInput, opts ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
	DeleteParameter(ctx context.Context, in *ssm.DeleteParameterInput, opts ...func(*ssm.Options)) (*ssm.DeleteParameterOutput, error)
	GetParametersByPath(ctx context.Context, in *ssm.GetParametersByPathInput, opts ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error)
}

var (
	_ LoadBalancer = (*elbv2.Client)(nil)
	_ Metrics      = (*cloudwatch.Client)(nil)
	_ Services     = (*ecs.Client)(nil)
	_ Scaling      = (*applicationautoscaling.Client)(nil)
	_ Parameters   = (*ssm.Client)(nil)
)
