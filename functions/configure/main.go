// Command configure is the "Choose configuration" step: it ranks the placements that fit.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, _, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "configure:", err)
		os.Exit(1)
	}
	h := &steps.Configure{Catalog: catalog.Default(), GPUInstanceTypes: cfg.GPUInstanceTypes, DevTTL: cfg.DevTTL, DefaultPolicy: cfg.Policy,
		GPUVolumeGiB: cfg.GPUVolumeGiB, Log: log}
	lambda.Start(h.Handle)
}
