package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local/cachedir"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// deployFlags are the flags of a deploy request, the same for `deploy` on AWS and `local deploy`.
type deployFlags struct {
	req             events.DeployRequest
	name, requester string
}

func addDeployFlags(fs *pflag.FlagSet) *deployFlags {
	d := &deployFlags{}
	fs.StringVar(&d.req.Env, "env", planner.EnvDev, "dev or prod")
	fs.StringVar(&d.req.Prefer, "prefer", planner.PreferAuto, "auto, cpu or gpu")
	fs.StringVar(&d.req.InstanceType, "instance-type", "", "the one instance type wanted (ml. prefix accepted)")
	fs.StringVar(&d.req.LaunchType, "launch-type", "", "FARGATE or EC2 only")
	fs.IntVar(&d.req.ContextLength, "context", 0, "context length to size for (default 4096, capped at the model's)")
	fs.StringVar(&d.req.Policy, "policy", "", "cost or seed (default: the stack's)")
	fs.StringVar(&d.req.TTL, "ttl", "", "time to live before the auto-stop, e.g. 90m (default: dev 2h, prod none; 0 for none)")
	fs.StringVar(&d.req.Source, "source", "", "an uploaded GGUF under the model prefix (s3://BUCKET/models/NAME.gguf) to deploy under MODEL")
	fs.StringVar(&d.req.DeploymentID, "id", "", "deployment id (default: from model, env and --name)")
	fs.StringVar(&d.name, "name", "", "distinguishes a second deployment of the same model and env")
	fs.StringVar(&d.requester, "requester", envOr("USER", ""), "who asks, for the task's tags")
	fs.BoolVar(&d.req.KeepRunning, "keep-running", false, "start it again, on the next candidate, if its task dies on its own (Spot interruption, crash)")
	fs.Var(&optionalBool{&d.req.APIKey}, "api-key", "put it behind an API key (--api-key=false for none; default: the stack's setting)")
	fs.Lookup("api-key").NoOptDefVal = "true"
	fs.Var(&optionalBool{&d.req.WakeOnRequest}, "wake", "keep its endpoint when stopped and start it again on a request (default: dev yes, prod no; --wake=false for none)")
	fs.Lookup("wake").NoOptDefVal = "true"
	addSpeedFlags(fs, &d.req)
	fs.IntVar(&d.req.MinTasks, "min", 0, "prod: the fewest tasks its service keeps (default 1)")
	fs.IntVar(&d.req.MaxTasks, "max", 0, "prod: the most tasks its service scales out to under load (default 3)")
	return d
}

// optionalBool is a flag that may be left unset (nil), set true or set false.
type optionalBool struct{ v **bool }

func (o *optionalBool) String() string {
	if o.v == nil || *o.v == nil {
		return ""
	}
	return strconv.FormatBool(**o.v)
}

func (o *optionalBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*o.v = &b
	return nil
}

func (o *optionalBool) Type() string { return "bool" }

// target is what a request is checked against: the cluster's GPU types (nil: every type in the catalog) and the
// registry models the catalog does not list are resolved in.
type target struct {
	GPUTypes []string
	// SpotTypes are the GPU types with Spot capacity (nil: unknown, every type).
	SpotTypes []string
	Registry  string
}

// modelCacheDir keeps the models sized from a registry, by digest: models/ in the cache folder ($OLLAMA_ECS_CACHE,
// else ~/.cache/ollama-ecs), or nowhere.
func modelCacheDir() string {
	dir, err := cachedir.Dir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "models")
}

// validated is the deploy request for MODEL, checked as the state machine checks an event.
func (d *deployFlags) validated(model string) (events.DeployRequest, error) {
	req := d.req
	req.Model, req.Requester = model, cleanRequester(d.requester)
	if req.DeploymentID == "" {
		req.DeploymentID = deploymentID(req.Model, req.Env, d.name)
	}
	if err := req.Validate(); err != nil {
		return req, usageError{strings.Replace(err.Error(), "detail.", "", 1)}
	}
	return req, nil
}

