// Package events holds the contracts of everything that starts work in ollama-ecs: deploy and stop requests on the
// project's event bus, S3 "Object Created" events for model uploads, and the scheduled dev teardown. Each input
// parses into a typed value or is refused with a message that names the field and the rule it broke. Each carries
// or derives a stable deployment id, so the same event delivered twice maps to the same deployment.
package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sources and detail types on the bus. They are what the EventBridge rules match.
const (
	SourceOllamaECS = "ollama-ecs"
	SourceS3        = "aws.s3"
	SourceEvents    = "aws.events"
	SourceECS       = "aws.ecs"
	// SourceScheduler is the stack's teardown schedule (EventBridge Scheduler, in the operator's time zone),
	// whose input has the shape of a scheduled event.
	SourceScheduler = "aws.scheduler"

	DetailTypeDeploy        = "Deploy Request"
	DetailTypeStop          = "Stop Request"
	DetailTypeObjectCreated = "Object Created"
	DetailTypeScheduled     = "Scheduled Event"
	DetailTypeTaskState     = "ECS Task State Change"

	// MaxEventBytes is EventBridge's limit on one event; anything larger did not come from EventBridge.
	MaxEventBytes = 256 * 1024
	// MaxTTL bounds an auto-stop request: longer is a typo, not a plan.
	MaxTTL = 30 * 24 * time.Hour
	// MaxContextLength bounds the context a request may ask for.
	MaxContextLength = 1 << 20
	// MaxRestarts bounds how often a kept-running deployment is started again after its task died.
	MaxRestarts = 5
)

