package steps

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// Router gives each deployment its place on the stack's load balancer: a target group (IP targets on Ollama's
// port, health-checked on HealthCheckPath, least outstanding requests, a long deregistration delay so a draining task
// finishes its generations) and listener rules for the path /d/<id>, rewritten to "/" before the request reaches
// Ollama. With an API key, the rules forward only requests that carry it, as "Authorization: Bearer <key>" or in
// the path (/d/<id>/k/<key>, for the ollama CLI, which cannot send a header), and answer everything else 401
// without reaching a target.
type Router struct {
	LB          deployment.LoadBalancer
	Keys        deployment.Parameters
	ListenerArn string
	VpcID       string
	// BaseURL is the load balancer's URL as clients reach it (scheme and host).
	BaseURL   string
	KeyPrefix string
	Port      int
	// HealthCheckSeconds paces the target group's health checks (5 to 300; default 10).
	HealthCheckSeconds int
	// DeregistrationDelay is how long a draining target may finish its requests (default 300 s).
	DeregistrationDelay time.Duration
	// WakerTargetGroup is the load balancer's target group of the waker function (its ARN or name), where a
	// sleeping deployment's rules forward; SleepPrefix is where the sleep records are (SSM). Empty: deployments do not sleep.
	WakerTargetGroup, SleepPrefix string
	Now                           func() time.Time
}

// blockSize is how many listener-rule priorities each deployment reserves: its rules take consecutive priorities
// at the start of a free block, so a key's rules always come before its 401.
const blockSize = 10

// Ensure creates the deployment's target group, key and rules, or finds them (a retried step, or a deployment
// that is started again): it is idempotent.
func (r *Router) Ensure(ctx context.Context, deploymentID, model string, withKey bool) (deployment.Route, error) {
	route := deployment.Route{Endpoint: strings.TrimRight(r.BaseURL, "/") + deployment.RoutePath(deploymentID)}
	tg, err := r.targetGroup(ctx, deploymentID, model)
	if err != nil {
		return route, err
	}
	route.TargetGroupArn = tg
	key := ""
	if withKey {
		if key, err = r.ensureKey(ctx, deploymentID); err != nil {
			return route, err
		}
		route.KeyParameter = deployment.KeyParameterName(r.KeyPrefix, deploymentID)
	} else if err := r.deleteKey(ctx, deploymentID); err != nil {
		return route, err
	}
	existing, used, err := r.rules(ctx, deploymentID)
	if err != nil {
		return route, err
	}
	wanted := ruleSpecs(deploymentID, tg, key)
	if len(existing) == len(wanted) {
		for _, rule := range existing {
			route.RuleArns = append(route.RuleArns, aws.ToString(rule.RuleArn))
		}
		return route, nil
	}
	// Partial or stale rules (an interrupted step, or a key switched on or off): replace them.
	for _, rule := range existing {
		if _, err := r.LB.DeleteRule(ctx, &elbv2.DeleteRuleInput{RuleArn: rule.RuleArn}); err != nil && !isNotFoundELB(err) {
			return route, deployment.AWSError("elasticloadbalancing:DeleteRule", err)
		}
	}
	for attempt := 0; ; attempt++ {
		base := freeBlock(used)
		route.RuleArns, err = r.createRules(ctx, wanted, base)
		if err == nil {
			return route, nil
		}
		if !deployment.IsCode(err, "PriorityInUse") || attempt == 4 {
			return route, deployment.AWSError("elasticloadbalancing:CreateRule", err)
		}
		// Another deployment took the block meanwhile: look again.
		if _, used, err = r.rules(ctx, deploymentID); err != nil {
			return route, err
		}
	}
}

