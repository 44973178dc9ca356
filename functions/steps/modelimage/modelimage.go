// Package modelimage is the "Ensure model image" step: it makes sure the stack's image repository (ECR) holds an
// image of the deployment's model (the pinned Ollama image plus the model in Ollama's layout, see
// catalog/registry/bake) and registers the CPU and GPU task definitions that run it, so the task starts without
// pulling its model. It is its own package so that only the image function links go-containerregistry.
package modelimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

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
	m, raw, _, err := e.Models.Manifest(ctx, ref)
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
	sum := sha256.Sum256(raw)
	tag := "sha256-" + hex.EncodeToString(sum[:])
	image := e.Repository + ":" + tag
	out := deployment.ImageState{Image: image}
	exists, err := e.exists(image, opts)
	if err != nil {
		return out, &deployment.ImageBuildError{Image: image, Err: err}
	}
	if !exists {
		release, err := e.lock(ctx, tag, req.ExecutionName, image)
		if err != nil {
			return out, err
		}
		defer release()
		start := e.now()
		base, err := e.mirror(opts)
		if err != nil {
			return out, &deployment.ImageBuildError{Image: image, Err: err}
		}
		if _, out.Built, err = bake.Bake(ctx, e.Models, ref, base, image, opts...); err != nil {
			if ok, _ := e.exists(image, opts); ok {
				err, out.Built = nil, false // tagged by a build that took over an expired lock meanwhile
			}
		}
		if err != nil {
			var bad *registry.BadModelError
			if errors.As(err, &bad) {
				return out, bad // the model's registry served something that is not the model it described
			}
			return out, &deployment.ImageBuildError{Image: image, Err: err}
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

func (e *Ensure) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// exists reports whether the repository holds image.
func (e *Ensure) exists(image string, opts []remote.Option) (bool, error) {
	ref, err := name.NewTag(image, nameOptions(image)...)
	if err != nil {
		return false, err
	}
	_, err = remote.Head(ref, opts...)
	var terr *transport.Error
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &terr) && terr.StatusCode == 404:
		return false, nil
	}
	return false, err
}

// mirror copies the Ollama image (its linux/amd64 image, what Fargate and the GPU instances run) into the
// repository once, and returns the copy's name.
func (e *Ensure) mirror(opts []remote.Option) (string, error) {
	if e.OllamaImage == "" {
		return "", errors.New("no Ollama image to build on (OLLAMA_IMAGE)")
	}
	src, err := name.ParseReference(e.OllamaImage, nameOptions(e.OllamaImage)...)
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
	to, err := name.NewTag(dst, nameOptions(dst)...)
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

// mirrorTag is the mirror's tag: ollama-VERSION for a tag, ollama-sha256-HEX12 for a digest.
func mirrorTag(src name.Reference) string {
	id := src.Identifier()
	if d, ok := strings.CutPrefix(id, "sha256:"); ok {
		id = "sha256-" + d[:min(12, len(d))]
	}
	return "ollama-" + tagUnsafe.ReplaceAllString(id, "-")
}

// lock takes the model's build lock, or reports the build in progress. A lock older than LockTTL belonged to a
// builder that died; it is taken over.
func (e *Ensure) lock(ctx context.Context, tag, holder, image string) (release func(), err error) {
	param := strings.TrimRight(e.LockPrefix, "/") + "/" + tag
	ttl := e.LockTTL
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	release = func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := e.Locks.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(param)}); err != nil {
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
				return nil, deployment.AWSError("ssm:PutParameter", err)
			}
			return release, nil
		}
		got, err := e.Locks.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(param)})
		if err != nil {
			continue // released meanwhile: try again
		}
		who, at, _ := strings.Cut(aws.ToString(got.Parameter.Value), " ")
		since, perr := time.Parse(time.RFC3339, at)
		if perr == nil && e.now().Sub(since) < ttl && who != holder {
			return nil, &deployment.ImageBuildInProgressError{Image: image, Holder: who, Since: since}
		}
		// Abandoned (or this execution's own, from a retried attempt that died): take it over.
		if _, err := e.Locks.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(param)}); err != nil {
			return nil, deployment.AWSError("ssm:DeleteParameter", err)
		}
	}
	return nil, &deployment.ImageBuildInProgressError{Image: image, Holder: "another execution", Since: e.now()}
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
	if got, err := e.TaskDefinitions.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(family)}); err == nil &&
		ollamaImage(got.TaskDefinition) == image {
		return aws.ToString(got.TaskDefinition.TaskDefinitionArn), nil
	}
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
	in.Tags = []ecstypes.Tag{{Key: aws.String(deployment.TagManagedBy), Value: aws.String(deployment.ManagedByValue)}}
	out, err := e.TaskDefinitions.RegisterTaskDefinition(ctx, in)
	if err != nil {
		return "", deployment.AWSError("ecs:RegisterTaskDefinition", err)
	}
	return aws.ToString(out.TaskDefinition.TaskDefinitionArn), nil
}

func ollamaImage(td *ecstypes.TaskDefinition) string {
	if td == nil {
		return ""
	}
	for _, c := range td.ContainerDefinitions {
		if aws.ToString(c.Name) == deployment.ContainerName {
			return aws.ToString(c.Image)
		}
	}
	return ""
}

// nameOptions lets a loopback registry (the local stack's) be spoken to over plain HTTP.
func nameOptions(ref string) []name.Option {
	if host, _, _ := strings.Cut(ref, "/"); registry.Loopback(host) {
		return []name.Option{name.Insecure}
	}
	return nil
}
