package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
)

func defineStop(fs *pflag.FlagSet) runner {
	viaEvents := fs.Bool("via-events", false, "put a Stop Request on the event bus instead of stopping directly")
	reason := fs.String("reason", "", "why, recorded as the task's stop reason")
	requester := fs.String("requester", envOr("USER", ""), "who asks")
	forget := fs.Bool("forget", false, "remove the endpoint too (a deployment that wakes on request keeps it otherwise)")
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		id := pos[0]
		if !events.ValidDeploymentID(id) {
			return usageError{fmt.Sprintf("%q is not a deployment id (3-36 of a-z, 0-9, -)", id)}
		}
		need := []string{outCluster, outScheduleGroup, outListener, outLBName, outKeyPrefix, outWakerTargetGroup}
		if *viaEvents {
			need = append(need, outEventBus)
		}
		c, err := connect(ctx, af, need...)
		if err != nil {
			return err
		}
		cluster, group := c.Outputs[outCluster], c.Outputs[outScheduleGroup]
		// Unknown ids fail before anything is asked of the bus or ECS: a typo must not look like a stop.
		ds, err := listDeployments(ctx, c.ECS, c.Scheduler, cluster, group, id, time.Now(), false, nil)
		if err != nil {
			return err
		}
		sched, err := autoStopAt(ctx, c.Scheduler, group, id)
		if err != nil {
			return err
		}
		_, asleep, err := c.router().SleepRecord(ctx, id)
		if err != nil {
			return err
		}
		if len(ds) == 0 && sched.IsZero() && !asleep {
			return fmt.Errorf("unknown deployment %q: no running task in cluster %s, no auto-stop schedule and no sleeping endpoint", id, cluster)
		}
		why := "ollama-ecs stop command"
		if *requester != "" {
			why += " from " + cleanRequester(*requester)
		}
		if *reason != "" {
			why += ": " + oneLine(*reason)
		}
		if *viaEvents {
			evID, err := putEvent(ctx, c.Events, c.Outputs[outEventBus], events.DetailTypeStop, events.StopRequest{
				DeploymentID: id, Requester: cleanRequester(*requester), Reason: shorten(cleanRequester(*reason), 128), Forget: *forget,
			})
			if err != nil {
				return err
			}
			if af.json() {
				return writeJSON(stdout, map[string]string{"deploymentId": id, "eventId": evID, "eventBus": c.Outputs[outEventBus]})
			}
			_, err = fmt.Fprintf(stdout, "stop request for %s put on bus %s (event %s)\n", id, c.Outputs[outEventBus], evID)
			return err
		}
		res, err := c.stopper().StopDeployment(ctx, id, shorten(why, 255), ending(*forget))
		if err != nil {
			return err
		}
		if af.json() {
			return writeJSON(stdout, res)
		}
		return writeStopped(stdout, id, res)
	}
}

func writeStopped(w io.Writer, id string, res deployment.Stopped) error {
	fmt.Fprintf(w, "stopped %s\n", id)
	tasks, schedules := "none", "none"
	if len(res.Tasks) > 0 {
		tasks = strings.Join(res.Tasks, ", ")
	}
	if len(res.Schedules) > 0 {
		schedules = strings.Join(res.Schedules, ", ")
	}
	fmt.Fprintf(w, "  tasks      %s\n", tasks)
	if res.Sleeping {
		fmt.Fprintf(w, "  endpoint   kept: a request wakes it (stop --forget removes it)\n")
	}
	if len(res.Services) > 0 {
		fmt.Fprintf(w, "  service    %s deleted (its tasks drain, then stop)\n", strings.Join(res.Services, ", "))
	}
	_, err := fmt.Fprintf(w, "  schedule   %s deleted\n", schedules)
	return err
}

// ending is a stop's Ending: forget, or keep the endpoint of a deployment that wakes on request.
func ending(forget bool) deployment.Ending {
	if forget {
		return deployment.Forget
	}
	return deployment.Sleep
}
