// Command autostop is the "Schedule auto-stop" step.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"

	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, awsCfg, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "autostop:", err)
		os.Exit(1)
	}
	h := &steps.AutoStop{Scheduler: scheduler.NewFromConfig(awsCfg), ECS: ecs.NewFromConfig(awsCfg), Cluster: cfg.Cluster, Group: cfg.ScheduleGroup, RoleArn: cfg.SchedulerRoleArn, Log: log}
	lambda.Start(h.Handle)
}
