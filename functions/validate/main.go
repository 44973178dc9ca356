// Command validate is the "Validate request" step: it normalises the input and sizes the model.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

func main() {
	cfg, awsCfg, log, err := steps.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "validate:", err)
		os.Exit(1)
	}
	h := &steps.Validate{Catalog: catalog.Default(), S3: s3.NewFromConfig(awsCfg), Bucket: cfg.ModelBucket, Prefix: cfg.ModelPrefix, Log: log}
	lambda.Start(h.Handle)
}