func (r *Router) createRules(ctx context.Context, wanted []elbv2.CreateRuleInput, base int32) ([]string, error) {
	var arns []string
	for i, in := range wanted {
		in.ListenerArn = aws.String(r.ListenerArn)
		in.Priority = aws.Int32(base + int32(i))
		out, err := r.LB.CreateRule(ctx, &in)
		if err != nil {
			for _, arn := range arns {
				_, _ = r.LB.DeleteRule(ctx, &elbv2.DeleteRuleInput{RuleArn: aws.String(arn)})
			}
			return nil, err
		}
		arns = append(arns, aws.ToString(out.Rules[0].RuleArn))
	}
	return arns, nil
}

// ruleSpecs are a deployment's rules, first match first: without a key one rule forwards /d/<id>; with one, the
// header rule and the key-in-path rule forward, and a last rule answers 401.
func ruleSpecs(deploymentID, targetGroup, key string) []elbv2.CreateRuleInput {
	path := deployment.RoutePath(deploymentID)
	forward := func(prefix string, extra ...elbtypes.RuleCondition) elbv2.CreateRuleInput {
		return elbv2.CreateRuleInput{
			Conditions: append([]elbtypes.RuleCondition{pathCondition(prefix)}, extra...),
			Actions:    []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: aws.String(targetGroup)}},
			Transforms: []elbtypes.RuleTransform{{
				Type: elbtypes.TransformTypeEnumUrlRewrite,
				UrlRewriteConfig: &elbtypes.UrlRewriteConfig{Rewrites: []elbtypes.RewriteConfig{{
					Regex: aws.String("^" + regexp.QuoteMeta(prefix) + "/?(.*)$"), Replace: aws.String("/$1"),
				}}},
			}},
			Tags: []elbtypes.Tag{{Key: aws.String(deployment.TagDeploymentID), Value: aws.String(deploymentID)}},
		}
	}
	if key == "" {
		return []elbv2.CreateRuleInput{forward(path)}
	}
	refuse := elbv2.CreateRuleInput{
		Conditions: []elbtypes.RuleCondition{pathCondition(path)},
		Actions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumFixedResponse, FixedResponseConfig: &elbtypes.FixedResponseActionConfig{
			StatusCode: aws.String("401"), ContentType: aws.String("application/json"),
			MessageBody: aws.String(`{"error":"this deployment needs its API key: send Authorization: Bearer <key>, or put /k/<key> after the deployment's path"}`),
		}}},
		Tags: []elbtypes.Tag{{Key: aws.String(deployment.TagDeploymentID), Value: aws.String(deploymentID)}},
	}
	return []elbv2.CreateRuleInput{
		forward(path, elbtypes.RuleCondition{Field: aws.String("http-header"), HttpHeaderConfig: &elbtypes.HttpHeaderConditionConfig{
			HttpHeaderName: aws.String("Authorization"), Values: []string{"Bearer " + key},
		}}),
		forward(path + deployment.KeySegment + key),
		refuse,
	}
}

func pathCondition(prefix string) elbtypes.RuleCondition {
	return elbtypes.RuleCondition{Field: aws.String("path-pattern"),
		PathPatternConfig: &elbtypes.PathPatternConditionConfig{Values: []string{prefix, prefix + "/*"}}}
}

// rules finds the deployment's rules (those matching its path) and every priority in use.
func (r *Router) rules(ctx context.Context, deploymentID string) ([]elbtypes.Rule, []int32, error) {
	path := deployment.RoutePath(deploymentID)
	var mine []elbtypes.Rule
	var used []int32
	in := &elbv2.DescribeRulesInput{ListenerArn: aws.String(r.ListenerArn)}
	for {
		out, err := r.LB.DescribeRules(ctx, in)
		if err != nil {
			return nil, nil, deployment.AWSError("elasticloadbalancing:DescribeRules", err)
		}
		for _, rule := range out.Rules {
			if p, err := strconv.Atoi(aws.ToString(rule.Priority)); err == nil {
				used = append(used, int32(p))
			}
			if rulePath(rule) == path {
				mine = append(mine, rule)
			}
		}
		if out.NextMarker == nil {
			break
		}
		in.Marker = out.NextMarker
	}
	slices.SortFunc(mine, func(a, b elbtypes.Rule) int {
		pa, _ := strconv.Atoi(aws.ToString(a.Priority))
		pb, _ := strconv.Atoi(aws.ToString(b.Priority))
		return pa - pb
	})
	return mine, used, nil
}

