// Package workflow holds the deploy state machine's definition: the ASL file CDK deploys and the local engine
// runs, unchanged but for its ${...} placeholders.
package workflow

import (
	_ "embed"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Definition is deploy.asl.json as written: Task resources are ${<Step>FunctionArn} placeholders.
//
//go:embed deploy.asl.json
var Definition []byte

// Functions maps each placeholder's step name to the folder under functions/ that implements it.
var Functions = map[string]string{
	"Validate":  "validate",
	"Configure": "configure",
	"Image":     "image",
	"Capacity":  "capacity",
	"RunTask":   "runtask",
	"Health":    "health",
	"AutoStop":  "autostop",
	"Cleanup":   "cleanup",
}

var placeholder = regexp.MustCompile(`\$\{([A-Za-z]+)FunctionArn\}`)

// Placeholders lists the ${...} names in the definition, sorted.
func Placeholders() []string {
	var names []string
	for _, m := range placeholder.FindAllStringSubmatch(string(Definition), -1) {
		if name := m[1] + "FunctionArn"; !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Substitute replaces every placeholder from values (keyed "ValidateFunctionArn", ...); a missing or extra value
// is an error, so a new step can never deploy half-wired.
func Substitute(values map[string]string) ([]byte, error) {
	want := Placeholders()
	for k := range values {
		if !slices.Contains(want, k) {
			return nil, fmt.Errorf("no placeholder ${%s} in the definition", k)
		}
	}
	var missing []string
	out := placeholder.ReplaceAllStringFunc(string(Definition), func(m string) string {
		name := strings.TrimSuffix(strings.TrimPrefix(m, "${"), "}")
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("no value for placeholders %v", missing)
	}
	return []byte(out), nil
}

// LocalDefinition points every Task at a function of the same name on a Lambda endpoint in the given region and
// account, as the local engine needs.
func LocalDefinition(region, account string) ([]byte, error) {
	values := map[string]string{}
	for step, fn := range Functions {
		values[step+"FunctionArn"] = fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", region, account, fn)
	}
	return Substitute(values)
}
