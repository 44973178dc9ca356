package modelimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
	localreg "github.com/ollama-ecs/ollama-ecs/local/registry"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/test/moto"
)

// fixture is the step on a registry that holds a tiny model (library/tiny:v1) and the Ollama image's stand-in,
// with the local cluster's task definitions and parameters.
type fixture struct {
	step  *Ensure
	reg   *localreg.Server
	ecs   *cloud.ECS
	locks *cloud.Parameters
	now   time.Time
	size  int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	reg, err := localreg.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	gguf, err := tinymodel.Bytes(tinymodel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Push(ctx, "library/tiny", "v1", []localreg.Layer{{MediaType: registry.MediaModel, Data: gguf}}, nil); err != nil {
		t.Fatal(err)
	}
	base, err := reg.PushOllamaImage(ctx, "0.0.0-test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := cloud.NewECS(cloud.ECSOptions{Runner: nopRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	f := &fixture{reg: reg, ecs: e, locks: cloud.NewParameters(), now: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), size: int64(len(gguf))}
	f.step = &Ensure{Models: registry.NewClient(reg.Host, ""), Repository: reg.Host + "/ollama-ecs/models", OllamaImage: base,
		MaxBytes: 1 << 30, TaskDefinitions: e, CPUTaskDefinition: "ollama-cpu", GPUTaskDefinition: "ollama-gpu",
		Locks: f.locks, LockPrefix: "/ollama-ecs/image-builds", Now: func() time.Time { return f.now }}
	return f
}

// mirror is where the fixture's Ollama image is mirrored: REPOSITORY:ollama-HASH8-0.0.0-test (a repository other
// than Docker Hub's ollama/ollama).
func (f *fixture) mirror(t *testing.T) string {
	t.Helper()
	ref, err := name.ParseReference(f.step.OllamaImage, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tag := mirrorTag(ref)
	if !strings.HasPrefix(tag, "ollama-") || !strings.HasSuffix(tag, "-0.0.0-test") || len(tag) != len("ollama-12345678-0.0.0-test") {
		t.Fatalf("mirror tag %s, want ollama-HASH8-0.0.0-test", tag)
	}
	return f.step.Repository + ":" + tag
}

type nopRunner struct{}

func (nopRunner) Start(context.Context, cloud.Container) (cloud.Process, error) {
	return nil, errors.New("no tasks in this test")
}

func state(source, execution string) deployment.State {
	return deployment.State{Request: &deployment.Request{DeploymentID: "d", ExecutionName: execution, ModelName: "tiny", Source: source}}
}

// TestEnsureBuildsOnceAndReuses: the first call builds the image and registers the two task definitions; the
// second finds both and registers nothing.
func TestEnsureBuildsOnceAndReuses(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := "ollama://" + f.reg.Host + "/library/tiny:v1"
	first, err := f.step.Handle(ctx, state(src, "x1"))
	if err != nil || !first.Built || first.TaskDefinitions == nil || !strings.HasPrefix(first.Image, f.step.Repository+":sha256-") {
		t.Fatalf("first: %+v %v", first, err)
	}
	second, err := f.step.Handle(ctx, state(src, "x2"))
	if err != nil || second.Built || second.Image != first.Image || *second.TaskDefinitions != *first.TaskDefinitions {
		t.Errorf("second: %+v %v, want the first's image and task definitions, not built", second, err)
	}
	for _, td := range []string{first.TaskDefinitions.CPU, first.TaskDefinitions.GPU} {
		if !strings.HasSuffix(td, ":1") {
			t.Errorf("task definition %s: want revision 1 (registered once)", td)
		}
		out, err := f.ecs.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(td)})
		if err != nil || len(out.TaskDefinition.ContainerDefinitions) != 2 || aws.ToString(out.TaskDefinition.ContainerDefinitions[0].Image) != first.Image {
			t.Errorf("%s: %v, want the base's two containers with the ollama one on %s", td, err, first.Image)
		}
	}
	// The Ollama image was mirrored into the repository under its version.
	if ok, err := f.step.exists(f.mirror(t), nil); !ok || err != nil {
		t.Errorf("mirror of the Ollama image: %v %v", ok, err)
	}
	if out, _ := f.locks.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String(f.step.LockPrefix), Recursive: aws.Bool(true)}); len(out.Parameters) != 0 {
		t.Errorf("locks left: %+v", out.Parameters)
	}
}

