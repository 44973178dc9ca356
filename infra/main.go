// Command infra is the CDK app of ollama-ecs. cdk.json runs it as
// `go -C infra run .`; it synthesises the OllamaEcs stack into cdk.out/ at
// the repository root.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

func main() {
	err := run()
	jsii.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ollama-ecs infra:", err)
		os.Exit(1)
	}
}

func run() error {
	// `go -C infra` starts us in infra/, but the CLI reads cdk.out (a path
	// relative to cdk.json) and every setting path is relative to the
	// repository root: move there before the App exists.
	root, err := findRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	app := awscdk.NewApp(nil)
	settings, err := LoadSettings(app.Node(), root)
	if err != nil {
		return err
	}
	if err := CheckLambdaDist(settings.LambdaDist); err != nil {
		return err
	}
	if err := settings.LoadSpotMaxPrices(); err != nil {
		return err
	}
	if err := settings.LoadContainerScripts(); err != nil {
		return err
	}
	definition, err := LoadDefinition(settings.DefinitionFile, WorkflowPlaceholders)
	if err != nil {
		return err
	}
	env, err := environment(settings)
	if err != nil {
		return err
	}
	NewOllamaEcsStack(app, StackID, &OllamaEcsStackProps{
		StackProps: awscdk.StackProps{Env: env},
		Settings:   settings,
		Definition: definition,
	})
	AddChecks(app)
	app.Synth(nil)
	return nil
}

// findRoot walks up from the working directory to the folder with cdk.json.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "cdk.json")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no cdk.json in this folder or above: run through the CDK CLI (scripts/cdk.sh synth)")
		}
		dir = parent
	}
}

// environment uses the CLI's default account and region when present. Only
// an existing VPC needs them (its lookup is per account and region); without
// one the stack stays environment-agnostic and synth needs no credentials.
func environment(s Settings) (*awscdk.Environment, error) {
	account, region := os.Getenv("CDK_DEFAULT_ACCOUNT"), os.Getenv("CDK_DEFAULT_REGION")
	if s.VpcID != "" && (account == "" || region == "") {
		return nil, fmt.Errorf("ollama-ecs:vpcId needs an account and region (set AWS credentials or CDK_DEFAULT_ACCOUNT/CDK_DEFAULT_REGION)")
	}
	if account == "" && region == "" {
		return nil, nil
	}
	env := &awscdk.Environment{}
	if account != "" {
		env.Account = jsii.String(account)
	}
	if region != "" {
		env.Region = jsii.String(region)
	}
	return env, nil
}