// registryHost is the registry the command line resolves models in: OLLAMA_ECS_REGISTRY, else the stack's (when
// known), else registry.ollama.ai.
func registryHost(stack string) string {
	return cmp.Or(os.Getenv("OLLAMA_ECS_REGISTRY"), stack, registry.DefaultHost)
}

// request is the deploy request for MODEL, checked as the state machine checks it, and planned when the model is
// a catalog or registry one (an uploaded GGUF is sized from its header by the state machine): a request the
// planner rejects fails here, with its reason, before anything starts.
func (d *deployFlags) request(ctx context.Context, model string, t target) (events.DeployRequest, *planner.Plan, error) {
	req, err := d.validated(model)
	if err != nil {
		return req, nil, err
	}
	if req.Source != "" {
		return req, nil, nil
	}
	plan, err := planFor(ctx, req, t)
	return req, &plan, err
}

func defineDeploy(fs *pflag.FlagSet) runner {
	d := addDeployFlags(fs)
	follow := fs.Bool("follow", false, "show the execution live until the deployment is ready or failed")
	viaEvents := fs.Bool("via-events", false, "put a Deploy Request on the event bus instead of starting the state machine")
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		if *viaEvents && *follow {
			return usageError{"--follow needs the execution, which EventBridge names itself: drop --via-events, or watch with 'ollama-ecs list'"}
		}
		// Check the request before connecting; it is planned once the stack says where models resolve.
		req, err := d.validated(pos[0])
		if err != nil {
			return err
		}
		need := []string{outStateMachine, outGPUTypes}
		if *viaEvents {
			need = []string{outEventBus, outGPUTypes}
		}
		c, err := connect(ctx, af, need...)
		if err != nil {
			return err
		}
		// Plan again on the GPU types this cluster actually runs, as the configure step will: a type the stack has no
		// capacity for fails here, before anything starts.
		_, plan, err := d.request(ctx, pos[0], c.target())
		if err != nil {
			return err
		}
		if *viaEvents {
			return deployViaEvents(ctx, c, req, plan, af.json(), stdout)
		}
		dep := deployer{SFN: c.SFN, StateMachine: c.Outputs[outStateMachine], Now: time.Now}
		res, err := dep.start(ctx, req)
		if err != nil {
			return err
		}
		if !af.json() {
			writeStarted(stdout, req, plan, res)
		}
		if !*follow {
			if af.json() {
				if err := writeJSON(stdout, res); err != nil {
					return err
				}
			} else if !res.AlreadyStarted {
				fmt.Fprintf(stdout, "follow it with: ollama-ecs history %s\n", req.DeploymentID)
			}
			if res.AlreadyStarted && res.ended() {
				// Step Functions keeps execution names for 90 days: a new attempt needs a new name.
				return fmt.Errorf("deployment %s ended %s: see `ollama-ecs history %s`; deploy again with another --name",
					req.DeploymentID, res.Status, req.DeploymentID)
			}
			return nil
		}
		f := &follower{Source: stepFunctions{c.SFN}, Out: stdout, Spinner: isTerminal(stdout), Interval: pollInterval, Quiet: af.json()}
		return followToEnd(ctx, f, res, af.json(), stdout)
	}
}

// followToEnd follows an execution and prints its outcome; a failed deployment is an error (non-zero exit).
func followToEnd(ctx context.Context, f *follower, res startResult, asJSON bool, stdout io.Writer) error {
	x, err := f.follow(ctx, res.ExecutionArn)
	if err != nil {
		return err
	}
	rec, ferr := finish(x)
	res.Status = x.Status
	res.DeploymentID = cmp.Or(res.DeploymentID, rec.DeploymentID)
	if res.StartDate.IsZero() {
		res.StartDate = x.StartDate
	}
	if asJSON {
		out := struct {
			startResult
			Error      string             `json:"error,omitempty"`
			Cause      string             `json:"cause,omitempty"`
			Deployment *deployment.Record `json:"deployment,omitempty"`
		}{startResult: res, Error: x.Error, Cause: x.Cause}
		if ferr == nil {
			out.Deployment = &rec
		}
		if err := writeJSON(stdout, out); err != nil {
			return err
		}
		return ferr
	}
	if ferr != nil {
		return ferr
	}
	writeRecord(stdout, x, rec, time.Now())
	return nil
}

