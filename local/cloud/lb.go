package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// LoadBalancerOptions configure NewLoadBalancer.
type LoadBalancerOptions struct {
	Region, Account, Name string
	// Addr is where the load balancer listens; empty means 127.0.0.1 on a free port. It must be a loopback address.
	Addr string
	// HealthCheckInterval replaces every target group's health-check interval (local tasks start in a second);
	// 0 keeps the groups' own.
	HealthCheckInterval time.Duration
	// Now stamps requests for the metrics (schedule time, when the local scheduler runs faster than the clock).
	Now func() time.Time
	// Invoke serves a Lambda target (a function ARN registered in a lambda target group) with the load balancer's
	// event, as ELB invokes a Lambda target; nil refuses lambda target groups.
	Invoke func(ctx context.Context, functionArn string, req events.ALBTargetGroupRequest) (events.ALBTargetGroupResponse, error)
	Log    *slog.Logger
}

// LoadBalancer is the local Application Load Balancer with one HTTP listener on loopback. Its control plane is the
// Elastic Load Balancing v2 calls the steps make (target groups, rules with path-pattern and http-header
// conditions, url-rewrite transforms, forward and fixed-response actions, IP targets, health); its data plane
// routes by the rules in priority order, health-checks targets, streams responses, sends each request to the
// healthy target with the fewest outstanding requests, and drains a deregistered target: no new requests, and
// it is removed once its in-flight requests finish or the group's deregistration delay passes. It counts requests
// per target group, which its GetMetricData answers as CloudWatch's AWS/ApplicationELB RequestCount.
type LoadBalancer struct {
	opts                  LoadBalancerOptions
	log                   *slog.Logger
	arn, listenerArn, key string
	url                   string
	srv                   *http.Server
	client                *http.Client
	ctx                   context.Context
	cancel                context.CancelFunc
	wg                    sync.WaitGroup

	mu     sync.Mutex
	seq    int
	groups map[string]*targetGroup // by ARN
	rules  []*lbRule               // by priority
}

type targetGroup struct {
	arn, name         string
	lambda            bool   // a lambda target group: its one target is a function
	function          string // the registered function's ARN
	port              int
	healthPath        string
	interval          time.Duration
	healthy, sick     int
	attrs             map[string]string
	targets           []*lbTarget
	requests          []time.Time // when each forwarded request arrived (opts.Now)
	forwarded, failed int
	turn              int // round robin's next target
}

type lbTarget struct {
	id           string
	port         int
	state        elbtypes.TargetHealthStateEnum
	reason       string
	ok, bad      int
	inflight     int
	drainBy      time.Time
	deregistered bool
}

type lbRule struct {
	arn        string
	priority   int
	conditions []elbtypes.RuleCondition
	actions    []elbtypes.Action
	rewrite    *regexp.Regexp
	replace    string
	tags       []elbtypes.Tag
}

// NewLoadBalancer starts the load balancer's listener and health checker.
func NewLoadBalancer(opts LoadBalancerOptions) (*LoadBalancer, error) {
	if opts.Name == "" {
		opts.Name = "ollama-ecs"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		return nil, fmt.Errorf("local load balancer address %q: want a loopback address", opts.Addr)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &LoadBalancer{opts: opts, log: log, key: randomHex(8), groups: map[string]*targetGroup{},
		client: &http.Client{Timeout: 2 * time.Second}}
	l.arn = fmt.Sprintf("arn:aws:elasticloadbalancing:%s:%s:loadbalancer/app/%s/%s", opts.Region, opts.Account, opts.Name, l.key)
	l.listenerArn = fmt.Sprintf("arn:aws:elasticloadbalancing:%s:%s:listener/app/%s/%s/%s", opts.Region, opts.Account, opts.Name, l.key, randomHex(8))
	l.url = "http://" + ln.Addr().String()
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: 10 * time.Second}
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("local load balancer", "error", err)
		}
	}()
	go l.checkHealth()
	return l, nil
}

// URL is the listener's base URL, http://127.0.0.1:PORT.
func (l *LoadBalancer) URL() string { return l.url }

// ListenerArn is the listener's ARN, where the rules go.
func (l *LoadBalancer) ListenerArn() string { return l.listenerArn }

// FullName is the load balancer's CloudWatch dimension, app/<name>/<id>.
func (l *LoadBalancer) FullName() string { return "app/" + l.opts.Name + "/" + l.key }

