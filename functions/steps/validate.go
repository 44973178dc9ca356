package steps

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
)

// ValidateInput is what the state machine gives the validate step: the execution's input as it came, and the
// execution's name (the deployment id of a direct request).
type ValidateInput struct {
	Event         json.RawMessage `json:"event"`
	ExecutionName string          `json:"executionName"`
}

// ValidateOutput replaces the state: from here on, only the normalised request travels.
type ValidateOutput struct {
	Request deployment.Request `json:"request"`
}

// Validate normalises the three input shapes (deploy event, S3 upload, direct request) into one Request, checks
// the model and overrides, and sizes an uploaded GGUF from its header. It starts nothing.
type Validate struct {
	Catalog *catalog.Catalog
	// Models resolves a model the catalog does not list against its registry (nil: the catalog only).
	Models *registry.Client
	S3     deployment.ObjectReader
	// Bucket and Prefix are where uploads are accepted.
	Bucket, Prefix string
	// UploadDefaults are the required performance and ranking of an upload's deployment.
	UploadDefaults events.Requirements
	Log            *slog.Logger
}

// maxModelfileBytes bounds a Modelfile read: they are a few lines.
const maxModelfileBytes = 64 << 10

func (v *Validate) Handle(ctx context.Context, in ValidateInput) (ValidateOutput, error) {
	parsed, err := events.Parse(in.Event, events.Config{ModelPrefix: v.Prefix, Bucket: v.Bucket}, in.ExecutionName)
	if err != nil {
		return ValidateOutput{}, &deployment.InvalidEventError{Reason: err.Error()}
	}
	log := deployment.Logger(v.Log, parsed.DeploymentID)
	// Policy stays empty unless the request names one: the configure step then applies the stack's default.
	req := deployment.Request{DeploymentID: parsed.DeploymentID, ExecutionName: in.ExecutionName, Env: "dev", Prefer: "auto", TTLSeconds: -1}
	switch parsed.Kind {
	case events.KindDeploy, events.KindDirect:
		d := parsed.Deploy
		m, source, err := v.deployModel(ctx, d)
		if err != nil {
			return ValidateOutput{}, err
		}
		ttl, _ := d.TTLDuration() // checked by Parse
		req.Trigger = string(parsed.Kind)
		req.ModelName = m.Name
		req.Source = source
		req.Model = m
		req.Env = cmp.Or(d.Env, req.Env)
		req.Prefer = cmp.Or(d.Prefer, req.Prefer)
		req.Policy = d.Policy
		req.InstanceType = d.InstanceType
		req.LaunchType = strings.ToUpper(d.LaunchType)
		req.ContextLength = d.ContextLength
		req.TTLSeconds = int(ttl.Seconds())
		req.Requester = d.Requester
		req.KeepRunning, req.Avoid, req.Restart = d.KeepRunning, d.Avoid, d.Restart
		req.APIKey = d.APIKey
		req.MinTokensPerSecond, req.MaxTimeToFirstToken, req.Optimize = d.MinTokensPerSecond, d.MaxTimeToFirstToken, d.Optimize
		req.WakeOnRequest, req.Wake = req.Env == "dev", d.Wake
		if d.WakeOnRequest != nil {
			req.WakeOnRequest = *d.WakeOnRequest
		}
		if req.Env == "prod" {
			req.MinTasks = cmp.Or(d.MinTasks, events.DefaultMinTasks)
			req.MaxTasks = max(cmp.Or(d.MaxTasks, events.DefaultMaxTasks), req.MinTasks)
		}
		if ttl < 0 {
			req.TTLSeconds = -1
		}
	case events.KindUpload:
		up := parsed.Upload
		m, source, err := v.sizeUpload(ctx, up)
		if err != nil {
			return ValidateOutput{}, err
		}
		req.Trigger = "upload"
		req.ModelName = up.ModelName
		req.Source = source
		req.Model = m
		req.Env = up.Env
		req.MinTokensPerSecond, req.MaxTimeToFirstToken, req.Optimize = v.UploadDefaults.MinTokensPerSecond,
			v.UploadDefaults.MaxTimeToFirstToken, v.UploadDefaults.Optimize
		req.WakeOnRequest = req.Env == "dev"
		req.Requester = "s3:" + parsed.Envelope.Account
	default:
		return ValidateOutput{}, &deployment.InvalidEventError{Reason: fmt.Sprintf(
			"a %s event does not start a deployment: it goes to the teardown function", parsed.Kind)}
	}
	log.Info("request validated", "trigger", req.Trigger, "model", req.ModelName, "env", req.Env,
		"sizeBytes", req.Model.SizeBytes)
	return ValidateOutput{Request: req}, nil
}

