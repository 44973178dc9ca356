// Command teardown stops deployments outside the state machine: every dev deployment on the scheduled teardown,
// one deployment on a Stop Request. It also hears the cluster's stopped tasks, to notice (and, when asked,
// restart) a deployment whose task died on its own.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, awsCfg, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
		os.Exit(1)
	}
	ecsClient := ecs.NewFromConfig(awsCfg)
	stopper := &steps.Stopper{ECS: ecsClient, Scheduler: scheduler.NewFromConfig(awsCfg), Cluster: cfg.Cluster, Group: cfg.ScheduleGroup, Log: log}
	h := &steps.Teardown{Stopper: stopper,
		Interrupted: &steps.Interrupted{Stopper: stopper, Tags: ecsClient, Executions: sfn.NewFromConfig(awsCfg), StateMachineArn: cfg.StateMachineArn}}
	lambda.Start(h.Handle)
}