// rulePath is the deployment path a rule routes ("" for other rules): the first path pattern, with a key
// segment and the trailing wildcard taken off.
func rulePath(rule elbtypes.Rule) string {
	for _, c := range rule.Conditions {
		var values []string
		if c.PathPatternConfig != nil {
			values = c.PathPatternConfig.Values
		}
		if aws.ToString(c.Field) == "path-pattern" && len(values) == 0 {
			values = c.Values
		}
		for _, v := range values {
			if !strings.HasPrefix(v, deployment.RoutePrefix) || strings.HasSuffix(v, "*") {
				continue
			}
			p, _, _ := strings.Cut(v, deployment.KeySegment)
			return p
		}
	}
	return ""
}

// freeBlock is the first priority of the first block no rule uses.
func freeBlock(used []int32) int32 {
	taken := map[int32]bool{}
	for _, p := range used {
		taken[p/blockSize] = true
	}
	for b := int32(1); ; b++ {
		if !taken[b] {
			return b * blockSize
		}
	}
}

// HealthCheckPath is what the load balancer asks a target: Ollama's OpenAI-compatible GET /v1/models/<model>,
// which answers 200 only once the model is on the task (Ollama's "/" answers as soon as the server is up, before a
// new service task has its model). A name with a "/" cannot be a path segment there: "/" then.
func HealthCheckPath(model string) string {
	if model == "" || strings.ContainsAny(model, "/?#% ") {
		return "/"
	}
	return "/v1/models/" + model
}

func (r *Router) targetGroup(ctx context.Context, deploymentID, model string) (string, error) {
	interval := r.HealthCheckSeconds
	if interval == 0 {
		interval = 10
	}
	// CreateTargetGroup answers with the existing group when one of the name has the same settings.
	out, err := r.LB.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{
		Name: aws.String(deployment.TargetGroupName(deploymentID)), Protocol: elbtypes.ProtocolEnumHttp,
		Port: aws.Int32(int32(r.Port)), VpcId: aws.String(r.VpcID), TargetType: elbtypes.TargetTypeEnumIp,
		HealthCheckPath: aws.String(HealthCheckPath(model)), HealthCheckIntervalSeconds: aws.Int32(int32(interval)),
		HealthCheckTimeoutSeconds: aws.Int32(int32(min(interval-1, 5))),
		HealthyThresholdCount:     aws.Int32(2), UnhealthyThresholdCount: aws.Int32(3),
		Matcher: &elbtypes.Matcher{HttpCode: aws.String("200")},
		Tags: []elbtypes.Tag{
			{Key: aws.String(deployment.TagManagedBy), Value: aws.String(deployment.ManagedByValue)},
			{Key: aws.String(deployment.TagDeploymentID), Value: aws.String(deploymentID)},
		},
	})
	if deployment.IsCode(err, "DuplicateTargetGroupName") {
		// Some implementations refuse a second create of the same group instead of answering with it.
		out2, derr := r.LB.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(deploymentID)}})
		if derr != nil {
			return "", deployment.AWSError("elasticloadbalancing:DescribeTargetGroups", derr)
		}
		out, err = &elbv2.CreateTargetGroupOutput{TargetGroups: out2.TargetGroups}, nil
	}
	if err != nil {
		return "", deployment.AWSError("elasticloadbalancing:CreateTargetGroup", err)
	}
	if len(out.TargetGroups) == 0 {
		return "", &deployment.AWSServiceError{Op: "elasticloadbalancing:CreateTargetGroup", Code: "Missing", Message: "no target group in the answer"}
	}
	arn := aws.ToString(out.TargetGroups[0].TargetGroupArn)
	if aws.ToString(out.TargetGroups[0].HealthCheckPath) != HealthCheckPath(model) {
		// A group kept from an earlier deployment of the id (asleep, or refused) checks its model: this one's now.
		if _, err := r.LB.ModifyTargetGroup(ctx, &elbv2.ModifyTargetGroupInput{TargetGroupArn: aws.String(arn),
			HealthCheckPath: aws.String(HealthCheckPath(model))}); err != nil {
			return "", deployment.AWSError("elasticloadbalancing:ModifyTargetGroup", err)
		}
	}
	delay := r.DeregistrationDelay
	if delay == 0 {
		delay = 300 * time.Second
	}
	_, err = r.LB.ModifyTargetGroupAttributes(ctx, &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: aws.String(arn),
		Attributes: []elbtypes.TargetGroupAttribute{
			{Key: aws.String("deregistration_delay.timeout_seconds"), Value: aws.String(strconv.Itoa(int(delay.Seconds())))},
			{Key: aws.String("load_balancing.algorithm.type"), Value: aws.String("least_outstanding_requests")},
		}})
	if err != nil {
		return "", deployment.AWSError("elasticloadbalancing:ModifyTargetGroupAttributes", err)
	}
	return arn, nil
}

