// Command teardown stops deployments outside the state machine: every dev deployment on the scheduled teardown,
// one deployment on a Stop Request.
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
		fmt.Fprintln(os.Stderr, "teardown:", err)
		os.Exit(1)
	}
	h := &steps.Teardown{Stopper: &steps.Stopper{ECS: ecs.NewFromConfig(awsCfg), Scheduler: scheduler.NewFromConfig(awsCfg), Cluster: cfg.Cluster, Group: cfg.ScheduleGroup, Log: log}}
	lambda.Start(h.Handle)
}
