package steps

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	aas "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	aastypes "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/schemas"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/planner"
	"github.com/ollama-ecs/ollama-ecs/test/moto"
)

// TestRoutesServicesAndUsageAgainstMoto runs the load-balancer side of a deployment against moto_server: the
// route (target group, rules, key), a prod service with its task definition revision and scaling, the request
// count read from CloudWatch, and the stop that removes them all. moto sends no traffic to targets and runs no
// service tasks; what it checks is the wire format of every call and the answers the SDK parses.
func TestRoutesServicesAndUsageAgainstMoto(t *testing.T) {
	srv := moto.Start(t)
	cfg := srv.Config()
	ctx := moto.Context(t)
	net := srv.Cluster(t, "ollama")
	lbInfo := srv.LoadBalancer(t, net)
	lb, keys, ecsc := elbv2.NewFromConfig(cfg), ssm.NewFromConfig(cfg), ecs.NewFromConfig(cfg)
	scaling := aas.NewFromConfig(cfg)
	// moto answers CloudWatch's JSON protocol, not the CBOR the SDK sends by default, and not gzipped bodies.
	cw := cloudwatch.NewFromConfig(cfg, func(o *cloudwatch.Options) {
		o.Protocol, o.DisableRequestCompression = awsjson.New10(schemas.GraniteServiceVersion20100801), true
	})
	router := &Router{LB: lb, Keys: keys, ListenerArn: lbInfo.ListenerArn, VpcID: net.VpcID, BaseURL: "http://" + lbInfo.DNSName,
		KeyPrefix: "/ollama-ecs/keys", Port: deployment.OllamaPort}

	// A route with a key: target group, three rules in one block (header, key in path, 401), the key stored.
	route, err := router.Ensure(ctx, "prod-moto", "mistral:7b", true)
	if err != nil {
		t.Fatal(err)
	}
	if route.Endpoint != "http://"+lbInfo.DNSName+"/d/prod-moto" || len(route.RuleArns) != 3 || route.KeyParameter != "/ollama-ecs/keys/prod-moto" {
		t.Fatalf("route %+v", route)
	}
	rules, err := lb.DescribeRules(ctx, &elbv2.DescribeRulesInput{ListenerArn: aws.String(lbInfo.ListenerArn)})
	if err != nil {
		t.Fatal(err)
	}
	var priorities []string
	for _, r := range rules.Rules {
		priorities = append(priorities, aws.ToString(r.Priority))
	}
	if strings.Join(priorities, ",") != "10,11,12,default" {
		t.Errorf("rule priorities %v, want the block 10-12 and the default", priorities)
	}
	if got := rulePath(rules.Rules[1]); got != "/d/prod-moto" {
		t.Errorf("the key-in-path rule routes %q", got)
	}
	if rules.Rules[2].Actions[0].FixedResponseConfig == nil || aws.ToString(rules.Rules[2].Actions[0].FixedResponseConfig.StatusCode) != "401" {
		t.Errorf("last rule %+v, want the 401", rules.Rules[2].Actions)
	}
	key, err := router.Key(ctx, "prod-moto")
	if err != nil || len(key) != 32 {
		t.Fatalf("key %q %v", key, err)
	}
	if h := rules.Rules[0].Conditions[1].HttpHeaderConfig; h == nil || h.Values[0] != "Bearer "+key {
		t.Errorf("header rule %+v, want Authorization: Bearer <the stored key>", rules.Rules[0].Conditions)
	}
	again, err := router.Ensure(ctx, "prod-moto", "mistral:7b", true)
	if err != nil || strings.Join(again.RuleArns, " ") != strings.Join(route.RuleArns, " ") || again.TargetGroupArn != route.TargetGroupArn {
		t.Fatalf("a second Ensure changed the route: %+v %v", again, err)
	}
	// A second deployment takes the next block.
	other, err := router.Ensure(ctx, "dev-moto", "mistral:7b", false)
	if err != nil || len(other.RuleArns) != 1 {
		t.Fatalf("second route %+v %v", other, err)
	}
	if err := router.Register(ctx, other.TargetGroupArn, "10.0.1.5", deployment.OllamaPort); err != nil {
		t.Fatal(err)
	}
	if healthy, _, err := router.TargetHealth(ctx, other.TargetGroupArn); err != nil || healthy != 1 {
		t.Errorf("target health %d %v", healthy, err)
	}

	// Sleep and wake: the route's rule forwards to the waker's target group (here any group: moto runs no Lambda)
	// and the record is kept; Resume points it back.
	waker, err := lb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("ollama-ecs-waker"), Protocol: "HTTP",
		Port: aws.Int32(80), VpcId: aws.String(net.VpcID), TargetType: "ip"})
	if err != nil {
		t.Fatal(err)
	}
	router.SleepPrefix, router.WakerTargetGroup = "/ollama-ecs/sleep", "ollama-ecs-waker"
	last := ecstypes.Task{Tags: []ecstypes.Tag{tag(deployment.TagWake, "true"), tag(deployment.TagModel, "mistral:7b"), tag(deployment.TagEnv, "dev"),
		tag(deployment.TagWakeCount, "0"), tag(deployment.TagTTL, "-1")}}
	if slept, err := router.Sleep(ctx, "dev-moto", &last, "test", false); err != nil || !slept {
		t.Fatalf("sleep: %v %v", slept, err)
	}
	forwardsTo := func() string {
		out, err := lb.DescribeRules(ctx, &elbv2.DescribeRulesInput{RuleArns: other.RuleArns})
		if err != nil || len(out.Rules) != 1 {
			t.Fatalf("rules: %v", err)
		}
		return aws.ToString(out.Rules[0].Actions[0].TargetGroupArn)
	}
	if got := forwardsTo(); got != aws.ToString(waker.TargetGroups[0].TargetGroupArn) {
		t.Errorf("a sleeping route forwards to %s, want the waker's group", got)
	}
	recs, err := router.SleepRecords(ctx)
	if err != nil || len(recs) != 1 || !recs[0].Asleep || recs[0].Request.Model != "mistral:7b" {
		t.Fatalf("sleep records %+v %v", recs, err)
	}
	if err := router.Resume(ctx, "dev-moto", other.TargetGroupArn); err != nil {
		t.Fatal(err)
	}
	if got := forwardsTo(); got != other.TargetGroupArn {
		t.Errorf("a resumed route forwards to %s, want its own group", got)
	}
	router.SleepPrefix, router.WakerTargetGroup = "", ""

	// A prod service behind the route, with its task definition revision and scaling.
	m, _ := catalog.Default().Model("mistral:7b")
	p, err := planner.New(catalog.Default(), planner.Request{Model: m, Env: "prod", Prefer: planner.PreferCPU})
	if err != nil {
		t.Fatal(err)
	}
	cand := p.Candidates[0]
	req := &deployment.Request{DeploymentID: "prod-moto", ExecutionName: "exec-1", ModelName: "mistral:7b", Source: "ollama://mistral:7b",
		Env: "prod", MinTasks: 1, MaxTasks: 3}
	services := &ServiceRunner{Services: ecsc, Scaling: scaling, Cluster: "ollama", LoadBalancer: lbInfo.FullName, TargetRequests: 12}
	run := &RunTask{ECS: ecsc, Cluster: "ollama", CPUTaskDefinition: "ollama-cpu", GPUTaskDefinition: "ollama-gpu", Subnets: net.Subnets,
		SecurityGroups: net.SecurityGroups, Services: services}
	in := run.input(req, nil, cand, 0)
	arn, err := services.Run(ctx, req, in, &route)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ecsc.DescribeServices(ctx, &ecs.DescribeServicesInput{Cluster: aws.String("ollama"), Services: []string{arn}})
	if err != nil || len(svc.Services) != 1 {
		t.Fatalf("describe service: %v %+v", err, svc)
	}
	s := svc.Services[0]
	if aws.ToString(s.ServiceName) != "ollama-prod-moto" || s.DesiredCount != 1 || len(s.LoadBalancers) != 1 ||
		aws.ToString(s.LoadBalancers[0].TargetGroupArn) != route.TargetGroupArn || !strings.Contains(aws.ToString(s.TaskDefinition), "ollama-svc-prod-moto") {
		t.Errorf("service %s desired %d load balancers %+v task definition %s", aws.ToString(s.ServiceName), s.DesiredCount, s.LoadBalancers, aws.ToString(s.TaskDefinition))
	}
	td, err := ecsc.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: s.TaskDefinition})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range td.TaskDefinition.ContainerDefinitions[0].Environment {
		env[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
	}
	if env[deployment.EnvModel] != "mistral:7b" || env[deployment.EnvSource] != "ollama://mistral:7b" {
		t.Errorf("the service's task definition environment %v, want the model's", env)
	}
	policies, err := scaling.DescribeScalingPolicies(ctx, &aas.DescribeScalingPoliciesInput{ServiceNamespace: aastypes.ServiceNamespaceEcs,
		ResourceId: aws.String("service/ollama/ollama-prod-moto")})
	if err != nil || len(policies.ScalingPolicies) != 1 {
		t.Fatalf("scaling policies %v %+v", err, policies)
	}
	pc := policies.ScalingPolicies[0].TargetTrackingScalingPolicyConfiguration
	if pc == nil || aws.ToFloat64(pc.TargetValue) != 12 || pc.PredefinedMetricSpecification.PredefinedMetricType != aastypes.MetricTypeALBRequestCountPerTarget ||
		aws.ToString(pc.PredefinedMetricSpecification.ResourceLabel) != lbInfo.FullName+"/"+TargetGroupDimension(route.TargetGroupArn) {
		t.Errorf("policy %+v", pc)
	}
	// A second request under the id finds the service another execution made.
	other2 := *req
	other2.ExecutionName = "exec-2"
	if _, err := services.Run(ctx, &other2, in, &route); err == nil || !strings.Contains(err.Error(), "another request") {
		t.Errorf("a second request's service: %v, want DeploymentExistsError", err)
	}

	// The request count, as the load balancer publishes it.
	now := time.Now().UTC()
	if _, err := cw.PutMetricData(ctx, &cloudwatch.PutMetricDataInput{Namespace: aws.String("AWS/ApplicationELB"),
		MetricData: []cwtypes.MetricDatum{{MetricName: aws.String("RequestCount"), Value: aws.Float64(7), Unit: cwtypes.StandardUnitCount,
			Dimensions: []cwtypes.Dimension{{Name: aws.String("LoadBalancer"), Value: aws.String(lbInfo.FullName)},
				{Name: aws.String("TargetGroup"), Value: aws.String(TargetGroupDimension(route.TargetGroupArn))}}}}}); err != nil {
		t.Fatal(err)
	}
	use, err := (&UsageReader{Metrics: cw, LoadBalancer: lbInfo.FullName}).Usage(ctx, route.TargetGroupArn, now.Add(-time.Hour), now.Add(time.Minute))
	if err != nil || use.Requests != 7 || use.LastUse.IsZero() {
		t.Errorf("usage %+v %v, want 7 requests", use, err)
	}

	// Stopping the deployment removes the service, its scaling, the route and the key; the other route stays.
	stopper := &deployment.Stopper{ECS: ecsc, Scheduler: scheduler.NewFromConfig(cfg), Cluster: "ollama", Group: "ollama-ecs", Routes: router, Services: services}
	res, err := stopper.StopDeployment(ctx, "prod-moto", "test", deployment.Forget)
	if err != nil || len(res.Services) != 1 {
		t.Fatalf("stop: %+v %v", res, err)
	}
	svc, _ = ecsc.DescribeServices(ctx, &ecs.DescribeServicesInput{Cluster: aws.String("ollama"), Services: []string{arn}})
	if len(svc.Services) == 1 && aws.ToString(svc.Services[0].Status) == "ACTIVE" {
		t.Errorf("the service is still active after the stop")
	}
	targets, _ := scaling.DescribeScalableTargets(ctx, &aas.DescribeScalableTargetsInput{ServiceNamespace: aastypes.ServiceNamespaceEcs})
	if len(targets.ScalableTargets) != 0 {
		t.Errorf("scalable targets left: %+v", targets.ScalableTargets)
	}
	if k, err := router.Key(ctx, "prod-moto"); err != nil || k != "" {
		t.Errorf("key left: %q %v", k, err)
	}
	rules, _ = lb.DescribeRules(ctx, &elbv2.DescribeRulesInput{ListenerArn: aws.String(lbInfo.ListenerArn)})
	if len(rules.Rules) != 2 || rulePath(rules.Rules[0]) != "/d/dev-moto" {
		t.Errorf("rules after the stop: %d, want only dev-moto's and the default", len(rules.Rules))
	}
	if _, err := lb.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName("prod-moto")}}); err == nil {
		t.Errorf("the target group is still there")
	}
	// Removing again finds nothing and is fine.
	if err := router.Remove(ctx, "prod-moto"); err != nil {
		t.Errorf("second remove: %v", err)
	}
}
