package workflow

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/local/engine"
)

// TestDefinitionPassesASLValidator runs the npm asl-validator (through the local engine) on the definition with
// its placeholders filled as CDK fills them.
func TestDefinitionPassesASLValidator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eng, err := engine.Start(ctx, engine.Options{})
	if errors.Is(err, engine.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip("local engine not installed: run `make engine`")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	def, err := Substitute(map[string]string{
		"ValidateFunctionArn":  "arn:aws:lambda:us-east-1:123456789012:function:validate",
		"ImageFunctionArn":     "arn:aws:lambda:us-east-1:123456789012:function:image",
		"ConfigureFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:configure",
		"CapacityFunctionArn":  "arn:aws:lambda:us-east-1:123456789012:function:capacity",
		"RunTaskFunctionArn":   "arn:aws:lambda:us-east-1:123456789012:function:runtask",
		"HealthFunctionArn":    "arn:aws:lambda:us-east-1:123456789012:function:health",
		"AutoStopFunctionArn":  "arn:aws:lambda:us-east-1:123456789012:function:autostop",
		"CleanupFunctionArn":   "arn:aws:lambda:us-east-1:123456789012:function:cleanup",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Validate(ctx, def); err != nil {
		t.Fatalf("asl-validator: %v", err)
	}
}
