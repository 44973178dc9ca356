// Command capacity is the "Check EC2 capacity" step: it checks one candidate of the fallback ladder.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, awsCfg, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "capacity:", err)
		os.Exit(1)
	}
	h := &steps.Capacity{ECS: ecs.NewFromConfig(awsCfg), Groups: autoscaling.NewFromConfig(awsCfg), Cluster: cfg.Cluster, Providers: cfg.Providers, Log: log}
	lambda.Start(h.Handle)
}
