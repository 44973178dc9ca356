package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	aas "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	aastypes "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
)

// AppAutoScalingOptions configure NewAppAutoScaling.
type AppAutoScalingOptions struct {
	// ECS is the cluster whose services' desired counts are scaled.
	ECS *ECS
	// LB is the load balancer whose counters feed ALBRequestCountPerTarget.
	LB *LoadBalancer
	// Interval is how often policies are evaluated, and Window how far back the request rate is measured (a
	// minute on AWS; locally seconds, scaled to a per-minute rate). Defaults 1 s and 10 s.
	Interval, Window time.Duration
	// ScaleOutCooldown and ScaleInCooldown replace the policies' cooldowns (seconds on AWS) when set, so a local
	// demo scales in seconds.
	ScaleOutCooldown, ScaleInCooldown time.Duration
	Log                               *slog.Logger
}

// AppAutoScaling is local Application Auto Scaling for ECS services: scalable targets (min, max) and target
// tracking on ALBRequestCountPerTarget, fed by the local load balancer's own counters. Each evaluation sets the
// desired count to ceil(tasks × metric / target), within min and max, scaling out at once after its cooldown and
// in only after the scale-in cooldown, as target tracking does.
type AppAutoScaling struct {
	opts AppAutoScalingOptions
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu         sync.Mutex
	targets    map[string]*scalableTarget // by resource id
	activities []ScalingActivity
}

type scalableTarget struct {
	resourceID      string
	min, max        int
	policy          *aastypes.TargetTrackingScalingPolicyConfiguration
	policyName      string
	lastOut, lastIn time.Time
	samples         []sample
}

type sample struct {
	at        time.Time
	forwarded int
}

// ScalingActivity is one change of a service's desired count, and why.
type ScalingActivity struct {
	ResourceID string
	At         time.Time
	From, To   int
	// Metric is the requests per minute per task the decision saw.
	Metric float64
	Cause  string
}

// NewAppAutoScaling starts the evaluation loop.
func NewAppAutoScaling(opts AppAutoScalingOptions) *AppAutoScaling {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Window <= 0 {
		opts.Window = 10 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &AppAutoScaling{opts: opts, log: log, targets: map[string]*scalableTarget{}}
	a.ctx, a.stop = context.WithCancel(context.Background())
	a.wg.Add(1)
	go a.loop()
	return a
}

// Close stops the evaluation loop.
func (a *AppAutoScaling) Close() {
	a.stop()
	a.wg.Wait()
}

func validationError(format string, args ...any) error {
	return &aastypes.ValidationException{Message: aws.String(fmt.Sprintf(format, args...))}
}

// RegisterScalableTarget registers (or updates) an ECS service's desired count bounds.
func (a *AppAutoScaling) RegisterScalableTarget(_ context.Context, in *aas.RegisterScalableTargetInput, _ ...func(*aas.Options)) (*aas.RegisterScalableTargetOutput, error) {
	if in.ServiceNamespace != aastypes.ServiceNamespaceEcs || in.ScalableDimension != aastypes.ScalableDimensionECSServiceDesiredCount {
		return nil, validationError("the local Application Auto Scaling scales ECS services' DesiredCount only")
	}
	id := aws.ToString(in.ResourceId)
	if !strings.HasPrefix(id, "service/") {
		return nil, validationError("resource id %q is not service/<cluster>/<service>", id)
	}
	lo, hi := int(aws.ToInt32(in.MinCapacity)), int(aws.ToInt32(in.MaxCapacity))
	if lo < 0 || hi < lo {
		return nil, validationError("MinCapacity %d and MaxCapacity %d are not a range", lo, hi)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.targets[id]
	if t == nil {
		t = &scalableTarget{resourceID: id}
		a.targets[id] = t
	}
	t.min, t.max = lo, hi
	return &aas.RegisterScalableTargetOutput{ScalableTargetARN: aws.String("arn:aws:application-autoscaling:local:scalable-target/" + id)}, nil
}

// PutScalingPolicy sets a target-tracking policy on ALBRequestCountPerTarget.
func (a *AppAutoScaling) PutScalingPolicy(_ context.Context, in *aas.PutScalingPolicyInput, _ ...func(*aas.Options)) (*aas.PutScalingPolicyOutput, error) {
	c := in.TargetTrackingScalingPolicyConfiguration
	if in.PolicyType != aastypes.PolicyTypeTargetTrackingScaling || c == nil || c.PredefinedMetricSpecification == nil ||
		c.PredefinedMetricSpecification.PredefinedMetricType != aastypes.MetricTypeALBRequestCountPerTarget || aws.ToFloat64(c.TargetValue) <= 0 {
		return nil, validationError("the local Application Auto Scaling takes target tracking on ALBRequestCountPerTarget with a positive target")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.targets[aws.ToString(in.ResourceId)]
	if t == nil {
		return nil, &aastypes.ObjectNotFoundException{Message: aws.String("No scalable target registered for " + aws.ToString(in.ResourceId))}
	}
	t.policy, t.policyName = c, aws.ToString(in.PolicyName)
	return &aas.PutScalingPolicyOutput{PolicyARN: aws.String("arn:aws:autoscaling:local:scalingPolicy:" + t.resourceID + ":" + t.policyName)}, nil
}

// DeregisterScalableTarget removes a target and its policies; an unknown one is ObjectNotFoundException.
func (a *AppAutoScaling) DeregisterScalableTarget(_ context.Context, in *aas.DeregisterScalableTargetInput, _ ...func(*aas.Options)) (*aas.DeregisterScalableTargetOutput, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := aws.ToString(in.ResourceId)
	if a.targets[id] == nil {
		return nil, &aastypes.ObjectNotFoundException{Message: aws.String("No scalable target found for " + id)}
	}
	delete(a.targets, id)
	return &aas.DeregisterScalableTargetOutput{}, nil
}

// Activities lists the scaling decisions so far, oldest first.
func (a *AppAutoScaling) Activities() []ScalingActivity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]ScalingActivity(nil), a.activities...)
}

