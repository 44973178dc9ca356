package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func defineList(fs *pflag.FlagSet) runner {
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		c, err := connect(ctx, af, outCluster, outScheduleGroup, outLBName, outListener, outKeyPrefix, outEndpointBase)
		if err != nil {
			return err
		}
		now := time.Now()
		ds, err := listDeployments(ctx, c.ECS, c.Scheduler, c.Outputs[outCluster], c.Outputs[outScheduleGroup], "", now, true, c.usage())
		if err != nil {
			return err
		}
		recs, err := c.router().SleepRecords(ctx)
		if err != nil {
			return err
		}
		ds = withEndpoints(withSleeping(ds, recs), c.Outputs[outEndpointBase])
		if af.json() {
			return writeJSON(stdout, ds)
		}
		return writeDeployments(stdout, ds, now)
	}
}

// listedDeployment is one running (or starting, or stopping) deployment as ECS records it.
type listedDeployment struct {
	DeploymentID string  `json:"deploymentId"`
	Model        string  `json:"model"`
	Env          string  `json:"env"`
	Requester    string  `json:"requester"`
	Placement    string  `json:"placement"`
	InstanceType string  `json:"instanceType"`
	Status       string  `json:"status"`
	TaskArn      string  `json:"taskArn"`
	HourlyUSD    float64 `json:"hourlyCostUSD"`
	// StartedAt is when the task started (or was created, while it is still starting).
	StartedAt     time.Time `json:"startedAt"`
	UptimeSeconds int64     `json:"uptimeSeconds"`
	// CostSoFarUSD is the hourly cost times the uptime.
	CostSoFarUSD float64 `json:"costSoFarUSD"`
	// AutoStopAt is the auto-stop schedule's time; zero when there is none.
	AutoStopAt time.Time `json:"autoStopAt,omitzero"`
	// StoppedReason is why an INTERRUPTED deployment's task stopped.
	StoppedReason string `json:"stoppedReason,omitempty"`
	// Requests are those the load balancer forwarded to the deployment since the task started, and LastUse the
	// last minute with any; UsageError says why they could not be read.
	Requests   int       `json:"requests"`
	LastUse    time.Time `json:"lastUse,omitzero"`
	UsageError string    `json:"usageError,omitempty"`
	// Service is a prod deployment's ECS service, which runs the task.
	Service string `json:"service,omitempty"`
	// Endpoint is where clients reach the deployment (its load balancer path), when the stack's base is known.
	Endpoint string `json:"endpoint,omitempty"`
	// Wakes counts the times a request woke the deployment, LastWake the last; WakeError is why a sleeping one no
	// longer wakes (its last starts failed).
	Wakes     int       `json:"wakes,omitempty"`
	LastWake  time.Time `json:"lastWake,omitzero"`
	WakeError string    `json:"wakeError,omitempty"`
}

// withEndpoints fills in each deployment's endpoint from the load balancer's base URL (none when unknown).
func withEndpoints(ds []listedDeployment, base string) []listedDeployment {
	for i := range ds {
		if base != "" {
			ds[i].Endpoint = strings.TrimRight(base, "/") + deployment.RoutePath(ds[i].DeploymentID)
		}
	}
	return ds
}

// withSleeping adds the sleeping deployments (SLEEPING: their endpoint wakes them) and every deployment's wakes.
func withSleeping(ds []listedDeployment, recs []deployment.SleepRecord) []listedDeployment {
	for _, rec := range recs {
		last, _ := time.Parse(time.RFC3339Nano, rec.LastWake)
		live := false
		for i := range ds {
			if ds[i].DeploymentID == rec.DeploymentID {
				ds[i].Wakes, ds[i].LastWake, live = rec.Wakes, last, true
			}
		}
		if live || !rec.Asleep {
			continue
		}
		d := listedDeployment{DeploymentID: rec.DeploymentID, Model: rec.Request.Model, Env: rec.Request.Env, Requester: rec.Request.Requester,
			Status: "SLEEPING", Wakes: rec.Wakes, LastWake: last}
		if rec.Failures >= deployment.MaxWakeFailures {
			d.Status, d.WakeError = "SLEEPING (no longer wakes)", rec.LastError
		}
		ds = append(ds, d)
	}
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].DeploymentID < ds[j].DeploymentID })
	return ds
}