// splitList reads a comma-separated setting as the functions do: trimmed, empty items dropped.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// planFor runs the planner on the request, as the state machine's validate and configure steps will: the model
// from the catalog or the target's registry, GPU placements on the target's types.
func planFor(ctx context.Context, req events.DeployRequest, t target) (planner.Plan, error) {
	cat := catalog.Default()
	model, _, err := registry.Lookup(ctx, cat, registry.NewClient(t.Registry, modelCacheDir()), req.Model)
	if err != nil {
		return planner.Plan{}, err
	}
	return planner.New(cat, planner.Request{
		Model: model, Env: req.Env, Prefer: req.Prefer, ContextLength: req.ContextLength,
		InstanceType: req.InstanceType, Policy: req.Policy, LaunchType: req.LaunchType, GPUInstanceTypes: t.GPUTypes,
		GPUSpotInstanceTypes: t.SpotTypes,
		MinTokensPerSecond:   req.MinTokensPerSecond, MaxTTFTSeconds: req.MaxTimeToFirstToken, Optimize: req.Optimize,
	})
}

// startResult says which execution carries the deployment and whether this command started it.
type startResult struct {
	DeploymentID string    `json:"deploymentId"`
	ExecutionArn string    `json:"executionArn"`
	StartDate    time.Time `json:"startDate"`
	Status       string    `json:"status"`
	// AlreadyStarted is true when an execution of this deployment existed: nothing new was started.
	AlreadyStarted bool `json:"alreadyStarted"`
}

// deployer starts the state machine with the deployment id as the execution name, so the same deployment is
// never started twice: Step Functions keeps execution names unique per state machine.
type deployer struct {
	SFN          Executions
	StateMachine string
	Now          func() time.Time
}

// ended reports an execution that finished without a running deployment (failed, aborted, timed out).
func (r startResult) ended() bool {
	return r.Status != "" && r.Status != "RUNNING" && r.Status != "SUCCEEDED"
}

func (d deployer) start(ctx context.Context, req events.DeployRequest) (startResult, error) {
	arn := executionARN(d.StateMachine, req.DeploymentID)
	res := startResult{DeploymentID: req.DeploymentID, ExecutionArn: arn}
	// An execution of that name already there is this deployment: Step Functions would answer a running one
	// with the same input as if it were new, so ask first.
	if x, err := describeExecution(ctx, d.SFN, arn); err == nil {
		res.StartDate, res.Status, res.AlreadyStarted = x.StartDate, x.Status, true
		return res, nil
	} else if !errors.As(err, new(errUnknownExecution)) {
		return res, err
	}
	input, _ := json.Marshal(req)
	out, err := d.SFN.StartExecution(ctx, &sfn.StartExecutionInput{
		StateMachineArn: aws.String(d.StateMachine), Name: aws.String(req.DeploymentID), Input: aws.String(string(input)),
	})
	switch {
	case isCode(err, "ExecutionAlreadyExists"):
		x, derr := describeExecution(ctx, d.SFN, arn)
		if derr != nil {
			return res, derr
		}
		res.StartDate, res.Status, res.AlreadyStarted = x.StartDate, x.Status, true
		return res, nil
	case isCode(err, "StateMachineDoesNotExist"):
		return res, fmt.Errorf("state machine %s not found: check --stack or --state-machine", d.StateMachine)
	case err != nil:
		return res, awsErr("states:StartExecution", err)
	}
	res.ExecutionArn, res.StartDate, res.Status = aws.ToString(out.ExecutionArn), aws.ToTime(out.StartDate), "RUNNING"
	return res, nil
}

