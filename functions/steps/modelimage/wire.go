package modelimage

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// New configures the step from the stack's configuration: the Lambda's and the local stack's one wiring.
func New(cfg deployment.Config, tds TaskDefinitions, locks deployment.Parameters, kc authn.Keychain, log *slog.Logger) *Ensure {
	return &Ensure{
		Models: registry.NewClient(cfg.ModelRegistry, cfg.ModelCacheDir), Repository: cfg.ImageRepository,
		OllamaImage: cfg.OllamaImage, MaxBytes: int64(cfg.ImageMaxGiB) << 30,
		TaskDefinitions: tds, CPUTaskDefinition: cfg.CPUTaskDefinition, GPUTaskDefinition: cfg.GPUTaskDefinition,
		Locks: locks, LockPrefix: cfg.ImageLockPrefix, Keychain: kc, Log: log,
	}
}

// Start is the image function's main: the step on the SDK's clients, authenticated to ECR.
func Start() {
	cfg, awsCfg, log, err := deployment.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	host, _, _ := strings.Cut(cfg.ImageRepository, "/")
	kc := &ECRKeychain{Tokens: ecr.NewFromConfig(awsCfg), Host: host}
	lambda.Start(New(cfg, ecs.NewFromConfig(awsCfg), ssm.NewFromConfig(awsCfg), kc, log).Handle)
}

// ECRTokens is the part of ECR that issues registry credentials.
type ECRTokens interface {
	GetAuthorizationToken(ctx context.Context, in *ecr.GetAuthorizationTokenInput, opts ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error)
}

// ECRKeychain signs in to the ECR registry Host with an authorization token (user AWS, valid 12 hours; it is
// kept until 10 minutes before it expires); every other registry (Docker Hub, for the Ollama image) is anonymous.
type ECRKeychain struct {
	Tokens ECRTokens
	Host   string

	mu      sync.Mutex
	auth    authn.Authenticator
	expires time.Time
}

// Resolve implements authn.Keychain.
func (k *ECRKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() != k.Host {
		return authn.Anonymous, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.auth != nil && time.Until(k.expires) > 10*time.Minute {
		return k.auth, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := k.Tokens.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, deployment.AWSError("ecr:GetAuthorizationToken", err)
	}
	if len(out.AuthorizationData) == 0 {
		return nil, fmt.Errorf("ecr:GetAuthorizationToken returned no token")
	}
	data := out.AuthorizationData[0]
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(data.AuthorizationToken))
	if err != nil {
		return nil, fmt.Errorf("ecr:GetAuthorizationToken: token is not base64: %w", err)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return nil, fmt.Errorf("ecr:GetAuthorizationToken: token is not USER:PASSWORD")
	}
	k.auth = &authn.Basic{Username: user, Password: pass}
	k.expires = time.Now().Add(time.Hour)
	if data.ExpiresAt != nil {
		k.expires = *data.ExpiresAt
	}
	return k.auth, nil
}