// listDeployments reads the deployments from ECS: tasks of the cluster tagged as managed by ollama-ecs, with the
// deployment id as startedBy; startedBy, when not empty, narrows the list to one deployment. With interrupted, a
// deployment whose ready task stopped on its own (the teardown function tagged it interrupted, with its stop
// code) and that has no live task shows as INTERRUPTED while ECS still describes the stopped task (about an hour).
//
// A prod deployment's tasks are its service's (startedBy ecs-svc/...), one row each. With usage, each row has the
// requests the load balancer counted for the deployment since its task started.
func listDeployments(ctx context.Context, api deployment.TaskStopper, sched deployment.Schedules, cluster, group, startedBy string, now time.Time, interrupted bool, usage *steps.UsageReader) ([]listedDeployment, error) {
	statuses := []ecstypes.DesiredStatus{ecstypes.DesiredStatusRunning}
	if interrupted {
		statuses = append(statuses, ecstypes.DesiredStatusStopped)
	}
	ds := []listedDeployment{}
	live := map[string]bool{}
	for _, desired := range statuses {
		ins := []*ecs.ListTasksInput{{Cluster: aws.String(cluster), DesiredStatus: desired}}
		if startedBy != "" {
			ins = []*ecs.ListTasksInput{
				{Cluster: aws.String(cluster), DesiredStatus: desired, StartedBy: aws.String(startedBy)},
				{Cluster: aws.String(cluster), DesiredStatus: desired, ServiceName: aws.String(deployment.ServiceName(startedBy))},
			}
		}
		var tasks []ecstypes.Task
		for _, in := range ins {
			some, err := deployment.ListTasks(ctx, api, cluster, in)
			var refused *deployment.AWSRequestError
			if errors.As(err, &refused) && refused.Code == "ClusterNotFoundException" {
				return nil, fmt.Errorf("cluster %q not found: check --stack or --cluster", cluster)
			}
			if err != nil && !(in.ServiceName != nil && deployment.IsCode(err, "ServiceNotFoundException")) {
				return nil, err
			}
			tasks = append(tasks, some...)
		}
		for _, t := range tasks {
			id := deployment.TagValue(t.Tags, deployment.TagDeploymentID)
			service := strings.HasPrefix(aws.ToString(t.StartedBy), "ecs-svc/")
			if deployment.TagValue(t.Tags, deployment.TagManagedBy) != deployment.ManagedByValue || id == "" || (aws.ToString(t.StartedBy) != id && !service) ||
				(startedBy != "" && id != startedBy) {
				continue
			}
			stopped := aws.ToString(t.LastStatus) == "STOPPED"
			switch {
			case desired == ecstypes.DesiredStatusRunning && (stopped || aws.ToString(t.DesiredStatus) == "STOPPED"):
				continue
			case desired == ecstypes.DesiredStatusStopped && (live[id] || deployment.TagValue(t.Tags, deployment.TagInterrupted) == ""):
				continue
			}
			d := listedDeployment{
				DeploymentID: id, Model: deployment.TagValue(t.Tags, deployment.TagModel), Env: deployment.TagValue(t.Tags, deployment.TagEnv),
				Requester: deployment.TagValue(t.Tags, deployment.TagRequester), Placement: deployment.TagValue(t.Tags, deployment.TagPlacement),
				InstanceType: deployment.TagValue(t.Tags, deployment.TagInstanceType), Status: aws.ToString(t.LastStatus),
				TaskArn: aws.ToString(t.TaskArn),
			}
			if service {
				d.Service = deployment.ServiceName(id)
			}
			end := now
			if desired == ecstypes.DesiredStatusStopped {
				d.Status = "INTERRUPTED (" + deployment.TagValue(t.Tags, deployment.TagInterrupted) + ")"
				d.StoppedReason = aws.ToString(t.StoppedReason)
				end = aws.ToTime(t.StoppedAt)
			}
			live[id] = true
			d.HourlyUSD, _ = strconv.ParseFloat(deployment.TagValue(t.Tags, deployment.TagHourlyUSD), 64)
			d.StartedAt = aws.ToTime(t.StartedAt)
			if d.StartedAt.IsZero() {
				d.StartedAt = aws.ToTime(t.CreatedAt)
			}
			if !d.StartedAt.IsZero() && end.After(d.StartedAt) {
				up := end.Sub(d.StartedAt)
				d.UptimeSeconds = int64(up / time.Second)
				d.CostSoFarUSD = d.HourlyUSD * up.Hours()
			}
			ds = append(ds, d)
		}
	}
	for i := range ds {
		at, err := autoStopAt(ctx, sched, group, ds[i].DeploymentID)
		if err != nil {
			return nil, err
		}
		ds[i].AutoStopAt = at
		if usage != nil && !ds[i].StartedAt.IsZero() {
			// The load balancer's count covers the deployment's target group: every task of a service shares it.
			use, err := usage.OfDeployment(ctx, ds[i].DeploymentID, ds[i].StartedAt, now.Add(time.Minute))
			if err != nil {
				ds[i].UsageError = err.Error()
				continue
			}
			ds[i].Requests, ds[i].LastUse = use.Requests, use.LastUse
		}
	}
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].DeploymentID != ds[j].DeploymentID {
			return ds[i].DeploymentID < ds[j].DeploymentID
		}
		return ds[i].TaskArn < ds[j].TaskArn
	})
	return ds, nil
}

