// Command capacity is the "Check EC2 capacity" step: it checks one candidate of the fallback ladder.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"

	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, awsCfg, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "capacity:", err)
		os.Exit(1)
	}
	ecsClient := ecs.NewFromConfig(awsCfg)
	h := &steps.Capacity{
		ECS: ecsClient, Cluster: cfg.Cluster, Providers: cfg.Providers, Log: log,
		Launches: &steps.Launches{ECS: ecsClient, Groups: autoscaling.NewFromConfig(awsCfg),
			Quotas: servicequotas.NewFromConfig(awsCfg), Instances: ec2.NewFromConfig(awsCfg)},
	}
	lambda.Start(h.Handle)
}
