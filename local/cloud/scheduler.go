package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	schedtypes "github.com/aws/aws-sdk-go-v2/service/scheduler/types"
)

// SchedulerOptions configure NewScheduler.
type SchedulerOptions struct {
	Region, Account string
	// TimeScale speeds up schedule time so demos need not wait: with 60, a minute of schedule time passes in a
	// second of wall time. Schedule time starts equal to wall time at NewScheduler and then runs TimeScale times
	// faster; give Now to the handlers that compute at() times (AutoStop.Now) so they agree. 0 means 1.
	TimeScale float64
	// Invoke fires a schedule's target (the local stack's functions); nil makes schedules record an error when
	// they fire.
	Invoke func(ctx context.Context, scheduleName string, target schedtypes.Target) error
	Log    *slog.Logger
}

// Fired is one schedule that fired.
type Fired struct {
	Name, Group string
	// At is the schedule time it was due; FiredAt the schedule time it fired (TimeScale applies to both).
	At, FiredAt time.Time
	TargetArn   string
	Input       string
	// Err is the target's error, if any.
	Err error
}

// Scheduler is local EventBridge Scheduler for one-time at(...) schedules, which fire on time (to a second,
// where AWS promises a minute) and, with ActionAfterCompletion DELETE, delete themselves after firing. A schedule
// whose time has passed fires at once.
type Scheduler struct {
	opts  SchedulerOptions
	log   *slog.Logger
	start time.Time // wall and schedule time agree here

	mu        sync.Mutex
	schedules map[string]*schedule // by group + "/" + name
	fired     []Fired
	failNext  int
	closed    bool
	wg        sync.WaitGroup
}

type schedule struct {
	in      scheduler.CreateScheduleInput
	group   string
	at      time.Time
	created time.Time
	timer   *time.Timer
}