func (r *Router) ensureKey(ctx context.Context, deploymentID string) (string, error) {
	if r.Keys == nil {
		return "", &deployment.IncompleteStateError{Step: "Run ECS task", Missing: "a parameter store for the API key"}
	}
	name := deployment.KeyParameterName(r.KeyPrefix, deploymentID)
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	key := hex.EncodeToString(b)
	_, err := r.Keys.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(key),
		Type: ssmtypes.ParameterTypeSecureString, Description: aws.String("API key of ollama-ecs deployment " + deploymentID)})
	if err == nil {
		return key, nil
	}
	var exists *ssmtypes.ParameterAlreadyExists
	if !errors.As(err, &exists) && !deployment.IsCode(err, "ParameterAlreadyExists") {
		return "", deployment.AWSError("ssm:PutParameter", err)
	}
	return r.Key(ctx, deploymentID)
}

// deleteKey removes a deployment's key (one that no longer wants it); a missing one is fine.
func (r *Router) deleteKey(ctx context.Context, deploymentID string) error {
	if r.Keys == nil {
		return nil
	}
	_, err := r.Keys.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(deployment.KeyParameterName(r.KeyPrefix, deploymentID))})
	var missing *ssmtypes.ParameterNotFound
	if err != nil && !errors.As(err, &missing) && !deployment.IsCode(err, "ParameterNotFound") {
		return deployment.AWSError("ssm:DeleteParameter", err)
	}
	return nil
}

// Key reads a deployment's API key ("" when it has none).
func (r *Router) Key(ctx context.Context, deploymentID string) (string, error) {
	if r.Keys == nil {
		return "", nil
	}
	out, err := r.Keys.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(deployment.KeyParameterName(r.KeyPrefix, deploymentID)), WithDecryption: aws.Bool(true)})
	var missing *ssmtypes.ParameterNotFound
	if errors.As(err, &missing) || deployment.IsCode(err, "ParameterNotFound") {
		return "", nil
	}
	if err != nil {
		return "", deployment.AWSError("ssm:GetParameter", err)
	}
	return aws.ToString(out.Parameter.Value), nil
}