// autoStopAt reads the deployment's auto-stop schedule; zero when it has none.
func autoStopAt(ctx context.Context, sched deployment.Schedules, group, id string) (time.Time, error) {
	out, err := sched.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(deployment.ScheduleName(id)), GroupName: aws.String(group)})
	if isCode(err, "ResourceNotFoundException") {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, awsErr("scheduler:GetSchedule", err)
	}
	// The autostop step writes at(yyyy-mm-ddThh:mm:ss) in UTC.
	loc := time.UTC
	if tz := aws.ToString(out.ScheduleExpressionTimezone); tz != "" {
		if l, err := time.LoadLocation(tz); err == nil {
			loc = l
		}
	}
	t, err := time.ParseInLocation("at(2006-01-02T15:04:05)", aws.ToString(out.ScheduleExpression), loc)
	if err != nil {
		return time.Time{}, nil
	}
	return t.UTC(), nil
}

// writeDeployments prints the deployments as a table.
func writeDeployments(w io.Writer, ds []listedDeployment, now time.Time) error {
	if len(ds) == 0 {
		_, err := fmt.Fprintln(w, "no deployments running")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMODEL\tENV\tPLACEMENT\tSTATUS\tUPTIME\t$/HOUR\tCOST SO FAR\tREQUESTS\tLAST USE\tAUTO-STOP")
	for _, d := range ds {
		placement := placementText(d.Placement, d.InstanceType)
		stop := "-"
		if !d.AutoStopAt.IsZero() {
			stop = d.AutoStopAt.Format("2006-01-02 15:04Z")
			if left := d.AutoStopAt.Sub(now); left > 0 {
				stop += " (in " + shortDuration(left) + ")"
			}
		}
		requests, lastUse := strconv.Itoa(d.Requests), "-"
		if d.UsageError != "" {
			requests = "?"
		}
		if !d.LastUse.IsZero() {
			lastUse = shortDuration(now.Sub(d.LastUse).Truncate(time.Second)) + " ago"
		}
		status := d.Status
		if d.Service != "" {
			status += " (service)"
		}
		if d.Wakes > 0 {
			status += fmt.Sprintf(" (woken %dx, last %s ago)", d.Wakes, shortDuration(now.Sub(d.LastWake).Truncate(time.Second)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.4f\t$%.2f\t%s\t%s\t%s\n", d.DeploymentID, d.Model, d.Env, placement, status,
			shortDuration(time.Duration(d.UptimeSeconds)*time.Second), d.HourlyUSD, d.CostSoFarUSD, requests, lastUse, stop)
	}
	return tw.Flush()
}

// shortDuration is hours and minutes ("2h05m"), or minutes and seconds under an hour.
func shortDuration(d time.Duration) string {
	if d < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}
