// Package modelimage is the "Ensure model image" step: it makes sure the stack's image repository (ECR) holds an
// image of the deployment's model (the pinned Ollama image plus the model in Ollama's layout, see
// catalog/registry/bake) and registers the CPU and GPU task definitions that run it, so the task starts without
// pulling its model. It is its own package so that only the image function links go-containerregistry.
package modelimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry/bake"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// DefaultLockTTL is how long a build's lock holds off other builds of the model; a lock older than this is a
// builder that died (a Lambda is stopped at 15 minutes) and is taken over.
const DefaultLockTTL = 20 * time.Minute

// TaskDefinitions is the part of ECS the step registers task definitions with.
type TaskDefinitions interface {
	DescribeTaskDefinition(ctx context.Context, in *ecs.DescribeTaskDefinitionInput, opts ...func(*ecs.Options)) (*ecs.DescribeTaskDefinitionOutput, error)
	RegisterTaskDefinition(ctx context.Context, in *ecs.RegisterTaskDefinitionInput, opts ...func(*ecs.Options)) (*ecs.RegisterTaskDefinitionOutput, error)
}

// Ensure is the step.
type Ensure struct {
	// Models is the models' registry client (the one Validate sized the model with).
	Models *registry.Client
	// Repository is where model images go (HOST/PATH); empty means no images: every task pulls at start.
	Repository string
	// OllamaImage is the pinned Ollama image the model images are built on; it is mirrored into Repository once
	// (tag ollama-VERSION), so no task pulls from Docker Hub.
	OllamaImage string
	// MaxBytes is the largest model baked; a larger one is pulled at start (said in the state).
	MaxBytes int64
	// TaskDefinitions registers the model's task definitions, copies of CPUTaskDefinition and GPUTaskDefinition.
	TaskDefinitions                      TaskDefinitions
	CPUTaskDefinition, GPUTaskDefinition string
	// Locks holds one SSM parameter per build in progress under LockPrefix, so concurrent deployments of a model
	// build it once; LockTTL (default DefaultLockTTL) is when a lock counts as abandoned.
	Locks      deployment.Parameters
	LockPrefix string
	LockTTL    time.Duration
	// BuildMargin is how long before the function's deadline a build is given up (default a minute, or a tenth of
	// the time left if that is less).
	BuildMargin time.Duration
	// Keychain authenticates to the registries (ECR's token); nil is anonymous.
	Keychain authn.Keychain
	Now      func() time.Time
	Log      *slog.Logger
}