// Register makes a dev deployment's task the one target of its target group (ECS registers a service's tasks
// itself): an earlier task's target (one that died, or a refused rung's) is deregistered.
func (r *Router) Register(ctx context.Context, targetGroup, ip string, port int) error {
	out, err := r.LB.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(targetGroup)})
	if err != nil {
		return deployment.AWSError("elasticloadbalancing:DescribeTargetHealth", err)
	}
	var stale []elbtypes.TargetDescription
	for _, t := range out.TargetHealthDescriptions {
		if t.Target != nil && (aws.ToString(t.Target.Id) != ip || int(aws.ToInt32(t.Target.Port)) != port) &&
			(t.TargetHealth == nil || t.TargetHealth.State != elbtypes.TargetHealthStateEnumDraining) {
			stale = append(stale, *t.Target)
		}
	}
	if len(stale) > 0 {
		if _, err := r.LB.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: aws.String(targetGroup), Targets: stale}); err != nil {
			return deployment.AWSError("elasticloadbalancing:DeregisterTargets", err)
		}
	}
	_, err = r.LB.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(targetGroup),
		Targets: []elbtypes.TargetDescription{{Id: aws.String(ip), Port: aws.Int32(int32(port))}}})
	if err != nil {
		return deployment.AWSError("elasticloadbalancing:RegisterTargets", err)
	}
	return nil
}

// TargetHealth counts a target group's healthy targets and describes the others.
func (r *Router) TargetHealth(ctx context.Context, targetGroup string) (healthy int, detail string, err error) {
	out, err := r.LB.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(targetGroup)})
	if err != nil {
		return 0, "", deployment.AWSError("elasticloadbalancing:DescribeTargetHealth", err)
	}
	var others []string
	for _, t := range out.TargetHealthDescriptions {
		if t.TargetHealth == nil {
			continue
		}
		if t.TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy {
			healthy++
			continue
		}
		others = append(others, fmt.Sprintf("%s:%d %s", aws.ToString(t.Target.Id), aws.ToInt32(t.Target.Port), t.TargetHealth.State))
	}
	return healthy, strings.Join(others, ", "), nil
}

// Remove deletes the deployment's rules, target group and key; what is already gone is fine.
func (r *Router) Remove(ctx context.Context, deploymentID string) error {
	if r == nil || r.LB == nil {
		return nil
	}
	rules, _, err := r.rules(ctx, deploymentID)
	if err != nil {
		return err
	}
	for _, rule := range rules {
		if _, err := r.LB.DeleteRule(ctx, &elbv2.DeleteRuleInput{RuleArn: rule.RuleArn}); err != nil && !isNotFoundELB(err) {
			return deployment.AWSError("elasticloadbalancing:DeleteRule", err)
		}
	}
	out, err := r.LB.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(deploymentID)}})
	if err != nil && !isNotFoundELB(err) {
		return deployment.AWSError("elasticloadbalancing:DescribeTargetGroups", err)
	}
	if err == nil {
		for _, tg := range out.TargetGroups {
			if _, err := r.LB.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn}); err != nil && !isNotFoundELB(err) {
				return deployment.AWSError("elasticloadbalancing:DeleteTargetGroup", err)
			}
		}
	}
	if r.Keys != nil {
		names := []string{deployment.KeyParameterName(r.KeyPrefix, deploymentID)}
		if r.SleepPrefix != "" {
			names = append(names, deployment.SleepParameterName(r.SleepPrefix, deploymentID))
		}
		for _, name := range names {
			_, err := r.Keys.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)})
			var missing *ssmtypes.ParameterNotFound
			if err != nil && !errors.As(err, &missing) && !deployment.IsCode(err, "ParameterNotFound") {
				return deployment.AWSError("ssm:DeleteParameter", err)
			}
		}
	}
	return nil
}

func isNotFoundELB(err error) bool {
	return deployment.IsCode(err, "TargetGroupNotFound") || deployment.IsCode(err, "RuleNotFound") || deployment.IsNotFound(err)
}

// Usage is a deployment's use as the load balancer saw it: requests in a window and the last minute with any.
type Usage struct {
	Requests int       `json:"requests"`
	LastUse  time.Time `json:"lastUse,omitzero"`
}

// UsageReader reads a target group's request count from the load balancer's CloudWatch metrics.
type UsageReader struct {
	Metrics deployment.Metrics
	// LoadBalancer is the load balancer's full name (app/<name>/<id>), the metrics' LoadBalancer dimension.
	LoadBalancer string
	// LB finds a deployment's target group by name (for OfDeployment).
	LB deployment.LoadBalancer
}