// Envelope is the EventBridge event around every detail. Detail stays raw until the detail type is known.
type Envelope struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       time.Time       `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// DeployRequest is the detail of a "Deploy Request" on the project's bus, and also the input the CLI gives the state
// machine directly.
type DeployRequest struct {
	// Model is an Ollama model name from the catalog, e.g. "llama3.1:8b" (required).
	Model string `json:"model"`
	// Env is dev (default) or prod.
	Env string `json:"env,omitempty"`
	// Prefer is auto (default), cpu or gpu.
	Prefer string `json:"prefer,omitempty"`
	// InstanceType pins the placement, e.g. "g4dn.xlarge" or the seed's "ml.g4dn.xlarge".
	InstanceType string `json:"instanceType,omitempty"`
	// LaunchType restricts placements to FARGATE or EC2.
	LaunchType string `json:"launchType,omitempty"`
	// Policy is cost (default) or seed.
	Policy string `json:"policy,omitempty"`
	// ContextLength is the context to size for (default 4096).
	ContextLength int `json:"contextLength,omitempty"`
	// TTL is how long the deployment runs before it is stopped, as a Go duration ("90m"); dev defaults to the
	// stack's dev TTL, prod to none. "0" asks for no auto-stop.
	TTL string `json:"ttl,omitempty"`
	// Requester names who asked, for tags and the console.
	Requester string `json:"requester,omitempty"`
	// DeploymentID makes the request idempotent across retries; derived from the event id when empty.
	DeploymentID string `json:"deploymentId,omitempty"`
	// Source, when set, deploys a GGUF already uploaded under the model prefix ("s3://bucket/models/x.gguf")
	// under the name in Model, sized from its header, instead of a catalog model pulled from the registry.
	Source string `json:"source,omitempty"`
	// KeepRunning starts the deployment again when its task dies on its own (Spot interruption, out of memory, a
	// crash), on the next candidate: the placement it died on is avoided.
	KeepRunning bool `json:"keepRunning,omitempty"`
	// Avoid names placements the planner must not choose ("Fargate Spot", "EC2 g4dn.xlarge"); a restart after
	// an interruption adds the one that failed.
	Avoid []string `json:"avoid,omitempty"`
	// Restart counts the restarts after interruptions (set by ollama-ecs, at most MaxRestarts); each restart is an
	// execution of its own with its own RunTask client tokens.
	Restart int `json:"restart,omitempty"`
	// APIKey puts the deployment behind an API key (kept in SSM Parameter Store; see "ollama-ecs endpoint"):
	// requests without it get 401 from the load balancer. Unset means the stack's default.
	APIKey *bool `json:"apiKey,omitempty"`
	// MinTasks and MaxTasks bound a prod deployment's ECS service as it scales with load (defaults 1 and 3).
	MinTasks int `json:"minTasks,omitempty"`
	MaxTasks int `json:"maxTasks,omitempty"`
	// WakeOnRequest keeps the deployment's endpoint when it is stopped (not forgotten): a request to it starts it
	// again. Unset means on for dev, off for prod.
	WakeOnRequest *bool `json:"wakeOnRequest,omitempty"`
	// Wake counts the wakes (set by ollama-ecs when a request starts a sleeping deployment again).
	Wake int `json:"wake,omitempty"`
	// MinTokensPerSecond and MaxTimeToFirstToken (seconds, for a 512-token prompt) are the required
	// performance: placements estimated slower are refused with the reason. Optimize ranks the placements:
	// cost (default), speed or cost-per-token.
	MinTokensPerSecond  float64 `json:"minTokensPerSecond,omitempty"`
	MaxTimeToFirstToken float64 `json:"maxTimeToFirstToken,omitempty"`
	Optimize            string  `json:"optimize,omitempty"`
}

// Requirements are the required performance and the ranking of a deployment: a deploy request carries its own
// (DeployRequest.MinTokensPerSecond, MaxTimeToFirstToken, Optimize); an S3 upload, which carries no request, gets
// the stack's (UPLOAD_DEFAULTS).
type Requirements struct {
	MinTokensPerSecond  float64 `json:"minTokensPerSecond,omitempty"`
	MaxTimeToFirstToken float64 `json:"maxTimeToFirstToken,omitempty"`
	Optimize            string  `json:"optimize,omitempty"`
}

// check refuses a negative or absurd speed requirement and an unknown ranking; field prefixes the names it
// reports.
func (r Requirements) check(field string) error {
	switch {
	case !(r.MinTokensPerSecond >= 0 && r.MinTokensPerSecond <= 10000):
		return invalid(field+"minTokensPerSecond", "%g is outside 0..10000", r.MinTokensPerSecond)
	case !(r.MaxTimeToFirstToken >= 0 && r.MaxTimeToFirstToken <= 3600):
		return invalid(field+"maxTimeToFirstToken", "%g seconds is outside 0..3600", r.MaxTimeToFirstToken)
	case r.Optimize != "" && r.Optimize != "cost" && r.Optimize != "speed" && r.Optimize != "cost-per-token":
		return invalid(field+"optimize", "%q is not cost, speed or cost-per-token", r.Optimize)
	}
	return nil
}

// ParseRequirements reads requirements written as "minTokensPerSecond=10,maxTimeToFirstToken=5,optimize=speed"
// (any subset; "" is none), the form of the stack's UPLOAD_DEFAULTS setting.
func ParseRequirements(s string) (Requirements, error) {
	var r Requirements
	for kv := range strings.SplitSeq(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "minTokensPerSecond":
			r.MinTokensPerSecond, err = strconv.ParseFloat(v, 64)
		case "maxTimeToFirstToken":
			r.MaxTimeToFirstToken, err = strconv.ParseFloat(v, 64)
		case "optimize":
			r.Optimize = v
		default:
			return r, invalid(k, "is not minTokensPerSecond, maxTimeToFirstToken or optimize")
		}
		if err != nil {
			return r, invalid(k, "%q is not a number", v)
		}
	}
	return r, r.check("")
}

// Scaling bounds of a prod deployment's service.
const (
	DefaultMinTasks = 1
	DefaultMaxTasks = 3
	MaxTasksLimit   = 20
)

// TaskStateChange is the detail of an ECS "ECS Task State Change" event, as far as ollama-ecs reads it. Fields
// ECS adds are accepted, since AWS, not a person, writes this shape.
type TaskStateChange struct {
	ClusterArn    string `json:"clusterArn"`
	TaskArn       string `json:"taskArn"`
	LastStatus    string `json:"lastStatus"`
	DesiredStatus string `json:"desiredStatus"`
	StopCode      string `json:"stopCode"`
	StoppedReason string `json:"stoppedReason"`
	StartedBy     string `json:"startedBy"`
}

// StopRequest is the detail of a "Stop Request": stop one deployment.
type StopRequest struct {
	DeploymentID string `json:"deploymentId"`
	Requester    string `json:"requester,omitempty"`
	Reason       string `json:"reason,omitempty"`
	// Forget removes the deployment's endpoint too; without it a deployment that wakes on request keeps it.
	Forget bool `json:"forget,omitempty"`
}

// ObjectCreated is the detail of an S3 "Object Created" event as EventBridge delivers it. Fields S3 may add later
// are accepted, since AWS, not a person, writes this shape.
type ObjectCreated struct {
	Version string `json:"version"`
	Bucket  struct {
		Name string `json:"name"`
	} `json:"bucket"`
	Object struct {
		Key       string `json:"key"`
		Size      int64  `json:"size"`
		ETag      string `json:"etag"`
		VersionID string `json:"version-id,omitempty"`
		Sequencer string `json:"sequencer"`
	} `json:"object"`
	RequestID string `json:"request-id"`
	Requester string `json:"requester"`
	Reason    string `json:"reason"`
}

// Error is a refused input; Field names where the problem is.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "invalid event: " + e.Reason
	}
	return fmt.Sprintf("invalid event: %s: %s", e.Field, e.Reason)
}

func invalid(field, format string, args ...any) error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Kind says which input an event is.
type Kind string

const (
	KindDeploy   Kind = "deploy"
	KindUpload   Kind = "upload"
	KindStop     Kind = "stop"
	KindTeardown Kind = "teardown"
	KindDirect   Kind = "direct"
	// KindTaskStopped is an ECS task of the cluster that stopped.
	KindTaskStopped Kind = "task-stopped"
)

// Input is a parsed event: exactly one of Deploy, Upload, Stop is set, or none for a teardown.
type Input struct {
	Kind         Kind
	DeploymentID string
	Deploy       *DeployRequest
	Upload       *Upload
	Stop         *StopRequest
	TaskStopped  *TaskStateChange
	Envelope     *Envelope
}

// Upload is a model file placed under the model prefix.
type Upload struct {
	Bucket string
	Key    string
	Size   int64
	// ModelName is the Ollama name the upload is deployed under, from its file or folder name.
	ModelName string
	// Modelfile is true for ".../Modelfile" uploads, false for ".gguf" files.
	Modelfile bool
	// Env is dev unless the key sits under <prefix>prod/.
	Env string
}

// Config is what parsing needs to know about the deployment: where uploads are accepted.
type Config struct {
	// ModelPrefix is the key prefix uploads must sit under, e.g. "models/".
	ModelPrefix string
	// Bucket, when set, is the only bucket uploads are accepted from.
	Bucket string
}

var (
	deploymentIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{2,35}$`)
	// requestModelPattern admits Ollama names ("llama3.1:8b", "user/model:tag") and the seed's ("Llama2 7B").
	requestModelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,63}$`)
	// uploadNamePattern is an uploaded model's Ollama name: a name, or namespace/name for a team's folder.
	uploadNamePattern = regexp.MustCompile(`^([a-z0-9][a-z0-9._-]{0,63}/)?[a-z0-9][a-z0-9._-]{0,63}$`)
	requesterPattern  = regexp.MustCompile(`^[\w.@:/+=, -]{0,128}$`)
	placementPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$`)
)

