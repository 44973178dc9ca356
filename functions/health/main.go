// Command health is the "Poll health" step; it runs in the VPC to reach the task's private address.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, awsCfg, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		os.Exit(1)
	}
	ecsClient := ecs.NewFromConfig(awsCfg)
	h := &steps.Health{
		ECS: ecsClient, Cluster: cfg.Cluster, Endpoint: steps.PrivateEndpoint(cfg.OllamaPort),
		HTTP: &http.Client{Timeout: 5 * time.Second}, Timeout: cfg.HealthTimeout,
		Watch: cfg.HealthWatch, PollInterval: time.Second, Log: log,
		ProvisioningTimeout: cfg.ProvisioningTimeout,
		Launches:            &steps.Launches{ECS: ecsClient, Groups: autoscaling.NewFromConfig(awsCfg)},
	}
	lambda.Start(h.Handle)
}