// OfDeployment is Usage for a deployment's target group; a deployment without one (never routed) has none.
func (u *UsageReader) OfDeployment(ctx context.Context, deploymentID string, from, to time.Time) (Usage, error) {
	out, err := u.LB.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(deploymentID)}})
	if isNotFoundELB(err) {
		return Usage{}, nil
	}
	if err != nil {
		return Usage{}, deployment.AWSError("elasticloadbalancing:DescribeTargetGroups", err)
	}
	if len(out.TargetGroups) == 0 {
		return Usage{}, nil
	}
	return u.Usage(ctx, aws.ToString(out.TargetGroups[0].TargetGroupArn), from, to)
}

// Usage sums RequestCount for the target group over [from, to), by minute.
func (u *UsageReader) Usage(ctx context.Context, targetGroupArn string, from, to time.Time) (Usage, error) {
	in := &cloudwatch.GetMetricDataInput{
		StartTime: aws.Time(from), EndTime: aws.Time(to), ScanBy: cwtypes.ScanByTimestampDescending,
		MetricDataQueries: []cwtypes.MetricDataQuery{{Id: aws.String("requests"), MetricStat: &cwtypes.MetricStat{
			Metric: &cwtypes.Metric{Namespace: aws.String("AWS/ApplicationELB"), MetricName: aws.String("RequestCount"),
				Dimensions: []cwtypes.Dimension{
					{Name: aws.String("LoadBalancer"), Value: aws.String(u.LoadBalancer)},
					{Name: aws.String("TargetGroup"), Value: aws.String(TargetGroupDimension(targetGroupArn))},
				}},
			Period: aws.Int32(60), Stat: aws.String("Sum"),
		}}},
	}
	var use Usage
	for {
		out, err := u.Metrics.GetMetricData(ctx, in)
		if err != nil {
			return use, deployment.AWSError("cloudwatch:GetMetricData", err)
		}
		for _, r := range out.MetricDataResults {
			for i, v := range r.Values {
				use.Requests += int(v)
				if v > 0 && i < len(r.Timestamps) && r.Timestamps[i].After(use.LastUse) {
					use.LastUse = r.Timestamps[i]
				}
			}
		}
		if out.NextToken == nil {
			return use, nil
		}
		in.NextToken = out.NextToken
	}
}

// TargetGroupDimension is the TargetGroup dimension of a target group's metrics: targetgroup/<name>/<id>.
func TargetGroupDimension(arn string) string {
	if i := strings.Index(arn, "targetgroup/"); i >= 0 {
		return arn[i:]
	}
	return arn
}

// SleepRecord reads a deployment's sleep record (found false without one).
func (r *Router) SleepRecord(ctx context.Context, deploymentID string) (deployment.SleepRecord, bool, error) {
	var rec deployment.SleepRecord
	if r.Keys == nil || r.SleepPrefix == "" {
		return rec, false, nil
	}
	out, err := r.Keys.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(deployment.SleepParameterName(r.SleepPrefix, deploymentID))})
	var missing *ssmtypes.ParameterNotFound
	if errors.As(err, &missing) || deployment.IsCode(err, "ParameterNotFound") {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, deployment.AWSError("ssm:GetParameter", err)
	}
	if err := json.Unmarshal([]byte(aws.ToString(out.Parameter.Value)), &rec); err != nil {
		return rec, false, &deployment.AWSServiceError{Op: "ssm:GetParameter", Code: "Unreadable", Message: "sleep record of " + deploymentID + ": " + err.Error()}
	}
	return rec, true, nil
}

// PutSleepRecord writes a deployment's sleep record.
func (r *Router) PutSleepRecord(ctx context.Context, rec deployment.SleepRecord) error {
	raw, _ := json.Marshal(rec)
	_, err := r.Keys.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(deployment.SleepParameterName(r.SleepPrefix, rec.DeploymentID)),
		Value: aws.String(string(raw)), Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true)})
	if err != nil {
		return deployment.AWSError("ssm:PutParameter", err)
	}
	return nil
}