// Handle returns the model's image and task definitions, building the image if the repository has none.
func (e *Ensure) Handle(ctx context.Context, s deployment.State) (deployment.ImageState, error) {
	if s.Request == nil {
		return deployment.ImageState{}, &deployment.IncompleteStateError{Step: "Ensure model image", Missing: "a validated request"}
	}
	req := s.Request
	log := deployment.Logger(e.Log, req.DeploymentID)
	if e.Repository == "" {
		return deployment.ImageState{PullAtStart: "the stack has no model image repository"}, nil
	}
	opts := []remote.Option{remote.WithContext(ctx)}
	if e.Keychain != nil {
		opts = append(opts, remote.WithAuthFromKeychain(e.Keychain))
	}
	ref, ok := strings.CutPrefix(req.Source, "ollama://")
	if !ok {
		return e.pullAtStart(ctx, log, opts, "an upload is copied from S3 by the task's fetch container")
	}
	m, raw, r, err := e.Models.Manifest(ctx, ref)
	if err != nil {
		// Validate found the model (in the catalog or the registry); the task's own pull will say what is wrong.
		log.Warn("model manifest unavailable; the task pulls at start", "model", ref, "error", err)
		return e.pullAtStart(ctx, log, opts, "the model's manifest could not be read: "+err.Error())
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	if e.MaxBytes > 0 && size > e.MaxBytes {
		return e.pullAtStart(ctx, log, opts, fmt.Sprintf("the model is %.1f GiB, above the %.0f GiB the image builder bakes within its time limit",
			float64(size)/(1<<30), float64(e.MaxBytes)/(1<<30)))
	}
	tag := Tag(r, raw)
	image := e.Repository + ":" + tag
	// Problems on the image side (ECR, the Ollama image's mirror, the build's time) do not fail the deployment: the
	// task pulls at start, and the record says why. Problems with the model itself do: its pull would fail too.
	exists, err := e.exists(image, opts)
	if err != nil {
		return e.pullAtStart(ctx, log, opts, "the model image repository could not be read: "+err.Error())
	}
	out := deployment.ImageState{Image: image}
	if !exists {
		release, unbakeable, err := e.lock(ctx, tag, req.ExecutionName, image)
		if err != nil {
			return out, err
		}
		if unbakeable != "" {
			return e.pullAtStart(ctx, log, opts, unbakeable)
		}
		base, err := e.mirror(opts)
		if err != nil {
			release(false)
			return e.pullAtStart(ctx, log, opts, "the Ollama image could not be mirrored: "+err.Error())
		}
		start := e.now()
		buildCtx, cancel := e.buildContext(ctx)
		_, out.Built, err = bake.BakeManifest(buildCtx, e.Models, r, raw, m, base, image, append(opts, remote.WithContext(buildCtx))...)
		timedOut := buildCtx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			if ok, _ := e.exists(image, opts); ok {
				err, out.Built = nil, false // tagged by a build that took over an expired lock meanwhile
			}
		}
		var bad *registry.BadModelError
		var reg *registry.RegistryError
		switch {
		case err == nil:
			release(false)
		case timedOut:
			release(true) // later deployments of the model pull at start at once, for a day
			return e.pullAtStart(ctx, log, opts, fmt.Sprintf("the image build of %.1f GiB did not finish within the function's time", float64(size)/(1<<30)))
		case errors.As(err, &bad), errors.As(err, &reg) && reg.Host == r.Host:
			release(false)
			return out, err // the model's registry failed, or served something that is not the model it described
		default:
			release(false)
			return e.pullAtStart(ctx, log, opts, "the model image could not be built: "+err.Error())
		}
		out.BuildSeconds = e.now().Sub(start).Seconds()
		log.Info("model image ready", "image", image, "built", out.Built, "seconds", out.BuildSeconds)
	}
	tds := deployment.TaskDefinitions{}
	for _, f := range []struct {
		base string
		into *string
	}{{e.CPUTaskDefinition, &tds.CPU}, {e.GPUTaskDefinition, &tds.GPU}} {
		if *f.into, err = e.register(ctx, f.base, image, strings.TrimPrefix(tag, "sha256-")[:12]); err != nil {
			return out, err
		}
	}
	out.TaskDefinitions = &tds
	return out, nil
}

// Tag is a model image's tag: sha256- and the digest of the model's name and manifest. The image holds the
// manifest under that name, which is where the entry script looks: two names of one manifest are two images.
func Tag(r registry.Reference, manifest []byte) string {
	sum := sha256.Sum256(append([]byte(r.String()+"\n"), manifest...))
	return "sha256-" + hex.EncodeToString(sum[:])
}

// buildContext bounds a build to a minute before the function's own deadline, so that a build too slow for the
// function ends here: its lock is released (marked unbakeable) and the task pulls at start, instead of the
// function being killed with the lock held.
func (e *Ensure) buildContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if deadline, ok := ctx.Deadline(); ok {
		// A minute of a Lambda's 15; a tenth of a shorter deadline (the local stack's 60 s).
		margin := e.BuildMargin
		if margin <= 0 {
			margin = min(time.Minute, time.Until(deadline)/10)
		}
		return context.WithDeadline(ctx, deadline.Add(-margin))
	}
	return context.WithCancel(ctx)
}

func (e *Ensure) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// exists reports whether the repository holds image.
func (e *Ensure) exists(image string, opts []remote.Option) (bool, error) {
	return bake.Exists(image, opts...)
}