// writeStarted is the first lines of a deploy: what was planned and which execution carries it.
func writeStarted(w io.Writer, req events.DeployRequest, plan *planner.Plan, res startResult) {
	if res.AlreadyStarted {
		what := "already deployed/deploying as"
		if res.ended() {
			what = "already tried and ended as"
		}
		fmt.Fprintf(w, "%s %s (execution %s, started %s): nothing new started\n",
			what, req.DeploymentID, res.Status, res.StartDate.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "execution: %s\n", res.ExecutionArn)
		return
	}
	model := req.Model
	if plan != nil {
		model = plan.Model // the catalog's name for what the request called it
	}
	fmt.Fprintf(w, "deploying %s as %s  env=%s\n", model, req.DeploymentID, cmp.Or(req.Env, planner.EnvDev))
	if plan != nil && len(plan.Candidates) > 0 {
		c := plan.Candidates[0]
		fmt.Fprintf(w, "planned: %s (%s), $%.4f/hour; %d fallback(s)\n", c.Placement, c.InstanceType, c.HourlyCostUSD, len(plan.Candidates)-1)
	}
	fmt.Fprintf(w, "execution: %s\n", res.ExecutionArn)
}

// deployViaEvents puts the Deploy Request on the bus; the bus's rule starts the state machine.
func deployViaEvents(ctx context.Context, c *cloud, req events.DeployRequest, plan *planner.Plan, asJSON bool, stdout io.Writer) error {
	id, err := putEvent(ctx, c.Events, c.Outputs[outEventBus], events.DetailTypeDeploy, req)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, map[string]string{"deploymentId": req.DeploymentID, "eventId": id, "eventBus": c.Outputs[outEventBus]})
	}
	fmt.Fprintf(stdout, "deploy request for %s put on bus %s (event %s)\n", req.Model, c.Outputs[outEventBus], id)
	fmt.Fprintf(stdout, "deployment id: %s; watch it with: ollama-ecs list\n", req.DeploymentID)
	return nil
}

// putEvent puts one event from the ollama-ecs source and returns its id.
func putEvent(ctx context.Context, api EventPutter, bus, detailType string, detail any) (string, error) {
	raw, err := json.Marshal(detail)
	if err != nil {
		return "", err
	}
	out, err := api.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		EventBusName: aws.String(bus), Source: aws.String(events.SourceOllamaECS),
		DetailType: aws.String(detailType), Detail: aws.String(string(raw)),
	}}})
	if err != nil {
		return "", awsErr("events:PutEvents", err)
	}
	if out.FailedEntryCount > 0 || len(out.Entries) == 0 {
		msg := "no entry accepted"
		if len(out.Entries) > 0 {
			msg = aws.ToString(out.Entries[0].ErrorCode) + ": " + aws.ToString(out.Entries[0].ErrorMessage)
		}
		return "", fmt.Errorf("events:PutEvents on bus %s: %s", bus, msg)
	}
	return aws.ToString(out.Entries[0].EventId), nil
}

var nonIDChars = regexp.MustCompile(`[^a-z0-9]+`)

// deploymentID is the id a deploy gets unless --id is given: readable (model, env, name) and the same every time
// for the same arguments, so running the command twice does not deploy twice.
func deploymentID(model, env, name string) string {
	if env == "" {
		env = planner.EnvDev
	}
	parts := []string{model, env}
	if name != "" {
		parts = append(parts, name)
	}
	id := strings.Trim(nonIDChars.ReplaceAllString(strings.ToLower(strings.Join(parts, "-")), "-"), "-")
	if len(id) > 36 || len(id) < 3 {
		sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
		id = strings.Trim(id[:min(len(id), 27)], "-") + "-" + hex.EncodeToString(sum[:])[:8]
	}
	return id
}

// cleanRequester keeps the requester within the contract's characters (a login name usually is).
func cleanRequester(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 128 && (r == ' ' || r == '.' || r == '@' || r == ':' || r == '/' || r == '+' || r == '=' || r == ',' || r == '-' || r == '_' ||
			r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}