// ValidDeploymentID reports whether id has the form deployment ids take: 3-36 of a-z, 0-9 and -, so it fits ECS's
// startedBy and names a schedule.
func ValidDeploymentID(id string) bool { return deploymentIDPattern.MatchString(id) }

// ValidModelName reports whether name can name an uploaded model in Ollama: 1-64 of a-z, 0-9, ., _ and -,
// optionally under a namespace of the same form ("team-a/tiny").
func ValidModelName(name string) bool { return uploadNamePattern.MatchString(name) }

// Parse reads any input the state machine or the teardown function can receive: an EventBridge envelope of one of
// the known kinds, or a bare DeployRequest given to the state machine directly (executionName then supplies the
// deployment id when the request has none).
func Parse(raw []byte, cfg Config, executionName string) (Input, error) {
	if len(raw) > MaxEventBytes {
		return Input{}, invalid("", "event is %d bytes; EventBridge events are at most %d", len(raw), MaxEventBytes)
	}
	if !utf8.Valid(raw) {
		return Input{}, invalid("", "event is not valid UTF-8")
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return Input{}, invalid("", "not a JSON object: %v", jsonReason(err))
	}
	// An envelope has a detail-type or a detail; a direct request has neither (its "source" is a model file).
	if _, ok := probe["detail-type"]; !ok {
		if _, ok := probe["detail"]; !ok {
			return parseDirect(raw, executionName)
		}
	}
	var env Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return Input{}, invalid("", "envelope: %v", jsonReason(err))
	}
	if env.ID == "" {
		return Input{}, invalid("id", "missing: EventBridge events carry an id")
	}
	switch {
	case env.Source == SourceOllamaECS && env.DetailType == DetailTypeDeploy:
		var d DeployRequest
		if err := decodeStrict(env.Detail, &d); err != nil {
			return Input{}, err
		}
		if d.DeploymentID == "" {
			d.DeploymentID = deriveID("event", env.ID)
		}
		if err := d.Validate(); err != nil {
			return Input{}, err
		}
		return Input{Kind: KindDeploy, DeploymentID: d.DeploymentID, Deploy: &d, Envelope: &env}, nil
	case env.Source == SourceOllamaECS && env.DetailType == DetailTypeStop:
		var s StopRequest
		if err := decodeStrict(env.Detail, &s); err != nil {
			return Input{}, err
		}
		if !deploymentIDPattern.MatchString(s.DeploymentID) {
			return Input{}, invalid("detail.deploymentId", "%q is not a deployment id (3-36 of a-z, 0-9, -)", s.DeploymentID)
		}
		if !requesterPattern.MatchString(s.Requester) || !requesterPattern.MatchString(s.Reason) {
			return Input{}, invalid("detail.requester", "requester and reason are at most 128 plain characters")
		}
		return Input{Kind: KindStop, DeploymentID: s.DeploymentID, Stop: &s, Envelope: &env}, nil
	case env.Source == SourceS3 && env.DetailType == DetailTypeObjectCreated:
		var o ObjectCreated
		if err := json.Unmarshal(env.Detail, &o); err != nil {
			return Input{}, invalid("detail", "%v", jsonReason(err))
		}
		up, err := parseUpload(o, cfg)
		if err != nil {
			return Input{}, err
		}
		// The same object version maps to the same deployment, however often S3 or EventBridge delivers it.
		id := deriveID("s3", o.Bucket.Name, o.Object.Key, o.Object.VersionID, o.Object.ETag, o.Object.Sequencer)
		return Input{Kind: KindUpload, DeploymentID: id, Upload: &up, Envelope: &env}, nil
	case (env.Source == SourceEvents || env.Source == SourceScheduler) && env.DetailType == DetailTypeScheduled:
		return Input{Kind: KindTeardown, Envelope: &env}, nil
	case env.Source == SourceECS && env.DetailType == DetailTypeTaskState:
		var d TaskStateChange
		if err := json.Unmarshal(env.Detail, &d); err != nil {
			return Input{}, invalid("detail", "%v", jsonReason(err))
		}
		if d.TaskArn == "" || d.ClusterArn == "" {
			return Input{}, invalid("detail.taskArn", "a task state change names its task and cluster")
		}
		// startedBy is the deployment id of this system's tasks; others' tasks may have anything or nothing.
		id := ""
		if deploymentIDPattern.MatchString(d.StartedBy) {
			id = d.StartedBy
		}
		return Input{Kind: KindTaskStopped, DeploymentID: id, TaskStopped: &d, Envelope: &env}, nil
	}
	return Input{}, invalid("detail-type", "unknown event %q from %q", env.DetailType, env.Source)
}