// TestEnsurePullsAtStart: where no model image is built, the state says why, and the task still runs the Ollama
// image's mirror in the repository (copies of the stack's task definitions on it), never Docker Hub's; a stack
// without a repository runs its own task definitions.
func TestEnsurePullsAtStart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := "ollama://" + f.reg.Host + "/library/tiny:v1"
	noRepo := *f.step
	noRepo.Repository = ""
	tooBig := *f.step
	tooBig.MaxBytes = f.size / 2
	mirror := f.mirror(t)
	family := strings.ReplaceAll(strings.TrimPrefix(mirror, f.step.Repository+":"), ".", "-")
	for _, c := range []struct {
		name   string
		step   *Ensure
		source string
		want   string
	}{
		{"no repository", &noRepo, src, "no model image repository"},
		{"an upload", f.step, "s3://bucket/models/tiny.gguf", "fetch container"},
		{"above the builder's limit", &tooBig, src, "above the 0 GiB the image builder bakes"},
		{"no manifest", f.step, "ollama://" + f.reg.Host + "/library/gone:v1", "manifest could not be read"},
	} {
		got, err := c.step.Handle(ctx, state(c.source, "x"))
		if err != nil || got.Built || !strings.Contains(got.PullAtStart, c.want) {
			t.Errorf("%s: %+v %v, want pull at start: %q", c.name, got, err, c.want)
			continue
		}
		if c.step.Repository == "" {
			if got.TaskDefinitions != nil || got.Image != "" {
				t.Errorf("%s: %+v, want the stack's own task definitions", c.name, got)
			}
			continue
		}
		if got.Image != mirror || got.TaskDefinitions == nil || !strings.Contains(got.TaskDefinitions.CPU, "task-definition/ollama-cpu-"+family+":1") ||
			!strings.Contains(got.TaskDefinitions.GPU, "task-definition/ollama-gpu-"+family+":1") {
			t.Errorf("%s: %+v, want the mirror %s and its task definitions (revision 1, registered once)", c.name, got, mirror)
		}
	}
}