// Close stops the listener and the health checker.
func (l *LoadBalancer) Close(ctx context.Context) error {
	l.cancel()
	err := l.srv.Shutdown(ctx)
	l.wg.Wait()
	return err
}

func lbError(code, format string, args ...any) error {
	msg := aws.String(fmt.Sprintf(format, args...))
	switch code {
	case "TargetGroupNotFound":
		return &elbtypes.TargetGroupNotFoundException{Message: msg}
	case "RuleNotFound":
		return &elbtypes.RuleNotFoundException{Message: msg}
	case "PriorityInUse":
		return &elbtypes.PriorityInUseException{Message: msg}
	case "InvalidTarget":
		return &elbtypes.InvalidTargetException{Message: msg}
	case "ListenerNotFound":
		return &elbtypes.ListenerNotFoundException{Message: msg}
	case "ResourceInUse":
		return &elbtypes.ResourceInUseException{Message: msg}
	}
	return &elbtypes.InvalidConfigurationRequestException{Message: msg}
}

// CreateTargetGroup creates an IP target group, or answers with the one of that name.
func (l *LoadBalancer) CreateTargetGroup(_ context.Context, in *elbv2.CreateTargetGroupInput, _ ...func(*elbv2.Options)) (*elbv2.CreateTargetGroupOutput, error) {
	name := aws.ToString(in.Name)
	if !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,31}$`).MatchString(name) || strings.HasSuffix(name, "-") {
		return nil, lbError("ValidationError", "Target group name %q must be 1-32 letters, digits or hyphens", name)
	}
	if in.TargetType != elbtypes.TargetTypeEnumIp && (in.TargetType != elbtypes.TargetTypeEnumLambda || l.opts.Invoke == nil) {
		return nil, lbError("ValidationError", "the local load balancer takes IP target groups (and lambda ones given a function invoker) only")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.groups {
		if g.name == name {
			return &elbv2.CreateTargetGroupOutput{TargetGroups: []elbtypes.TargetGroup{l.describeGroup(g)}}, nil
		}
	}
	g := &targetGroup{name: name, port: int(aws.ToInt32(in.Port)), healthPath: cmpOr(aws.ToString(in.HealthCheckPath), "/"),
		interval: time.Duration(cmpOrInt(aws.ToInt32(in.HealthCheckIntervalSeconds), 30)) * time.Second,
		healthy:  int(cmpOrInt(aws.ToInt32(in.HealthyThresholdCount), 5)), sick: int(cmpOrInt(aws.ToInt32(in.UnhealthyThresholdCount), 2)),
		attrs:  map[string]string{"deregistration_delay.timeout_seconds": "300", "load_balancing.algorithm.type": "round_robin"},
		lambda: in.TargetType == elbtypes.TargetTypeEnumLambda}
	g.arn = fmt.Sprintf("arn:aws:elasticloadbalancing:%s:%s:targetgroup/%s/%s", l.opts.Region, l.opts.Account, name, randomHex(8))
	l.groups[g.arn] = g
	return &elbv2.CreateTargetGroupOutput{TargetGroups: []elbtypes.TargetGroup{l.describeGroup(g)}}, nil
}

func (l *LoadBalancer) describeGroup(g *targetGroup) elbtypes.TargetGroup {
	return elbtypes.TargetGroup{TargetGroupArn: aws.String(g.arn), TargetGroupName: aws.String(g.name), Port: aws.Int32(int32(g.port)),
		Protocol: elbtypes.ProtocolEnumHttp, TargetType: elbtypes.TargetTypeEnumIp, HealthCheckPath: aws.String(g.healthPath),
		HealthCheckIntervalSeconds: aws.Int32(int32(g.interval.Seconds())), LoadBalancerArns: []string{l.arn}}
}

// DescribeTargetGroups finds groups by name or ARN; an unknown one is TargetGroupNotFound, as on AWS.
func (l *LoadBalancer) DescribeTargetGroups(_ context.Context, in *elbv2.DescribeTargetGroupsInput, _ ...func(*elbv2.Options)) (*elbv2.DescribeTargetGroupsOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := &elbv2.DescribeTargetGroupsOutput{}
	for _, want := range append(slices.Clone(in.Names), in.TargetGroupArns...) {
		var found *targetGroup
		for _, g := range l.groups {
			if g.name == want || g.arn == want {
				found = g
			}
		}
		if found == nil {
			return nil, lbError("TargetGroupNotFound", "One or more target groups not found")
		}
		out.TargetGroups = append(out.TargetGroups, l.describeGroup(found))
	}
	if len(in.Names) == 0 && len(in.TargetGroupArns) == 0 {
		for _, g := range l.groups {
			out.TargetGroups = append(out.TargetGroups, l.describeGroup(g))
		}
	}
	return out, nil
}

// ModifyTargetGroupAttributes sets the deregistration delay and the routing algorithm.
func (l *LoadBalancer) ModifyTargetGroupAttributes(_ context.Context, in *elbv2.ModifyTargetGroupAttributesInput, _ ...func(*elbv2.Options)) (*elbv2.ModifyTargetGroupAttributesOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[aws.ToString(in.TargetGroupArn)]
	if g == nil {
		return nil, lbError("TargetGroupNotFound", "Target group %s not found", aws.ToString(in.TargetGroupArn))
	}
	for _, a := range in.Attributes {
		k, v := aws.ToString(a.Key), aws.ToString(a.Value)
		switch k {
		case "deregistration_delay.timeout_seconds":
			if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 3600 {
				return nil, lbError("ValidationError", "deregistration_delay.timeout_seconds must be 0-3600")
			}
		case "load_balancing.algorithm.type":
			if v != "round_robin" && v != "least_outstanding_requests" {
				return nil, lbError("ValidationError", "unknown load_balancing.algorithm.type %q", v)
			}
		}
		g.attrs[k] = v
	}
	return &elbv2.ModifyTargetGroupAttributesOutput{}, nil
}

// ModifyTargetGroup changes a group's health check.
func (l *LoadBalancer) ModifyTargetGroup(_ context.Context, in *elbv2.ModifyTargetGroupInput, _ ...func(*elbv2.Options)) (*elbv2.ModifyTargetGroupOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[aws.ToString(in.TargetGroupArn)]
	if g == nil {
		return nil, lbError("TargetGroupNotFound", "Target group %s not found", aws.ToString(in.TargetGroupArn))
	}
	if p := aws.ToString(in.HealthCheckPath); p != "" {
		g.healthPath = p
	}
	if n := aws.ToInt32(in.HealthCheckIntervalSeconds); n > 0 {
		g.interval = time.Duration(n) * time.Second
	}
	return &elbv2.ModifyTargetGroupOutput{TargetGroups: []elbtypes.TargetGroup{l.describeGroup(g)}}, nil
}

// DeleteTargetGroup deletes a group no rule forwards to.
func (l *LoadBalancer) DeleteTargetGroup(_ context.Context, in *elbv2.DeleteTargetGroupInput, _ ...func(*elbv2.Options)) (*elbv2.DeleteTargetGroupOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	arn := aws.ToString(in.TargetGroupArn)
	if l.groups[arn] == nil {
		return &elbv2.DeleteTargetGroupOutput{}, nil // deleting a deleted group succeeds, as on AWS
	}
	for _, r := range l.rules {
		for _, a := range r.actions {
			if aws.ToString(a.TargetGroupArn) == arn {
				return nil, lbError("ResourceInUse", "Target group %s is currently in use by a listener or a rule", arn)
			}
		}
	}
	delete(l.groups, arn)
	return &elbv2.DeleteTargetGroupOutput{}, nil
}

// CreateRule adds a rule at a free priority.
func (l *LoadBalancer) CreateRule(_ context.Context, in *elbv2.CreateRuleInput, _ ...func(*elbv2.Options)) (*elbv2.CreateRuleOutput, error) {
	if aws.ToString(in.ListenerArn) != l.listenerArn {
		return nil, lbError("ListenerNotFound", "Listener %s not found", aws.ToString(in.ListenerArn))
	}
	p := int(aws.ToInt32(in.Priority))
	if p < 1 || p > 50000 {
		return nil, lbError("ValidationError", "Priority must be 1-50000")
	}
	if len(in.Actions) != 1 || len(in.Conditions) == 0 {
		return nil, lbError("ValidationError", "the local load balancer takes rules with one action and at least one condition")
	}
	r := &lbRule{priority: p, conditions: in.Conditions, actions: in.Actions, tags: in.Tags}
	var err error
	if r.rewrite, r.replace, err = parseTransforms(in.Transforms); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.rules {
		if x.priority == p {
			return nil, lbError("PriorityInUse", "Priority '%d' is currently in use", p)
		}
	}
	a := r.actions[0]
	if a.Type == elbtypes.ActionTypeEnumForward && l.groups[aws.ToString(a.TargetGroupArn)] == nil {
		return nil, lbError("TargetGroupNotFound", "Target group %s not found", aws.ToString(a.TargetGroupArn))
	}
	r.arn = fmt.Sprintf("arn:aws:elasticloadbalancing:%s:%s:listener-rule/app/%s/%s/%s/%s", l.opts.Region, l.opts.Account,
		l.opts.Name, l.key, l.listenerArn[strings.LastIndex(l.listenerArn, "/")+1:], randomHex(8))
	l.rules = append(l.rules, r)
	slices.SortFunc(l.rules, func(a, b *lbRule) int { return a.priority - b.priority })
	return &elbv2.CreateRuleOutput{Rules: []elbtypes.Rule{r.describe()}}, nil
}

func (r *lbRule) describe() elbtypes.Rule {
	out := elbtypes.Rule{RuleArn: aws.String(r.arn), Priority: aws.String(strconv.Itoa(r.priority)), Conditions: r.conditions, Actions: r.actions}
	if r.rewrite != nil {
		out.Transforms = []elbtypes.RuleTransform{{Type: elbtypes.TransformTypeEnumUrlRewrite, UrlRewriteConfig: &elbtypes.UrlRewriteConfig{
			Rewrites: []elbtypes.RewriteConfig{{Regex: aws.String(r.rewrite.String()), Replace: aws.String(r.replace)}}}}}
	}
	return out
}

// DescribeRules lists the listener's rules by priority, the default rule last.
func (l *LoadBalancer) DescribeRules(_ context.Context, in *elbv2.DescribeRulesInput, _ ...func(*elbv2.Options)) (*elbv2.DescribeRulesOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := &elbv2.DescribeRulesOutput{}
	for _, r := range l.rules {
		if len(in.RuleArns) == 0 || slices.Contains(in.RuleArns, r.arn) {
			out.Rules = append(out.Rules, r.describe())
		}
	}
	if len(in.RuleArns) == 0 {
		out.Rules = append(out.Rules, elbtypes.Rule{RuleArn: aws.String(l.listenerArn + "/default"), Priority: aws.String("default"), IsDefault: aws.Bool(true)})
	} else if len(out.Rules) != len(in.RuleArns) {
		return nil, lbError("RuleNotFound", "One or more rules not found")
	}
	return out, nil
}

// ModifyRule replaces a rule's actions, conditions or transforms (ResetTransforms removes them).
func (l *LoadBalancer) ModifyRule(_ context.Context, in *elbv2.ModifyRuleInput, _ ...func(*elbv2.Options)) (*elbv2.ModifyRuleOutput, error) {
	rewrite, replace, err := parseTransforms(in.Transforms)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.rules, func(r *lbRule) bool { return r.arn == aws.ToString(in.RuleArn) })
	if i < 0 {
		return nil, lbError("RuleNotFound", "Rule %s not found", aws.ToString(in.RuleArn))
	}
	r := l.rules[i]
	if len(in.Actions) > 0 {
		if len(in.Actions) != 1 {
			return nil, lbError("ValidationError", "the local load balancer takes rules with one action")
		}
		if a := in.Actions[0]; a.Type == elbtypes.ActionTypeEnumForward && l.groups[aws.ToString(a.TargetGroupArn)] == nil {
			return nil, lbError("TargetGroupNotFound", "Target group %s not found", aws.ToString(a.TargetGroupArn))
		}
		r.actions = in.Actions
	}
	if len(in.Conditions) > 0 {
		r.conditions = in.Conditions
	}
	if rewrite != nil {
		r.rewrite, r.replace = rewrite, replace
	} else if aws.ToBool(in.ResetTransforms) {
		r.rewrite, r.replace = nil, ""
	}
	return &elbv2.ModifyRuleOutput{Rules: []elbtypes.Rule{r.describe()}}, nil
}

// parseTransforms reads the one url-rewrite transform the local load balancer applies (nil without one).
func parseTransforms(ts []elbtypes.RuleTransform) (*regexp.Regexp, string, error) {
	for _, t := range ts {
		if t.Type != elbtypes.TransformTypeEnumUrlRewrite || t.UrlRewriteConfig == nil || len(t.UrlRewriteConfig.Rewrites) != 1 {
			return nil, "", lbError("ValidationError", "the local load balancer takes one url-rewrite transform with one rewrite")
		}
		rw := t.UrlRewriteConfig.Rewrites[0]
		re, err := regexp.Compile(aws.ToString(rw.Regex))
		if err != nil {
			return nil, "", lbError("ValidationError", "invalid rewrite regex: %v", err)
		}
		return re, aws.ToString(rw.Replace), nil
	}
	return nil, "", nil
}

// DeleteRule deletes a rule; an unknown one is RuleNotFound.
func (l *LoadBalancer) DeleteRule(_ context.Context, in *elbv2.DeleteRuleInput, _ ...func(*elbv2.Options)) (*elbv2.DeleteRuleOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.rules, func(r *lbRule) bool { return r.arn == aws.ToString(in.RuleArn) })
	if i < 0 {
		return nil, lbError("RuleNotFound", "Rule %s not found", aws.ToString(in.RuleArn))
	}
	l.rules = slices.Delete(l.rules, i, i+1)
	return &elbv2.DeleteRuleOutput{}, nil
}

// RegisterTargets adds loopback IP targets (the local tasks); a target registered again stops draining.
func (l *LoadBalancer) RegisterTargets(_ context.Context, in *elbv2.RegisterTargetsInput, _ ...func(*elbv2.Options)) (*elbv2.RegisterTargetsOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[aws.ToString(in.TargetGroupArn)]
	if g == nil {
		return nil, lbError("TargetGroupNotFound", "Target group %s not found", aws.ToString(in.TargetGroupArn))
	}
	if g.lambda {
		if len(in.Targets) != 1 || !strings.HasPrefix(aws.ToString(in.Targets[0].Id), "arn:aws:lambda:") {
			return nil, lbError("InvalidTarget", "a lambda target group takes one function ARN")
		}
		g.function = aws.ToString(in.Targets[0].Id)
		return &elbv2.RegisterTargetsOutput{}, nil
	}
	for _, t := range in.Targets {
		ip := net.ParseIP(aws.ToString(t.Id))
		if ip == nil || !ip.IsLoopback() {
			// The local load balancer health-checks and forwards to its targets: only loopback ones.
			return nil, lbError("InvalidTarget", "the local load balancer takes loopback IP targets only, not %q", aws.ToString(t.Id))
		}
		port := int(aws.ToInt32(t.Port))
		if port == 0 {
			port = g.port
		}
		if x := g.find(ip.String(), port); x != nil {
			x.deregistered, x.drainBy = false, time.Time{}
			if x.state == elbtypes.TargetHealthStateEnumDraining {
				x.state, x.ok, x.bad = elbtypes.TargetHealthStateEnumInitial, 0, 0
			}
			continue
		}
		g.targets = append(g.targets, &lbTarget{id: ip.String(), port: port, state: elbtypes.TargetHealthStateEnumInitial, reason: "Elb.RegistrationInProgress"})
	}
	return &elbv2.RegisterTargetsOutput{}, nil
}

func (g *targetGroup) find(id string, port int) *lbTarget {
	for _, t := range g.targets {
		if t.id == id && t.port == port {
			return t
		}
	}
	return nil
}

// DeregisterTargets starts draining targets.
func (l *LoadBalancer) DeregisterTargets(_ context.Context, in *elbv2.DeregisterTargetsInput, _ ...func(*elbv2.Options)) (*elbv2.DeregisterTargetsOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[aws.ToString(in.TargetGroupArn)]
	if g == nil {
		return nil, lbError("TargetGroupNotFound", "Target group %s not found", aws.ToString(in.TargetGroupArn))
	}
	delay, _ := strconv.Atoi(g.attrs["deregistration_delay.timeout_seconds"])
	for _, t := range in.Targets {
		x := g.find(aws.ToString(t.Id), int(cmpOrInt(aws.ToInt32(t.Port), int32(g.port))))
		if x == nil || x.deregistered {
			continue
		}
		x.deregistered, x.state, x.reason = true, elbtypes.TargetHealthStateEnumDraining, "Target.DeregistrationInProgress"
		x.drainBy = time.Now().Add(time.Duration(delay) * time.Second)
		g.sweep()
	}
	return &elbv2.DeregisterTargetsOutput{}, nil
}

// sweep removes drained targets: no request in flight, or past the deregistration delay. The caller holds mu.
func (g *targetGroup) sweep() {
	g.targets = slices.DeleteFunc(g.targets, func(t *lbTarget) bool {
		return t.deregistered && (t.inflight == 0 || time.Now().After(t.drainBy))
	})
}

// DescribeTargetHealth reports each registered (or draining) target's state.
func (l *LoadBalancer) DescribeTargetHealth(_ context.Context, in *elbv2.DescribeTargetHealthInput, _ ...func(*elbv2.Options)) (*elbv2.DescribeTargetHealthOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[aws.ToString(in.TargetGroupArn)]
	if g == nil {
		return nil, lbError("TargetGroupNotFound", "Target group %s not found", aws.ToString(in.TargetGroupArn))
	}
	g.sweep()
	out := &elbv2.DescribeTargetHealthOutput{}
	for _, t := range g.targets {
		d := elbtypes.TargetHealthDescription{Target: &elbtypes.TargetDescription{Id: aws.String(t.id), Port: aws.Int32(int32(t.port))},
			HealthCheckPort: aws.String(strconv.Itoa(t.port)), TargetHealth: &elbtypes.TargetHealth{State: t.state}}
		if t.reason != "" {
			d.TargetHealth.Reason = elbtypes.TargetHealthReasonEnum(t.reason)
		}
		out.TargetHealthDescriptions = append(out.TargetHealthDescriptions, d)
	}
	return out, nil
}

// TargetGroupStats are a target group's counters: requests forwarded and refused for want of a target, and
// requests in flight now.
type TargetGroupStats struct {
	Forwarded, Failed, InFlight, Healthy int
}

// Stats reads a target group's counters.
func (l *LoadBalancer) Stats(targetGroupArn string) TargetGroupStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[targetGroupArn]
	if g == nil {
		return TargetGroupStats{}
	}
	s := TargetGroupStats{Forwarded: g.forwarded, Failed: g.failed}
	for _, t := range g.targets {
		s.InFlight += t.inflight
		if t.state == elbtypes.TargetHealthStateEnumHealthy {
			s.Healthy++
		}
	}
	return s
}

// RequestsSince counts the requests forwarded to a target group at or after t (opts.Now's clock).
func (l *LoadBalancer) RequestsSince(targetGroupArn string, t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[targetGroupArn]
	if g == nil {
		return 0
	}
	i, _ := slices.BinarySearchFunc(g.requests, t, func(a, b time.Time) int { return a.Compare(b) })
	return len(g.requests) - i
}

// GetMetricData is local CloudWatch for the load balancer's own metrics: AWS/ApplicationELB RequestCount by
// TargetGroup (Sum), in Period buckets over [StartTime, EndTime); buckets with no requests are left out, as
// CloudWatch leaves out the minutes an ALB published nothing.
func (l *LoadBalancer) GetMetricData(_ context.Context, in *cloudwatch.GetMetricDataInput, _ ...func(*cloudwatch.Options)) (*cloudwatch.GetMetricDataOutput, error) {
	from, to := aws.ToTime(in.StartTime), aws.ToTime(in.EndTime)
	if !from.Before(to) {
		return nil, &cwtypes.InvalidParameterValueException{Message: aws.String("The parameter StartTime must be less than the parameter EndTime.")}
	}
	out := &cloudwatch.GetMetricDataOutput{}
	for _, q := range in.MetricDataQueries {
		res := cwtypes.MetricDataResult{Id: q.Id, Label: q.Id, StatusCode: cwtypes.StatusCodeComplete}
		ms := q.MetricStat
		if ms == nil || ms.Metric == nil || aws.ToString(ms.Metric.Namespace) != "AWS/ApplicationELB" ||
			aws.ToString(ms.Metric.MetricName) != "RequestCount" || aws.ToString(ms.Stat) != "Sum" {
			out.MetricDataResults = append(out.MetricDataResults, res) // a metric the local load balancer does not publish: no data
			continue
		}
		period := time.Duration(cmpOrInt(aws.ToInt32(ms.Period), 60)) * time.Second
		var dim string
		for _, d := range ms.Metric.Dimensions {
			if aws.ToString(d.Name) == "TargetGroup" {
				dim = aws.ToString(d.Value)
			}
		}
		l.mu.Lock()
		var times []time.Time
		for _, g := range l.groups {
			if strings.HasSuffix(g.arn, dim) && dim != "" {
				times = slices.Clone(g.requests)
			}
		}
		l.mu.Unlock()
		buckets := map[time.Time]float64{}
		for _, t := range times {
			if !t.Before(from) && t.Before(to) {
				buckets[from.Add(t.Sub(from)/period*period)]++
			}
		}
		keys := make([]time.Time, 0, len(buckets))
		for k := range buckets {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b time.Time) int { return b.Compare(a) })
		if in.ScanBy == cwtypes.ScanByTimestampAscending {
			slices.Reverse(keys)
		}
		for _, k := range keys {
			res.Timestamps = append(res.Timestamps, k)
			res.Values = append(res.Values, buckets[k])
		}
		out.MetricDataResults = append(out.MetricDataResults, res)
	}
	return out, nil
}

// ServeHTTP is the listener: the first rule that matches, by priority, decides; no match is the default action
// (404).
func (l *LoadBalancer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	l.mu.Lock()
	var rule *lbRule
	for _, r := range l.rules {
		if r.matches(req) {
			rule = r
			break
		}
	}
	if rule == nil {
		l.mu.Unlock()
		fixed(w, http.StatusNotFound, "application/json", `{"error":"no deployment at this path"}`)
		return
	}
	a := rule.actions[0]
	if a.Type == elbtypes.ActionTypeEnumFixedResponse && a.FixedResponseConfig != nil {
		l.mu.Unlock()
		c := a.FixedResponseConfig
		code, _ := strconv.Atoi(aws.ToString(c.StatusCode))
		fixed(w, code, aws.ToString(c.ContentType), aws.ToString(c.MessageBody))
		return
	}
	g := l.groups[aws.ToString(a.TargetGroupArn)]
	if g != nil && g.lambda {
		fn := g.function
		g.forwarded++
		g.requests = append(g.requests, l.opts.Now())
		l.mu.Unlock()
		l.invoke(w, req, fn, rule)
		return
	}
	var t *lbTarget
	if g != nil {
		t = g.pick()
	}
	if t == nil {
		if g != nil {
			g.failed++
		}
		l.mu.Unlock()
		fixed(w, http.StatusServiceUnavailable, "application/json", `{"error":"the deployment has no healthy target"}`)
		return
	}
	t.inflight++
	g.forwarded++
	g.requests = append(g.requests, l.opts.Now())
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort(t.id, strconv.Itoa(t.port))}
	newPath := req.URL.Path
	if rule.rewrite != nil {
		newPath = rule.rewrite.ReplaceAllString(req.URL.Path, rule.replace)
		if !strings.HasPrefix(newPath, "/") {
			newPath = "/" + newPath
		}
	}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		t.inflight--
		g.sweep()
		l.mu.Unlock()
	}()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path, pr.Out.URL.RawPath = newPath, ""
			pr.SetXForwarded()
		},
		FlushInterval: -1, // stream tokens as the target writes them
		ErrorLog:      slog.NewLogLogger(l.log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			l.log.Warn("load balancer: target failed", "target", target.Host, "error", err)
			fixed(w, http.StatusBadGateway, "application/json", `{"error":"the target closed the connection"}`)
		},
	}
	proxy.ServeHTTP(w, req)
}

// invoke serves a request with a Lambda target, as ELB does: the request as an ALB event (the path as rewritten
// by the rule), the function's answer as the response.
func (l *LoadBalancer) invoke(w http.ResponseWriter, req *http.Request, fn string, rule *lbRule) {
	if fn == "" {
		fixed(w, http.StatusServiceUnavailable, "application/json", `{"error":"the lambda target group has no function"}`)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		fixed(w, http.StatusBadRequest, "application/json", `{"error":"reading the request"}`)
		return
	}
	path := req.URL.Path
	if rule.rewrite != nil {
		path = rule.rewrite.ReplaceAllString(path, rule.replace)
	}
	ev := events.ALBTargetGroupRequest{HTTPMethod: req.Method, Path: path, Headers: map[string]string{}, Body: string(body),
		QueryStringParameters: map[string]string{}}
	for k := range req.Header {
		ev.Headers[strings.ToLower(k)] = req.Header.Get(k)
	}
	for k, v := range req.URL.Query() {
		ev.QueryStringParameters[k] = v[0]
	}
	resp, err := l.opts.Invoke(req.Context(), fn, ev)
	if err != nil {
		l.log.Warn("load balancer: lambda target failed", "function", fn, "error", err)
		fixed(w, http.StatusBadGateway, "application/json", `{"error":"the lambda target failed"}`)
		return
	}
	for k, v := range resp.Headers {
		w.Header().Set(k, v)
	}
	code := resp.StatusCode
	if code == 0 {
		code = http.StatusOK
	}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, resp.Body)
}

func fixed(w http.ResponseWriter, code int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// pick is the target a request goes to: with least_outstanding_requests the healthy one with the fewest in
// flight, else the next healthy one in turn; when none is healthy, ALB fails open to the unhealthy ones.
func (g *targetGroup) pick() *lbTarget {
	var healthy, sick []*lbTarget
	for _, t := range g.targets {
		switch t.state {
		case elbtypes.TargetHealthStateEnumHealthy:
			healthy = append(healthy, t)
		case elbtypes.TargetHealthStateEnumUnhealthy:
			sick = append(sick, t)
		}
	}
	pool := cmpOrSlice(healthy, sick)
	if len(pool) == 0 {
		return nil
	}
	if g.attrs["load_balancing.algorithm.type"] == "least_outstanding_requests" {
		return slices.MinFunc(pool, func(a, b *lbTarget) int { return a.inflight - b.inflight })
	}
	g.turn++
	return pool[g.turn%len(pool)]
}

// matches applies a rule's conditions: path-pattern on the path (case-sensitive, * and ?), http-header on a
// header's values (case-insensitive, * and ?).
func (r *lbRule) matches(req *http.Request) bool {
	for _, c := range r.conditions {
		switch aws.ToString(c.Field) {
		case "path-pattern":
			var values []string
			if c.PathPatternConfig != nil {
				values = c.PathPatternConfig.Values
			}
			if !slices.ContainsFunc(append(values, c.Values...), func(p string) bool { return wildcard(p, req.URL.Path) }) {
				return false
			}
		case "http-header":
			if c.HttpHeaderConfig == nil {
				return false
			}
			got := req.Header.Values(aws.ToString(c.HttpHeaderConfig.HttpHeaderName))
			if !slices.ContainsFunc(c.HttpHeaderConfig.Values, func(p string) bool {
				return slices.ContainsFunc(got, func(v string) bool { return wildcard(strings.ToLower(p), strings.ToLower(v)) })
			}) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// wildcard matches ALB's patterns: * any characters, ? one.
func wildcard(pattern, s string) bool {
	re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(pattern)) + "$"
	m, _ := regexp.MatchString(re, s)
	return m
}

// checkHealth health-checks every target on its group's interval (or the local override).
func (l *LoadBalancer) checkHealth() {
	defer l.wg.Done()
	tick := 200 * time.Millisecond
	last := map[*lbTarget]time.Time{}
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(tick):
		}
		type probe struct {
			g *targetGroup
			t *lbTarget
			u string
		}
		var due []probe
		l.mu.Lock()
		for _, g := range l.groups {
			interval := g.interval
			if l.opts.HealthCheckInterval > 0 {
				interval = l.opts.HealthCheckInterval
			}
			for _, t := range g.targets {
				if t.deregistered || time.Since(last[t]) < interval {
					continue
				}
				last[t] = time.Now()
				due = append(due, probe{g, t, "http://" + net.JoinHostPort(t.id, strconv.Itoa(t.port)) + g.healthPath})
			}
		}
		l.mu.Unlock()
		for _, p := range due {
			ok := l.probe(p.u)
			l.mu.Lock()
			p.g.observe(p.t, ok)
			l.mu.Unlock()
		}
	}
}

func (l *LoadBalancer) probe(u string) bool {
	ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// observe applies one health check's result to a target; the caller holds mu.
func (g *targetGroup) observe(t *lbTarget, ok bool) {
	if t.deregistered {
		return
	}
	if ok {
		t.ok, t.bad = t.ok+1, 0
		if t.ok >= g.healthy || t.state == elbtypes.TargetHealthStateEnumHealthy {
			t.state, t.reason = elbtypes.TargetHealthStateEnumHealthy, ""
		}
		return
	}
	t.ok, t.bad = 0, t.bad+1
	if t.bad >= g.sick || t.state == elbtypes.TargetHealthStateEnumInitial && t.bad >= g.sick {
		t.state, t.reason = elbtypes.TargetHealthStateEnumUnhealthy, "Target.FailedHealthChecks"
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmpOrInt(v, def int32) int32 {
	if v == 0 {
		return def
	}
	return v
}

func cmpOrSlice[T any](a, b []T) []T {
	if len(a) > 0 {
		return a
	}
	return b
}