func parseDirect(raw []byte, executionName string) (Input, error) {
	var d DeployRequest
	if err := decodeStrict(raw, &d); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Field = strings.TrimPrefix(e.Field, "detail.")
		}
		return Input{}, err
	}
	if d.DeploymentID == "" {
		if executionName == "" {
			return Input{}, invalid("deploymentId", "missing, and no execution name to derive it from")
		}
		d.DeploymentID = executionName
		if !deploymentIDPattern.MatchString(executionName) {
			d.DeploymentID = deriveID("execution", executionName)
		}
	}
	if err := d.Validate(); err != nil {
		return Input{}, err
	}
	return Input{Kind: KindDirect, DeploymentID: d.DeploymentID, Deploy: &d}, nil
}

// Validate checks a deploy request's fields: presence, form and range. Whether the model exists is the catalog's
// question, asked by the validate step.
func (d DeployRequest) Validate() error {
	switch {
	case d.Model == "":
		return invalid("detail.model", "missing")
	case !requestModelPattern.MatchString(d.Model):
		return invalid("detail.model", "%q is not a model name (1-64 of letters, digits, space, . _ : / -)", d.Model)
	case d.Env != "" && d.Env != "dev" && d.Env != "prod":
		return invalid("detail.env", "%q is not dev or prod", d.Env)
	case d.Prefer != "" && d.Prefer != "auto" && d.Prefer != "cpu" && d.Prefer != "gpu":
		return invalid("detail.prefer", "%q is not auto, cpu or gpu", d.Prefer)
	case d.Policy != "" && d.Policy != "cost" && d.Policy != "seed":
		return invalid("detail.policy", "%q is not cost or seed", d.Policy)
	case d.LaunchType != "" && !strings.EqualFold(d.LaunchType, "FARGATE") && !strings.EqualFold(d.LaunchType, "EC2"):
		return invalid("detail.launchType", "%q is not FARGATE or EC2", d.LaunchType)
	case len(d.InstanceType) > 32 || strings.ContainsAny(d.InstanceType, " /\\\"'"):
		return invalid("detail.instanceType", "%q is not an instance type", d.InstanceType)
	case d.ContextLength < 0 || d.ContextLength > MaxContextLength:
		return invalid("detail.contextLength", "%d is outside 0..%d", d.ContextLength, MaxContextLength)
	case !requesterPattern.MatchString(d.Requester):
		return invalid("detail.requester", "at most 128 plain characters")
	case d.Source != "" && (!strings.HasPrefix(d.Source, "s3://") || !strings.HasSuffix(d.Source, ".gguf") ||
		len(d.Source) > 1100 || strings.Contains(d.Source, "..")):
		return invalid("detail.source", "%q is not s3://<bucket>/<key>.gguf", d.Source)
	case !deploymentIDPattern.MatchString(d.DeploymentID):
		return invalid("detail.deploymentId", "%q is not a deployment id (3-36 of a-z, 0-9, -)", d.DeploymentID)
	case len(d.Avoid) > 16:
		return invalid("detail.avoid", "at most 16 placements")
	case d.Restart < 0 || d.Restart > MaxRestarts:
		return invalid("detail.restart", "%d is outside 0..%d", d.Restart, MaxRestarts)
	case (d.MinTasks != 0 || d.MaxTasks != 0) && d.Env != "prod":
		return invalid("detail.minTasks", "minTasks and maxTasks scale a prod deployment's service; a dev deployment is one task")
	case d.MinTasks < 0 || d.MinTasks > MaxTasksLimit:
		return invalid("detail.minTasks", "%d is outside 1..%d", d.MinTasks, MaxTasksLimit)
	case d.MaxTasks < 0 || d.MaxTasks > MaxTasksLimit:
		return invalid("detail.maxTasks", "%d is outside 1..%d", d.MaxTasks, MaxTasksLimit)
	case d.Wake < 0:
		return invalid("detail.wake", "%d is negative", d.Wake)
	case d.MaxTasks != 0 && d.MaxTasks < max(d.MinTasks, 1):
		return invalid("detail.maxTasks", "%d is below minTasks %d", d.MaxTasks, max(d.MinTasks, 1))
	}
	if err := (Requirements{d.MinTokensPerSecond, d.MaxTimeToFirstToken, d.Optimize}).check("detail."); err != nil {
		return err
	}
	for _, a := range d.Avoid {
		if !placementPattern.MatchString(a) {
			return invalid("detail.avoid", "%q is not a placement (1-64 of letters, digits, space, . _ -)", a)
		}
	}
	if _, err := d.TTLDuration(); err != nil {
		return err
	}
	return nil
}