// Sleep keeps a stopped deployment's endpoint when it wakes on request (its last task's tags say so): the sleep
// record holds the request that starts it again, its forwarding rules send requests to the waker (with the path
// unrewritten, so the waker knows the deployment), and its target group is emptied. It reports false, changing
// nothing, for a deployment that does not wake, and for the failed first start of one (nothing to wake); a wake
// that failed goes back to sleep. Without a task (a wake that failed before its task started) a sleeping
// deployment stays asleep.
func (r *Router) Sleep(ctx context.Context, deploymentID string, last *ecstypes.Task, reason string, failed bool) (bool, error) {
	if r.WakerTargetGroup == "" || r.Keys == nil || r.SleepPrefix == "" {
		return false, nil
	}
	rec, found, err := r.SleepRecord(ctx, deploymentID)
	if err != nil {
		return false, err
	}
	if last == nil {
		if !found || !rec.Asleep {
			return false, nil
		}
	} else {
		wakeCount, _ := strconv.Atoi(deployment.TagValue(last.Tags, deployment.TagWakeCount))
		asleep := found && rec.Asleep
		if !asleep && (deployment.TagValue(last.Tags, deployment.TagWake) != "true" || (failed && wakeCount == 0)) {
			return false, nil
		}
		if asleep && failed {
			// A failed start of a sleeping deployment (a wake, or a redeploy of its id): it stays asleep as it was.
			last = nil
		}
	}
	if last != nil {
		req := requestFromTask(*last, deploymentID)
		req.Wake = 0
		rec.DeploymentID, rec.Request = deploymentID, req
	}
	rules, _, err := r.rules(ctx, deploymentID)
	if err != nil || len(rules) == 0 {
		return false, err
	}
	rec.APIKey = len(rules) > 1
	rec.Request.APIKey = &rec.APIKey
	rec.Asleep, rec.SleptAt, rec.Reason = true, r.now().UTC().Format(time.RFC3339), reason
	if err := r.PutSleepRecord(ctx, rec); err != nil {
		return false, err
	}
	waker, err := r.wakerArn(ctx)
	if err != nil {
		return false, err
	}
	for _, rule := range rules {
		if len(rule.Actions) == 0 || rule.Actions[0].Type != elbtypes.ActionTypeEnumForward {
			continue
		}
		if _, err := r.LB.ModifyRule(ctx, &elbv2.ModifyRuleInput{RuleArn: rule.RuleArn, ResetTransforms: aws.Bool(true),
			Actions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: aws.String(waker)}}}); err != nil {
			return false, deployment.AWSError("elasticloadbalancing:ModifyRule", err)
		}
	}
	if err := r.deregisterAll(ctx, deploymentID); err != nil {
		return false, err
	}
	return true, nil
}

// wakerArn is the waker's target group ARN (WakerTargetGroup is its ARN, or its name).
func (r *Router) wakerArn(ctx context.Context) (string, error) {
	if strings.HasPrefix(r.WakerTargetGroup, "arn:") {
		return r.WakerTargetGroup, nil
	}
	out, err := r.LB.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{r.WakerTargetGroup}})
	if err != nil {
		return "", deployment.AWSError("elasticloadbalancing:DescribeTargetGroups", err)
	}
	if len(out.TargetGroups) == 0 {
		return "", &deployment.AWSServiceError{Op: "elasticloadbalancing:DescribeTargetGroups", Code: "Missing", Message: "no waker target group " + r.WakerTargetGroup}
	}
	return aws.ToString(out.TargetGroups[0].TargetGroupArn), nil
}