// mirror copies the Ollama image (its linux/amd64 image, what Fargate and the GPU instances run) into the
// repository once, and returns the copy's name.
func (e *Ensure) mirror(opts []remote.Option) (string, error) {
	if e.OllamaImage == "" {
		return "", errors.New("no Ollama image to build on (OLLAMA_IMAGE)")
	}
	src, err := bake.ParseReference(e.OllamaImage)
	if err != nil {
		return "", fmt.Errorf("Ollama image %q: %w", e.OllamaImage, err)
	}
	dst := e.Repository + ":" + mirrorTag(src)
	if ok, err := e.exists(dst, opts); err != nil || ok {
		return dst, err
	}
	img, err := remote.Image(src, append(opts, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))...)
	if err != nil {
		return "", fmt.Errorf("mirroring %s: %w", e.OllamaImage, err)
	}
	to, err := bake.ParseReference(dst)
	if err != nil {
		return "", err
	}
	if err := remote.Write(to, img, opts...); err != nil {
		if ok, _ := e.exists(dst, opts); ok {
			return dst, nil // mirrored meanwhile by a build of another model (the tags are immutable)
		}
		return "", fmt.Errorf("mirroring %s to %s: %w", e.OllamaImage, dst, err)
	}
	return dst, nil
}

var tagUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// mirrorTag is the mirror's tag: ollama-VERSION for a tag of Docker Hub's ollama/ollama, ollama-sha256-HEX12 for a
// digest; an image from another repository gets the first 8 hex digits of its name's digest too
// (ollama-1a2b3c4d-VERSION), so that changing the stack's image never finds the other's mirror (the tags are
// immutable).
func mirrorTag(src name.Reference) string {
	id := src.Identifier()
	if d, ok := strings.CutPrefix(id, "sha256:"); ok {
		id = "sha256-" + d[:min(12, len(d))]
	}
	if repo := src.Context().Name(); repo != "index.docker.io/ollama/ollama" {
		sum := sha256.Sum256([]byte(repo))
		id = hex.EncodeToString(sum[:4]) + "-" + id
	}
	return "ollama-" + tagUnsafe.ReplaceAllString(id, "-")
}

// unbakeableHolder marks a model whose build outlasted the function: for UnbakeableFor, its deployments pull at
// start at once rather than wait for or repeat a build that cannot finish.
const unbakeableHolder = "unbakeable"

// UnbakeableFor is how long a model whose build did not finish in time is pulled at start before a build is tried
// again.
const UnbakeableFor = 24 * time.Hour

// lock takes the model's build lock, or reports the build in progress, or (unbakeable, a reason) that the model's
// last build did not finish in time. A lock older than LockTTL belonged to a builder that died; it is taken over.
// release(unbakeable) ends the lock, leaving the mark when asked.
func (e *Ensure) lock(ctx context.Context, tag, holder, image string) (release func(unbakeable bool), unbakeable string, err error) {
	param := strings.TrimRight(e.LockPrefix, "/") + "/" + tag
	ttl := e.LockTTL
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	release = func(mark bool) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		var err error
		if mark {
			_, err = e.Locks.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(param), Overwrite: aws.Bool(true),
				Value: aws.String(unbakeableHolder + " " + e.now().UTC().Format(time.RFC3339)), Type: ssmtypes.ParameterTypeString})
		} else {
			_, err = e.Locks.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(param)})
		}
		if err != nil {
			deployment.Logger(e.Log, "").Warn("releasing the image build lock", "parameter", param, "error", err)
		}
	}
	value := holder + " " + e.now().UTC().Format(time.RFC3339)
	for attempt := 0; attempt < 2; attempt++ {
		_, err := e.Locks.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(param), Value: aws.String(value),
			Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(false)})
		var exists *ssmtypes.ParameterAlreadyExists
		if !errors.As(err, &exists) {
			if err != nil {
				return nil, "", deployment.AWSError("ssm:PutParameter", err)
			}
			return release, "", nil
		}
		got, err := e.Locks.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(param)})
		var gone *ssmtypes.ParameterNotFound
		if errors.As(err, &gone) {
			continue // released meanwhile: try again
		}
		if err != nil {
			return nil, "", deployment.AWSError("ssm:GetParameter", err)
		}
		who, at, _ := strings.Cut(aws.ToString(got.Parameter.Value), " ")
		since, perr := time.Parse(time.RFC3339, at)
		age := e.now().Sub(since)
		switch {
		case perr == nil && who == unbakeableHolder && age < UnbakeableFor:
			return nil, fmt.Sprintf("the model's image build did not finish within the function's time at %s; it is tried again after %s",
				since.Format(time.RFC3339), since.Add(UnbakeableFor).Format(time.RFC3339)), nil
		case perr == nil && who != unbakeableHolder && age < ttl && who != holder:
			return nil, "", &deployment.ImageBuildInProgressError{Image: image, Holder: who, Since: since}
		}
		// Abandoned, expired, or this execution's own from a retried attempt that died: take it over. (Two
		// executions may both do so and both build: the tag goes on once, the work is done twice.)
		if _, err := e.Locks.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(param)}); err != nil && !errors.As(err, &gone) {
			return nil, "", deployment.AWSError("ssm:DeleteParameter", err)
		}
	}
	return nil, "", &deployment.ImageBuildInProgressError{Image: image, Holder: "another execution", Since: e.now()}
}