// TTLDuration is the requested time to live: -1 when the request leaves it to the environment's default, 0 for
// no auto-stop.
func (d DeployRequest) TTLDuration() (time.Duration, error) {
	if d.TTL == "" {
		return -1, nil
	}
	if d.TTL == "0" {
		return 0, nil
	}
	ttl, err := time.ParseDuration(d.TTL)
	switch {
	case err != nil:
		return 0, invalid("detail.ttl", "%q is not a duration like 90m or 2h", d.TTL)
	case ttl < time.Minute:
		return 0, invalid("detail.ttl", "%s is below one minute (the scheduler's precision)", ttl)
	case ttl > MaxTTL:
		return 0, invalid("detail.ttl", "%s is above the %s maximum", ttl, MaxTTL)
	}
	return ttl, nil
}

func parseUpload(o ObjectCreated, cfg Config) (Upload, error) {
	key := o.Object.Key
	prefix := cfg.ModelPrefix
	switch {
	case o.Bucket.Name == "":
		return Upload{}, invalid("detail.bucket.name", "missing")
	case cfg.Bucket != "" && o.Bucket.Name != cfg.Bucket:
		return Upload{}, invalid("detail.bucket.name", "%q is not the model bucket", o.Bucket.Name)
	case key == "" || len(key) > 1024:
		return Upload{}, invalid("detail.object.key", "must be 1-1024 characters")
	case !strings.HasPrefix(key, prefix):
		return Upload{}, invalid("detail.object.key", "%q is outside the model prefix %q", key, prefix)
	case strings.ContainsAny(key, "\\\x00") || strings.Contains(key, "//") || path.Clean("/"+key) != "/"+key ||
		strings.Contains("/"+key+"/", "/../") || strings.Contains("/"+key+"/", "/./"):
		return Upload{}, invalid("detail.object.key", "%q is not a clean path (no .., ., //, backslashes)", key)
	case o.Object.Size < 0:
		return Upload{}, invalid("detail.object.size", "negative")
	case o.Object.Size == 0:
		return Upload{}, invalid("detail.object.size", "%q is empty (0 bytes): there is no model to deploy", key)
	}
	rest := strings.TrimPrefix(key, prefix)
	up := Upload{Bucket: o.Bucket.Name, Key: key, Size: o.Object.Size, Env: "dev"}
	if after, ok := strings.CutPrefix(rest, "prod/"); ok {
		up.Env, rest = "prod", after
	} else {
		rest = strings.TrimPrefix(rest, "dev/")
	}
	// <name>.gguf or <name>/Modelfile, directly under the prefix (after dev/ or prod/) or in one team folder
	// (team-a/<name>.gguf, team-a/<name>/Modelfile), which becomes the model's namespace: team-a/name and
	// team-b/name are two models, and the deployment id comes from the whole key.
	var name string
	parts := strings.Split(rest, "/")
	switch last := parts[len(parts)-1]; {
	case strings.HasSuffix(last, ".gguf") && len(parts) <= 2:
		name = strings.TrimSuffix(rest, ".gguf")
	case last == "Modelfile" && (len(parts) == 2 || len(parts) == 3):
		name, up.Modelfile = path.Dir(rest), true
	default:
		return Upload{}, invalid("detail.object.key",
			"%q is neither <prefix>[dev/|prod/][team/]<name>.gguf nor <prefix>[dev/|prod/][team/]<name>/Modelfile", key)
	}
	up.ModelName = strings.ToLower(name)
	if !uploadNamePattern.MatchString(up.ModelName) {
		return Upload{}, invalid("detail.object.key", "%q does not give a model name ([team/]name, each 1-64 of a-z, 0-9, ., _, -)", name)
	}
	return up, nil
}

// decodeStrict refuses unknown fields: in a hand-written request a misspelt "instancetype" must not silently
// become the default.
func decodeStrict(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return invalid("detail", "missing")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("detail", "%s", jsonReason(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("detail", "trailing data after the object")
	}
	// encoding/json matches field names case-insensitively, so "instancetype" would fill InstanceType; a request
	// written by hand must spell each field exactly.
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return invalid("detail", "%s", jsonReason(err))
	}
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		known[name] = true
	}
	for k := range keys {
		if !known[k] {
			return invalid("detail", "unknown field %q", k)
		}
	}
	return nil
}

// jsonReason turns encoding/json's errors into a field-level sentence.
func jsonReason(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("field %q must be %s, not a JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + f
	}
	return strings.TrimPrefix(msg, "json: ")
}

// deriveID makes a deployment id from the parts that identify an input: the same parts give the same id.
func deriveID(kind string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return "d-" + hex.EncodeToString(h.Sum(nil))[:20]
}