func (a *AppAutoScaling) loop() {
	defer a.wg.Done()
	tick := time.NewTicker(a.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-tick.C:
		}
		a.mu.Lock()
		targets := make([]*scalableTarget, 0, len(a.targets))
		for _, t := range a.targets {
			targets = append(targets, t)
		}
		a.mu.Unlock()
		for _, t := range targets {
			a.evaluate(t)
		}
	}
}

// evaluate applies one target's policy.
func (a *AppAutoScaling) evaluate(t *scalableTarget) {
	parts := strings.Split(t.resourceID, "/") // service/<cluster>/<name>
	if len(parts) != 3 {
		return
	}
	out, err := a.opts.ECS.DescribeServices(a.ctx, &ecs.DescribeServicesInput{Cluster: aws.String(parts[1]), Services: []string{parts[2]}})
	if err != nil || len(out.Services) == 0 || aws.ToString(out.Services[0].Status) != "ACTIVE" {
		return
	}
	svc := out.Services[0]
	current := int(svc.DesiredCount)
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	want := min(max(current, t.min), t.max)
	metric := 0.0
	if t.policy != nil && len(svc.LoadBalancers) > 0 {
		stats := a.opts.LB.Stats(aws.ToString(svc.LoadBalancers[0].TargetGroupArn))
		t.samples = append(t.samples, sample{at: now, forwarded: stats.Forwarded})
		for len(t.samples) > 1 && now.Sub(t.samples[1].at) >= a.opts.Window {
			t.samples = t.samples[1:]
		}
		first := t.samples[0]
		if span := now.Sub(first.at); span > 0 && len(t.samples) > 1 {
			perMinute := float64(stats.Forwarded-first.forwarded) * float64(time.Minute) / float64(span)
			metric = perMinute / float64(max(1, current))
			target := aws.ToFloat64(t.policy.TargetValue)
			want = min(max(int(math.Ceil(float64(current)*metric/target)), t.min), t.max)
		}
	}
	outCool, inCool := a.cooldowns(t)
	var cause string
	switch {
	case want > current && now.Sub(t.lastOut) >= outCool:
		t.lastOut = now
		cause = fmt.Sprintf("monitor alarm TargetTracking-%s-AlarmHigh: ALBRequestCountPerTarget %.1f/min > target", t.resourceID, metric)
	case want < current && now.Sub(t.lastOut) >= inCool && now.Sub(t.lastIn) >= inCool:
		t.lastIn = now
		cause = fmt.Sprintf("monitor alarm TargetTracking-%s-AlarmLow: ALBRequestCountPerTarget %.1f/min < target", t.resourceID, metric)
	default:
		return
	}
	if _, err := a.opts.ECS.UpdateService(a.ctx, &ecs.UpdateServiceInput{Cluster: aws.String(parts[1]), Service: aws.String(parts[2]),
		DesiredCount: aws.Int32(int32(want))}); err != nil {
		a.log.Warn("scaling a service", "service", parts[2], "error", err)
		return
	}
	a.activities = append(a.activities, ScalingActivity{ResourceID: t.resourceID, At: now, From: current, To: want, Metric: metric, Cause: cause})
	a.log.Info("scaling activity", "service", parts[2], "from", current, "to", want, "metric", metric)
}

func (a *AppAutoScaling) cooldowns(t *scalableTarget) (time.Duration, time.Duration) {
	var out, in time.Duration
	if t.policy != nil {
		out, in = time.Duration(aws.ToInt32(t.policy.ScaleOutCooldown))*time.Second, time.Duration(aws.ToInt32(t.policy.ScaleInCooldown))*time.Second
	}
	if a.opts.ScaleOutCooldown > 0 {
		out = a.opts.ScaleOutCooldown
	}
	if a.opts.ScaleInCooldown > 0 {
		in = a.opts.ScaleInCooldown
	}
	return out, in
}