// TestEnsureLock: a build another execution started less than LockTTL ago makes the step wait (the state machine
// retries it); this execution's own lock (from an attempt that died) is taken over, and so is one older than LockTTL
// (a builder that died).
func TestEnsureLock(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	lockOf := func(ref string) string {
		_, raw, r, err := f.step.Models.Manifest(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		return f.step.LockPrefix + "/" + Tag(r, raw)
	}
	hold := func(lock, who string, at time.Time) {
		if _, err := f.locks.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(lock), Value: aws.String(who + " " + at.Format(time.RFC3339)),
			Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
	}
	ref := f.reg.Host + "/library/tiny:v1"
	hold(lockOf(ref), "other", f.now.Add(-time.Minute))
	_, err := f.step.Handle(ctx, state("ollama://"+ref, "mine"))
	var busy *deployment.ImageBuildInProgressError
	if !errors.As(err, &busy) || busy.Holder != "other" {
		t.Fatalf("a fresh lock of another execution: %v, want ImageBuildInProgressError naming it", err)
	}
	hold(lockOf(ref), "mine", f.now.Add(-time.Minute))
	if got, err := f.step.Handle(ctx, state("ollama://"+ref, "mine")); err != nil || !got.Built {
		t.Fatalf("this execution's own lock: %+v %v, want a build", got, err)
	}
	// Another model whose builder died 25 minutes ago.
	other, err := tinymodel.Bytes(tinymodel.Options{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Push(ctx, "library/tiny", "v2", []localreg.Layer{{MediaType: registry.MediaModel, Data: other}}, nil); err != nil {
		t.Fatal(err)
	}
	ref2 := f.reg.Host + "/library/tiny:v2"
	hold(lockOf(ref2), "dead", f.now.Add(-25*time.Minute))
	if got, err := f.step.Handle(ctx, state("ollama://"+ref2, "late")); err != nil || !got.Built {
		t.Errorf("an expired lock: %+v %v, want it taken over and the image built", got, err)
	}
}

func hex8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

func TestMirrorTag(t *testing.T) {
	for in, want := range map[string]string{
		"ollama/ollama:0.17.4":                  "ollama-0.17.4",
		"docker.io/ollama/ollama:0.17.4":        "ollama-0.17.4",
		"ghcr.io/example/ollama-patched:0.17.4": "ollama-" + hex8("ghcr.io/example/ollama-patched") + "-0.17.4",
		"docker.io/ollama/ollama@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": "ollama-sha256-0123456789ab",
	} {
		ref, err := name.ParseReference(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := mirrorTag(ref); got != want {
			t.Errorf("mirrorTag(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestECRKeychainAgainstMoto: the keychain signs in to the repository's registry with ECR's token (decoded to
// user and password) and stays anonymous elsewhere (Docker Hub, for the Ollama image).
func TestECRKeychainAgainstMoto(t *testing.T) {
	srv := moto.Start(t)
	kc := &ECRKeychain{Tokens: ecr.NewFromConfig(srv.Config()), Host: "123456789012.dkr.ecr.us-east-1.amazonaws.com"}
	repo, _ := name.NewRepository(kc.Host + "/ollama-ecs-models")
	auth, err := kc.Resolve(repo)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := auth.Authorization()
	if err != nil || cfg.Username != "AWS" || cfg.Password == "" {
		t.Errorf("ECR sign-in: %+v %v, want user AWS and the token's password", cfg, err)
	}
	hub, _ := name.NewRepository("ollama/ollama")
	if auth, err := kc.Resolve(hub); err != nil || auth != authn.Anonymous {
		t.Errorf("Docker Hub: %v %v, want anonymous", auth, err)
	}
}

// TestEnsureImageSideFailuresPullAtStart: what goes wrong on the image side does not fail the deployment: an Ollama
// image that cannot be mirrored, or a build that outlasts the function (then the model is marked, and its next
// deployments pull at start at once, for UnbakeableFor).
func TestEnsureImageSideFailuresPullAtStart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := "ollama://" + f.reg.Host + "/library/tiny:v1"
	noBase := *f.step
	noBase.OllamaImage = f.reg.Host + "/ollama/ollama:nosuch"
	got, err := noBase.Handle(ctx, state(src, "x"))
	if err != nil || got.TaskDefinitions != nil || !strings.Contains(got.PullAtStart, "the Ollama image could not be mirrored") {
		t.Errorf("no Ollama image: %+v %v, want pull at start on the stack's task definitions", got, err)
	}

	slow := *f.step
	slow.BuildMargin = time.Hour // the function's deadline is an hour away: no time left to build
	deadline, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	got, err = slow.Handle(deadline, state(src, "x"))
	if err != nil || got.Built || !strings.Contains(got.PullAtStart, "did not finish within the function's time") || got.TaskDefinitions == nil {
		t.Fatalf("a build out of time: %+v %v, want pull at start on the mirror", got, err)
	}
	got, err = f.step.Handle(ctx, state(src, "y"))
	if err != nil || got.Built || !strings.Contains(got.PullAtStart, "tried again after") {
		t.Errorf("after a build out of time: %+v %v, want pull at start at once", got, err)
	}
	f.now = f.now.Add(UnbakeableFor + time.Minute)
	if got, err := f.step.Handle(ctx, state(src, "z")); err != nil || !got.Built {
		t.Errorf("a day later: %+v %v, want the build tried again", got, err)
	}
}

// TestEnsureFollowsTheStack: a model image's task definitions are the stack's with the image: when the stack's
// definition changes (a new entry script, a new role), the next deployment registers a new revision.
func TestEnsureFollowsTheStack(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := "ollama://" + f.reg.Host + "/library/tiny:v1"
	first, err := f.step.Handle(ctx, state(src, "x1"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := f.ecs.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String("ollama-cpu")})
	if err != nil {
		t.Fatal(err)
	}
	updated := deployment.CopyTaskDefinition(base.TaskDefinition, "ollama-cpu")
	updated.TaskRoleArn = aws.String("arn:aws:iam::111122223333:role/replaced")
	if _, err := f.ecs.RegisterTaskDefinition(ctx, updated); err != nil {
		t.Fatal(err)
	}
	second, err := f.step.Handle(ctx, state(src, "x2"))
	if err != nil || second.TaskDefinitions.CPU == first.TaskDefinitions.CPU || !strings.HasSuffix(second.TaskDefinitions.CPU, ":2") ||
		second.TaskDefinitions.GPU != first.TaskDefinitions.GPU {
		t.Errorf("after the stack's CPU definition changed: %+v %v, want a second CPU revision and the same GPU one (was %+v)", second.TaskDefinitions, err, first.TaskDefinitions)
	}
}