// deregisterAll empties a deployment's target group.
func (r *Router) deregisterAll(ctx context.Context, deploymentID string) error {
	out, err := r.LB.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(deploymentID)}})
	if isNotFoundELB(err) {
		return nil
	}
	if err != nil {
		return deployment.AWSError("elasticloadbalancing:DescribeTargetGroups", err)
	}
	for _, tg := range out.TargetGroups {
		health, err := r.LB.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroupArn})
		if err != nil {
			return deployment.AWSError("elasticloadbalancing:DescribeTargetHealth", err)
		}
		var targets []elbtypes.TargetDescription
		for _, t := range health.TargetHealthDescriptions {
			if t.Target != nil {
				targets = append(targets, *t.Target)
			}
		}
		if len(targets) > 0 {
			if _, err := r.LB.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: targets}); err != nil {
				return deployment.AWSError("elasticloadbalancing:DeregisterTargets", err)
			}
		}
	}
	return nil
}

// Resume points a woken deployment's rules at its target group again (with the rewrite), once its task serves,
// and records how long the wake took. A deployment that was not asleep is left as it is.
func (r *Router) Resume(ctx context.Context, deploymentID, targetGroup string) error {
	rec, found, err := r.SleepRecord(ctx, deploymentID)
	if err != nil || !found || !rec.Asleep {
		return err
	}
	key, err := r.Key(ctx, deploymentID)
	if err != nil {
		return err
	}
	rules, _, err := r.rules(ctx, deploymentID)
	if err != nil {
		return err
	}
	wanted := ruleSpecs(deploymentID, targetGroup, key)
	if len(rules) != len(wanted) {
		return &deployment.AWSServiceError{Op: "elasticloadbalancing:ModifyRule", Code: "RulesChanged",
			Message: fmt.Sprintf("deployment %s has %d rules, want %d", deploymentID, len(rules), len(wanted))}
	}
	for i, rule := range rules {
		if wanted[i].Actions[0].Type != elbtypes.ActionTypeEnumForward {
			continue
		}
		if _, err := r.LB.ModifyRule(ctx, &elbv2.ModifyRuleInput{RuleArn: rule.RuleArn, Actions: wanted[i].Actions,
			Transforms: wanted[i].Transforms}); err != nil {
			return deployment.AWSError("elasticloadbalancing:ModifyRule", err)
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, rec.LastWake); err == nil {
		rec.LastStartSeconds = r.now().Sub(t).Seconds()
	}
	// The wake served: whatever becomes of its execution later (a stop while it finishes) is not a failed start.
	rec.Asleep, rec.Failures, rec.LastError, rec.Counted = false, 0, "", rec.Execution
	return r.PutSleepRecord(ctx, rec)
}

func (r *Router) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// ForgetSleeping removes the routes, keys and records of every sleeping deployment.
func (r *Router) ForgetSleeping(ctx context.Context) ([]string, error) {
	recs, err := r.SleepRecords(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, rec := range recs {
		if err := r.Remove(ctx, rec.DeploymentID); err != nil {
			return ids, err
		}
		ids = append(ids, rec.DeploymentID)
	}
	return ids, nil
}

// SleepRecords lists the sleep records under the prefix, by deployment id.
func (r *Router) SleepRecords(ctx context.Context) ([]deployment.SleepRecord, error) {
	recs := []deployment.SleepRecord{}
	if r.Keys == nil || r.SleepPrefix == "" {
		return recs, nil
	}
	in := &ssm.GetParametersByPathInput{Path: aws.String(r.SleepPrefix)}
	for {
		out, err := r.Keys.GetParametersByPath(ctx, in)
		if err != nil {
			return nil, deployment.AWSError("ssm:GetParametersByPath", err)
		}
		for _, p := range out.Parameters {
			var rec deployment.SleepRecord
			if json.Unmarshal([]byte(aws.ToString(p.Value)), &rec) == nil && rec.DeploymentID != "" {
				recs = append(recs, rec)
			}
		}
		if out.NextToken == nil {
			return recs, nil
		}
		in.NextToken = out.NextToken
	}
}