// NewScheduler starts an empty scheduler.
func NewScheduler(opts SchedulerOptions) *Scheduler {
	if opts.TimeScale <= 0 {
		opts.TimeScale = 1
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.Account == "" {
		opts.Account = "111122223333"
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Scheduler{opts: opts, log: log, start: time.Now(), schedules: map[string]*schedule{}}
}

// Now is the scheduler's clock: wall time, sped up by TimeScale since NewScheduler.
func (s *Scheduler) Now() time.Time {
	elapsed := time.Since(s.start)
	return s.start.Add(time.Duration(float64(elapsed) * s.opts.TimeScale))
}

// wallDelay is how long to wait on the wall clock until schedule time at.
func (s *Scheduler) wallDelay(at time.Time) time.Duration {
	return time.Duration(float64(at.Sub(s.Now())) / s.opts.TimeScale)
}

// FailNextCreates makes the next n CreateSchedule calls fail with a ThrottlingException.
func (s *Scheduler) FailNextCreates(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext += n
}

func groupOf(g *string) string {
	if name := aws.ToString(g); name != "" {
		return name
	}
	return "default"
}

// parseAt reads at(yyyy-mm-ddThh:mm:ss) in the schedule's time zone (UTC by default).
func parseAt(expr, tz string) (time.Time, error) {
	inner, ok := strings.CutPrefix(expr, "at(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return time.Time{}, fmt.Errorf("invalid Schedule Expression %s: the local scheduler supports one-time at(yyyy-mm-ddThh:mm:ss) schedules only", expr)
	}
	loc := time.UTC
	if tz != "" {
		var err error
		if loc, err = time.LoadLocation(tz); err != nil {
			return time.Time{}, fmt.Errorf("invalid ScheduleExpressionTimezone %s", tz)
		}
	}
	t, err := time.ParseInLocation("2006-01-02T15:04:05", strings.TrimSuffix(inner, ")"), loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid Schedule Expression %s: %v", expr, err)
	}
	return t, nil
}

// checkSchedule checks what Create and Update both require and reads the at() time.
func checkSchedule(target *schedtypes.Target, window *schedtypes.FlexibleTimeWindow, expr, tz *string) (time.Time, error) {
	if target == nil || aws.ToString(target.Arn) == "" || window == nil {
		return time.Time{}, &schedtypes.ValidationException{Message: aws.String("Target and FlexibleTimeWindow are required.")}
	}
	at, err := parseAt(aws.ToString(expr), aws.ToString(tz))
	if err != nil {
		return time.Time{}, &schedtypes.ValidationException{Message: aws.String(err.Error())}
	}
	return at, nil
}

// CreateSchedule creates a one-time schedule; a taken name is ConflictException.
func (s *Scheduler) CreateSchedule(_ context.Context, in *scheduler.CreateScheduleInput, _ ...func(*scheduler.Options)) (*scheduler.CreateScheduleOutput, error) {
	name, group := aws.ToString(in.Name), groupOf(in.GroupName)
	if name == "" || len(name) > 64 {
		return nil, &schedtypes.ValidationException{Message: aws.String("Name must be 1 to 64 characters.")}
	}
	at, err := checkSchedule(in.Target, in.FlexibleTimeWindow, in.ScheduleExpression, in.ScheduleExpressionTimezone)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failNext > 0 {
		s.failNext--
		return nil, throttled("scheduler:CreateSchedule")
	}
	if s.closed {
		return nil, &schedtypes.InternalServerException{Message: aws.String("the local scheduler is closed")}
	}
	key := group + "/" + name
	if _, ok := s.schedules[key]; ok {
		return nil, &schedtypes.ConflictException{Message: aws.String(fmt.Sprintf("Schedule %s already exists.", name))}
	}
	sc := &schedule{in: *in, group: group, at: at, created: s.Now()}
	s.schedules[key] = sc
	if in.State != schedtypes.ScheduleStateDisabled {
		sc.timer = time.AfterFunc(max(0, s.wallDelay(at)), func() { s.fire(key, sc) })
	}
	s.log.Info("schedule created", "name", name, "group", group, "at", at, "inWall", max(0, s.wallDelay(at)).Round(time.Millisecond))
	return &scheduler.CreateScheduleOutput{ScheduleArn: aws.String(s.arn(group, name))}, nil
}

// UpdateSchedule replaces a schedule (its time, target and settings), as EventBridge Scheduler does; a missing one
// is ResourceNotFoundException. A schedule that has fired (and was kept) is armed again.
func (s *Scheduler) UpdateSchedule(_ context.Context, in *scheduler.UpdateScheduleInput, _ ...func(*scheduler.Options)) (*scheduler.UpdateScheduleOutput, error) {
	name, group := aws.ToString(in.Name), groupOf(in.GroupName)
	at, err := checkSchedule(in.Target, in.FlexibleTimeWindow, in.ScheduleExpression, in.ScheduleExpressionTimezone)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := group + "/" + name
	old, ok := s.schedules[key]
	if !ok {
		return nil, notFound(name)
	}
	if old.timer != nil {
		old.timer.Stop()
	}
	sc := &schedule{group: group, at: at, created: old.created, in: scheduler.CreateScheduleInput{
		Name: in.Name, GroupName: in.GroupName, ScheduleExpression: in.ScheduleExpression,
		ScheduleExpressionTimezone: in.ScheduleExpressionTimezone, FlexibleTimeWindow: in.FlexibleTimeWindow, Target: in.Target,
		ActionAfterCompletion: in.ActionAfterCompletion, Description: in.Description, State: in.State}}
	s.schedules[key] = sc
	if in.State != schedtypes.ScheduleStateDisabled && !s.closed {
		sc.timer = time.AfterFunc(max(0, s.wallDelay(at)), func() { s.fire(key, sc) })
	}
	s.log.Info("schedule updated", "name", name, "group", group, "at", at)
	return &scheduler.UpdateScheduleOutput{ScheduleArn: aws.String(s.arn(group, name))}, nil
}

func (s *Scheduler) arn(group, name string) string {
	return fmt.Sprintf("arn:aws:scheduler:%s:%s:schedule/%s/%s", s.opts.Region, s.opts.Account, group, name)
}

// fire invokes a due schedule's target and deletes the schedule when it asks to be.
func (s *Scheduler) fire(key string, sc *schedule) {
	s.mu.Lock()
	if s.closed || s.schedules[key] != sc {
		s.mu.Unlock()
		return // deleted or replaced meanwhile
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	target := *sc.in.Target
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.invoke(ctx, aws.ToString(sc.in.Name), target)
	rec := Fired{Name: aws.ToString(sc.in.Name), Group: sc.group, At: sc.at, FiredAt: s.Now(),
		TargetArn: aws.ToString(target.Arn), Input: aws.ToString(target.Input), Err: err}
	s.mu.Lock()
	s.fired = append(s.fired, rec)
	if sc.in.ActionAfterCompletion == schedtypes.ActionAfterCompletionDelete && s.schedules[key] == sc {
		delete(s.schedules, key)
	}
	s.mu.Unlock()
	s.log.Info("schedule fired", "name", rec.Name, "group", rec.Group, "target", rec.TargetArn, "error", err)
}

func (s *Scheduler) invoke(ctx context.Context, name string, target schedtypes.Target) error {
	if s.opts.Invoke == nil {
		return fmt.Errorf("no local handler for target %s", aws.ToString(target.Arn))
	}
	return s.opts.Invoke(ctx, name, target)
}

// GetSchedule returns a schedule; a missing one is ResourceNotFoundException.
func (s *Scheduler) GetSchedule(_ context.Context, in *scheduler.GetScheduleInput, _ ...func(*scheduler.Options)) (*scheduler.GetScheduleOutput, error) {
	name, group := aws.ToString(in.Name), groupOf(in.GroupName)
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, ok := s.schedules[group+"/"+name]
	if !ok {
		return nil, notFound(name)
	}
	state := sc.in.State
	if state == "" {
		state = schedtypes.ScheduleStateEnabled
	}
	return &scheduler.GetScheduleOutput{
		Name: aws.String(name), GroupName: aws.String(group), Arn: aws.String(s.arn(group, name)),
		ScheduleExpression: sc.in.ScheduleExpression, ScheduleExpressionTimezone: sc.in.ScheduleExpressionTimezone,
		ActionAfterCompletion: sc.in.ActionAfterCompletion, Description: sc.in.Description,
		FlexibleTimeWindow: sc.in.FlexibleTimeWindow, Target: sc.in.Target, State: state,
		CreationDate: aws.Time(sc.created), LastModificationDate: aws.Time(sc.created),
	}, nil
}

func notFound(name string) error {
	return &schedtypes.ResourceNotFoundException{Message: aws.String(fmt.Sprintf("Schedule %s does not exist.", name))}
}

// DeleteSchedule deletes a schedule before it fires; a missing one is ResourceNotFoundException.
func (s *Scheduler) DeleteSchedule(_ context.Context, in *scheduler.DeleteScheduleInput, _ ...func(*scheduler.Options)) (*scheduler.DeleteScheduleOutput, error) {
	name, group := aws.ToString(in.Name), groupOf(in.GroupName)
	s.mu.Lock()
	defer s.mu.Unlock()
	key := group + "/" + name
	sc, ok := s.schedules[key]
	if !ok {
		return nil, notFound(name)
	}
	if sc.timer != nil {
		sc.timer.Stop()
	}
	delete(s.schedules, key)
	return &scheduler.DeleteScheduleOutput{}, nil
}

// ListSchedules lists schedules by group and name prefix, sorted by name, without pagination.
func (s *Scheduler) ListSchedules(_ context.Context, in *scheduler.ListSchedulesInput, _ ...func(*scheduler.Options)) (*scheduler.ListSchedulesOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &scheduler.ListSchedulesOutput{Schedules: []schedtypes.ScheduleSummary{}}
	for _, sc := range s.schedules {
		name := aws.ToString(sc.in.Name)
		if in.GroupName != nil && sc.group != aws.ToString(in.GroupName) || !strings.HasPrefix(name, aws.ToString(in.NamePrefix)) {
			continue
		}
		out.Schedules = append(out.Schedules, schedtypes.ScheduleSummary{
			Name: aws.String(name), GroupName: aws.String(sc.group), Arn: aws.String(s.arn(sc.group, name)),
			CreationDate: aws.Time(sc.created), State: schedtypes.ScheduleStateEnabled,
			Target: &schedtypes.TargetSummary{Arn: sc.in.Target.Arn},
		})
	}
	slices.SortFunc(out.Schedules, func(a, b schedtypes.ScheduleSummary) int {
		return strings.Compare(aws.ToString(a.GroupName)+"/"+aws.ToString(a.Name), aws.ToString(b.GroupName)+"/"+aws.ToString(b.Name))
	})
	return out, nil
}

// Fired lists the schedules that fired, in order.
func (s *Scheduler) Fired() []Fired {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.fired)
}

// Close cancels every pending schedule and waits for any firing now.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.closed = true
	for _, sc := range s.schedules {
		if sc.timer != nil {
			sc.timer.Stop()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}