// deployModel finds a deploy request's model: a catalog entry pulled from the registry, or an uploaded GGUF
// under the model prefix, sized from its header.
func (v *Validate) deployModel(ctx context.Context, d *events.DeployRequest) (catalog.Model, string, error) {
	if d.Source == "" {
		return registry.Lookup(ctx, v.Catalog, v.Models, d.Model)
	}
	bucket, key, _ := strings.Cut(strings.TrimPrefix(d.Source, "s3://"), "/")
	if bucket != v.Bucket || !strings.HasPrefix(key, v.Prefix) {
		return catalog.Model{}, "", &deployment.InvalidEventError{Reason: fmt.Sprintf("source %s is not under s3://%s/%s", d.Source, v.Bucket, v.Prefix)}
	}
	name := strings.ToLower(d.Model)
	if !events.ValidModelName(name) {
		return catalog.Model{}, "", &deployment.InvalidEventError{Reason: fmt.Sprintf("%q cannot name an uploaded model (a-z, 0-9, . _ -)", d.Model)}
	}
	size, err := v.objectSize(ctx, bucket, key)
	if err != nil {
		return catalog.Model{}, "", err
	}
	m, err := readGGUFModel(ctx, v.S3, bucket, key, size, name)
	return m, d.Source, err
}

// objectSize learns an object's size from a one-byte ranged GET (HeadObject would need another permission).
func (v *Validate) objectSize(ctx context.Context, bucket, key string) (int64, error) {
	out, err := v.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Range: aws.String("bytes=0-0")})
	if err != nil {
		// Without s3:ListBucket (the function has only GetObject on the prefix), S3 answers a missing key with
		// AccessDenied rather than NoSuchKey.
		if deployment.IsNotFound(err) || deployment.IsCode(err, "NoSuchKey") || deployment.IsCode(err, "AccessDenied") {
			return 0, &deployment.NotGGUFError{Key: key, Reason: "no such object (or not readable under the model prefix)"}
		}
		if deployment.IsCode(err, "InvalidRange") {
			// S3 cannot serve byte 0 of an empty object.
			return 0, &deployment.NotGGUFError{Key: key, Reason: "the object is empty (0 bytes)"}
		}
		return 0, deployment.AWSError("s3:GetObject", err)
	}
	out.Body.Close()
	return objectSize(out), nil
}

// sizeUpload sizes an upload and says where the task gets the model. A GGUF is sized from its header. A Modelfile
// deploys what its FROM names: a catalog model (pulled, then named after the upload) or a GGUF under the model
// prefix, relative to the Modelfile's folder (FROM ../tiny.gguf). Only FROM is read: the task builds the model
// from that source, so SYSTEM, PARAMETER and TEMPLATE lines are not applied.
func (v *Validate) sizeUpload(ctx context.Context, up *events.Upload) (catalog.Model, string, error) {
	if !up.Modelfile {
		m, err := readGGUFModel(ctx, v.S3, up.Bucket, up.Key, up.Size, up.ModelName)
		return m, "s3://" + up.Bucket + "/" + up.Key, err
	}
	from, err := v.modelfileFrom(ctx, up)
	if err != nil {
		return catalog.Model{}, "", err
	}
	if strings.HasSuffix(from, ".gguf") {
		key := path.Join(path.Dir(up.Key), from)
		if path.IsAbs(from) || !strings.HasPrefix(key, v.Prefix) {
			return catalog.Model{}, "", &deployment.InvalidEventError{Reason: fmt.Sprintf("Modelfile FROM %q leaves the model prefix %q", from, v.Prefix)}
		}
		size, err := v.objectSize(ctx, up.Bucket, key)
		if err != nil {
			return catalog.Model{}, "", err
		}
		m, err := readGGUFModel(ctx, v.S3, up.Bucket, key, size, up.ModelName)
		return m, "s3://" + up.Bucket + "/" + key, err
	}
	m, source, err := registry.Lookup(ctx, v.Catalog, v.Models, from)
	if err != nil {
		return catalog.Model{}, "", err
	}
	m.Name = up.ModelName
	return m, source, nil
}

func (v *Validate) modelfileFrom(ctx context.Context, up *events.Upload) (string, error) {
	out, err := v.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(up.Bucket), Key: aws.String(up.Key)})
	if err != nil {
		return "", deployment.AWSError("s3:GetObject", err)
	}
	defer out.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(out.Body, maxModelfileBytes))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := cutPrefixFold(line, "FROM "); ok {
			return strings.TrimSpace(rest), nil
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return "", &deployment.InvalidEventError{Reason: "reading the Modelfile: " + err.Error()}
	}
	return "", &deployment.InvalidEventError{Reason: up.Key + " has no FROM line"}
}

func objectSize(out *s3.GetObjectOutput) int64 {
	// A ranged GET answers "bytes 0-0/<size>".
	if out.ContentRange != nil {
		if i := strings.LastIndexByte(*out.ContentRange, '/'); i >= 0 {
			var n int64
			if _, err := fmt.Sscan((*out.ContentRange)[i+1:], &n); err == nil {
				return n
			}
		}
	}
	return aws.ToInt64(out.ContentLength)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
