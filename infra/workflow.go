package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// placeholderPattern matches the definition substitutions Step Functions
// resolves at deploy time: ${Name}.
var placeholderPattern = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`)

// LoadDefinition reads the ASL file and checks it against the substitutions
// the stack provides. The same file runs on the local engine, so a
// placeholder without a Lambda (or a Lambda the file never calls) is a
// mismatch between the two that synth must refuse rather than deploy.
func LoadDefinition(path string, substitutions []string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("state machine definition: %w (set ollama-ecs:definitionFile)", err)
	}
	body := string(raw)
	var probe map[string]interface{}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return "", fmt.Errorf("state machine definition %s is not JSON: %v", path, err)
	}
	if err := CheckPlaceholders(body, substitutions); err != nil {
		return "", fmt.Errorf("state machine definition %s: %w", path, err)
	}
	return body, nil
}

// CheckPlaceholders reports placeholders without a substitution and
// substitutions without a placeholder, both sorted.
func CheckPlaceholders(body string, substitutions []string) error {
	used := map[string]bool{}
	for _, m := range placeholderPattern.FindAllStringSubmatch(body, -1) {
		used[m[1]] = true
	}
	provided := map[string]bool{}
	for _, s := range substitutions {
		provided[s] = true
	}
	var unknown, unused []string
	for name := range used {
		if !provided[name] {
			unknown = append(unknown, "${"+name+"}")
		}
	}
	for name := range provided {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unknown)
	sort.Strings(unused)
	var problems []string
	if len(unknown) > 0 {
		problems = append(problems, "placeholders with no substitution: "+strings.Join(unknown, ", "))
	}
	if len(unused) > 0 {
		problems = append(problems, "substitutions the file never uses: "+strings.Join(unused, ", "))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// SortedKeys returns the placeholder names of a substitution map.
func SortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// NewDeployStateMachine creates the Standard state machine from the ASL text
// (already checked by LoadDefinition), with full logging and X-Ray, allowed to
// invoke exactly the workflow's Lambdas.
func NewDeployStateMachine(scope constructs.Construct, id string, definition string, lambdas map[string]awslambda.Function) awsstepfunctions.StateMachine {
	c := constructs.NewConstruct(scope, jsii.String(id))
	if err := CheckPlaceholders(definition, SortedKeys(lambdas)); err != nil {
		panic(err) // LoadDefinition has already reported this with the file name
	}
	subs := map[string]*string{}
	for name, fn := range lambdas {
		subs[name] = fn.FunctionArn()
	}
	// The /aws/vendedlogs/ prefix keeps the log group out of the account's
	// CloudWatch Logs resource-policy size limit.
	logGroup := awslogs.NewLogGroup(c, jsii.String("Logs"), &awslogs.LogGroupProps{
		LogGroupName:  jsii.String("/aws/vendedlogs/states/" + *awscdk.Stack_Of(scope).StackName() + "-deploy"),
		Retention:     awslogs.RetentionDays_THREE_MONTHS,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	sm := awsstepfunctions.NewStateMachine(c, jsii.String("StateMachine"), &awsstepfunctions.StateMachineProps{
		DefinitionBody:          awsstepfunctions.DefinitionBody_FromString(jsii.String(definition)),
		DefinitionSubstitutions: &subs,
		StateMachineType:        awsstepfunctions.StateMachineType_STANDARD,
		TracingEnabled:          jsii.Bool(true),
		Logs: &awsstepfunctions.LogOptions{
			Destination:          logGroup,
			Level:                awsstepfunctions.LogLevel_ALL,
			IncludeExecutionData: jsii.Bool(true),
		},
	})
	for _, name := range SortedKeys(lambdas) {
		lambdas[name].GrantInvoke(sm)
	}
	cdknag.NagSuppressions_AddResourceSuppressions(sm, &[]*cdknag.NagPackSuppression{
		nagWildcard{`/^Resource::<Functions[A-Za-z]+Function[0-9A-F]+\.Arn>:\*$/`,
			"lambda:InvokeFunction on the versions and aliases (:*) of the eight workflow Lambdas only."}.suppression(),
		nagWildcard{"Resource::*",
			"CloudWatch Logs delivery and X-Ray actions of a state machine support no resource-level permissions."}.suppression(),
	}, jsii.Bool(true))
	return sm
}
