// Command runtask is the "Run ECS task" step.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, awsCfg, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtask:", err)
		os.Exit(1)
	}
	h := &steps.RunTask{
		ECS: ecs.NewFromConfig(awsCfg), Cluster: cfg.Cluster,
		CPUTaskDefinition: cfg.CPUTaskDefinition, GPUTaskDefinition: cfg.GPUTaskDefinition,
		ModelTaskDefinitions: cfg.ModelTaskDefinitions,
		Subnets:              cfg.Subnets, SecurityGroups: cfg.SecurityGroups, Providers: cfg.Providers, Log: log,
	}
	lambda.Start(h.Handle)
}