// pullAtStart is a task that gets its model at start, for reason: it still runs the Ollama image from the
// repository (mirrored now if it is not there yet), not from Docker Hub. If the mirror cannot be made, the task
// runs the stack's own task definitions.
func (e *Ensure) pullAtStart(ctx context.Context, log *slog.Logger, opts []remote.Option, reason string) (deployment.ImageState, error) {
	out := deployment.ImageState{PullAtStart: reason}
	base, err := e.mirror(opts)
	if err != nil {
		log.Warn("the Ollama image could not be mirrored; the task runs the stack's task definitions", "error", err)
		return out, nil
	}
	suffix := strings.TrimPrefix(base, e.Repository+":")
	tds := deployment.TaskDefinitions{}
	if tds.CPU, err = e.register(ctx, e.CPUTaskDefinition, base, suffix); err != nil {
		return out, err
	}
	if tds.GPU, err = e.register(ctx, e.GPUTaskDefinition, base, suffix); err != nil {
		return out, err
	}
	out.Image, out.TaskDefinitions = base, &tds
	return out, nil
}

// register returns the task definition that runs image: the stack's family base with the ollama container's
// image replaced, in the family BASE-SUFFIX (HEX12 of a model image, the mirror's tag for the Ollama image). An
// existing revision with the image is reused.
func (e *Ensure) register(ctx context.Context, base, image, suffix string) (string, error) {
	family := base[strings.LastIndex(base, "/")+1:]
	family, _, _ = strings.Cut(family, ":")
	family += "-" + tagUnsafe.ReplaceAllString(strings.ReplaceAll(suffix, ".", "-"), "-")
	td, err := e.TaskDefinitions.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(base)})
	if err != nil {
		return "", deployment.AWSError("ecs:DescribeTaskDefinition", err)
	}
	in := deployment.CopyTaskDefinition(td.TaskDefinition, family)
	for i := range in.ContainerDefinitions {
		if aws.ToString(in.ContainerDefinitions[i].Name) == deployment.ContainerName {
			in.ContainerDefinitions[i].Image = aws.String(image)
		}
	}
	// The latest copy is reused while it is the stack's definition with this image: a stack update (the entry
	// script, the roles, the log group) makes a new revision.
	if got, err := e.TaskDefinitions.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(family)}); err == nil &&
		sameRegistration(deployment.CopyTaskDefinition(got.TaskDefinition, family), in) {
		return aws.ToString(got.TaskDefinition.TaskDefinitionArn), nil
	}
	in.Tags = []ecstypes.Tag{{Key: aws.String(deployment.TagManagedBy), Value: aws.String(deployment.ManagedByValue)}}
	out, err := e.TaskDefinitions.RegisterTaskDefinition(ctx, in)
	if err != nil {
		return "", deployment.AWSError("ecs:RegisterTaskDefinition", err)
	}
	return aws.ToString(out.TaskDefinition.TaskDefinitionArn), nil
}

// sameRegistration compares two registrations as JSON (the SDK's types are plain data).
func sameRegistration(a, b *ecs.RegisterTaskDefinitionInput) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && string(ja) == string(jb)
}
