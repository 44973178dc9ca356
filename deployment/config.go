package deployment

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// The environment variables the functions read, as the CDK stack sets them (infra's contract test reads these
// constants). HealthWatch, HealthPoll, ProvisioningTimeout and LOG_LEVEL are tuning knobs the stack leaves at their
// defaults.
const (
	SettingCluster              = "CLUSTER"
	SettingModelBucket          = "MODEL_BUCKET"
	SettingModelPrefix          = "MODEL_PREFIX"
	SettingGPUInstanceTypes     = "GPU_INSTANCE_TYPES"
	SettingGPUCapacityProviders = "GPU_CAPACITY_PROVIDERS"
	SettingGPUVolumeGiB         = "GPU_VOLUME_GIB"
	SettingDevTTL               = "DEV_TTL"
	SettingPolicy               = "POLICY"
	SettingCPUTaskDefinition    = "CPU_TASK_DEFINITION"
	SettingGPUTaskDefinition    = "GPU_TASK_DEFINITION"
	SettingSubnets              = "SUBNETS"
	SettingSecurityGroups       = "SECURITY_GROUPS"
	SettingHealthTimeout        = "HEALTH_TIMEOUT"
	SettingHealthWatch          = "HEALTH_WATCH"
	SettingHealthPoll           = "HEALTH_POLL"
	SettingProvisioningTimeout  = "PROVISIONING_TIMEOUT"
	SettingOllamaPort           = "OLLAMA_PORT"
	SettingScheduleGroup        = "SCHEDULE_GROUP"
	SettingSchedulerRoleArn     = "SCHEDULER_ROLE_ARN"
	SettingStateMachineArn      = "STATE_MACHINE_ARN"
	SettingListenerArn          = "LISTENER_ARN"
	SettingLoadBalancerName     = "LOAD_BALANCER_NAME"
	SettingEndpointBase         = "ENDPOINT_BASE"
	SettingVpcID                = "VPC_ID"
	SettingAPIKeys              = "API_KEYS"
	SettingKeyPrefix            = "KEY_PREFIX"
	SettingIdleWindow           = "IDLE_WINDOW"
	SettingMaxLifetime          = "MAX_LIFETIME"
	SettingStopFunctionArn      = "STOP_FUNCTION_ARN"
	SettingScaleTarget          = "SCALE_TARGET_REQUESTS"
	SettingWakerTargetGroup     = "WAKER_TARGET_GROUP"
	SettingSleepPrefix          = "SLEEP_PREFIX"
	SettingWakesPerDay          = "WAKES_PER_DAY"
	SettingUploadDefaults       = "UPLOAD_DEFAULTS"
	SettingModelRegistry        = "MODEL_REGISTRY"
	SettingModelCacheDir        = "MODEL_CACHE_DIR"
	SettingImageRepository      = "MODEL_IMAGE_REPOSITORY"
	SettingOllamaImage          = "OLLAMA_IMAGE"
	SettingImageMaxGiB          = "MODEL_IMAGE_MAX_GIB"
	SettingImageLockPrefix      = "IMAGE_LOCK_PREFIX"
)

// DefaultImageMaxGiB is the largest model the image builder bakes by default. The builder is a Lambda (15 minutes
// at most) streaming the model from its registry to ECR, never to memory or disk; at a conservative 60 MB/s,
// 30 GiB takes under 9 minutes, leaving room for the base image's mirror and a slow registry.
const DefaultImageMaxGiB = 30

// Config is every setting a step reads: on Lambda from the environment the CDK stack sets (ConfigFromEnv), in local
// mode from the local stack. DefaultConfig holds the defaults both start from.
type Config struct {
	Cluster     string
	ModelBucket string
	ModelPrefix string
	// GPUInstanceTypes are the GPU types the cluster has capacity for; Providers maps each to its capacity provider.
	GPUInstanceTypes []string
	Providers        map[string]string
	// GPUVolumeGiB is the GPU instances' root volume, which holds an EC2 task's image and model (0: the planner's
	// default, the stack's launch template).
	GPUVolumeGiB int
	DevTTL       time.Duration
	Policy       string
	// CPUTaskDefinition and GPUTaskDefinition are the two task definition families (or ARNs).
	CPUTaskDefinition string
	GPUTaskDefinition string
	Subnets           []string
	SecurityGroups    []string
	// HealthTimeout bounds the wait for a healthy deployment; one poll watches a task close to ready for
	// HealthWatch, every HealthPoll.
	HealthTimeout time.Duration
	HealthWatch   time.Duration
	HealthPoll    time.Duration
	// ProvisioningTimeout bounds a task's wait in PROVISIONING for a GPU instance (see DefaultProvisioningTimeout).
	ProvisioningTimeout time.Duration
	// OllamaPort is where Ollama listens in the task (the task definition's container port).
	OllamaPort       int
	ScheduleGroup    string
	SchedulerRoleArn string
	// StateMachineArn is the deploy state machine, which the teardown function starts to restart a deployment.
	StateMachineArn string
	// ListenerArn is the load balancer's listener that holds every deployment's rules; LoadBalancerName its
	// CloudWatch dimension (app/<name>/<id>); EndpointBase the URL clients reach it at; VpcID where the target
	// groups are. An empty ListenerArn means a stack without a load balancer.
	ListenerArn      string
	LoadBalancerName string
	EndpointBase     string
	VpcID            string
	// APIKeys puts every deployment behind an API key unless its request says otherwise; the keys are SSM
	// parameters under KeyPrefix.
	APIKeys   bool
	KeyPrefix string
	// IdleWindow is how far back auto-stop looks for requests: a deployment used within it is not stopped yet but
	// looked at again one window later, up to MaxLifetime from its start.
	IdleWindow  time.Duration
	MaxLifetime time.Duration
	// StopFunctionArn is the function an auto-stop schedule invokes (the teardown function).
	StopFunctionArn string
	// ScaleTargetRequests is the requests per minute per task a prod service's target tracking holds.
	ScaleTargetRequests int
	// WakerTargetGroup is the load balancer's target group of the waker function, where a sleeping deployment's
	// rules forward (empty: deployments do not sleep); SleepPrefix is where the sleep records are; WakesPerDay
	// caps one deployment's wakes.
	WakerTargetGroup string
	SleepPrefix      string
	WakesPerDay      int
	// UploadDefaults are the required performance and ranking of a deployment an S3 upload starts (an upload
	// carries no request).
	UploadDefaults events.Requirements
	// ModelRegistry is the registry host a model the catalog does not list is resolved against (registry.ollama.ai,
	// or a private mirror); ModelCacheDir keeps the models sized from it, by digest.
	ModelRegistry string
	ModelCacheDir string
	// ImageRepository is the image repository (ECR) model images are built in, HOST/PATH; empty builds none (tasks
	// pull their model at start). OllamaImage is the pinned Ollama image they are built on, mirrored into the
	// repository once. ImageMaxGiB is the largest model the builder bakes: above it a task pulls at start.
	// ImageLockPrefix names the SSM parameters that let one build of a model run at a time.
	ImageRepository string
	OllamaImage     string
	ImageMaxGiB     int
	ImageLockPrefix string
}

// SpotInstanceTypes are the GPU types with a Spot capacity provider (a Providers key with planner's Spot suffix), never
// nil: a stack without any has no Spot GPU capacity.
func (c Config) SpotInstanceTypes() []string {
	types := []string{}
	for k := range c.Providers {
		if t, ok := strings.CutSuffix(k, planner.SpotProviderSuffix); ok {
			types = append(types, t)
		}
	}
	slices.Sort(types)
	return types
}

// DefaultConfig is every default, the one place they are written.
func DefaultConfig() Config {
	return Config{
		ModelPrefix: "models/", Providers: map[string]string{}, DevTTL: 2 * time.Hour, Policy: "cost",
		CPUTaskDefinition: "ollama-cpu", GPUTaskDefinition: "ollama-gpu",
		HealthTimeout: 30 * time.Minute, HealthWatch: 20 * time.Second, HealthPoll: time.Second,
		ProvisioningTimeout: DefaultProvisioningTimeout, OllamaPort: OllamaPort, ScheduleGroup: "ollama-ecs",
		KeyPrefix: "/ollama-ecs/keys", IdleWindow: 30 * time.Minute, MaxLifetime: 12 * time.Hour, ScaleTargetRequests: 12,
		SleepPrefix: "/ollama-ecs/sleep", WakesPerDay: DefaultWakesPerDay,
		ModelRegistry: "registry.ollama.ai", ModelCacheDir: filepath.Join(os.TempDir(), "ollama-ecs-models"),
		ImageMaxGiB: DefaultImageMaxGiB, ImageLockPrefix: "/ollama-ecs/image-builds",
	}
}

// ConfigFromEnv reads Config from the environment over DefaultConfig; a malformed value is an error, a missing one
// keeps its default.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	str := func(key string, into *string) { *into = cmp.Or(getenv(key), *into) }
	str(SettingCluster, &c.Cluster)
	str(SettingModelBucket, &c.ModelBucket)
	str(SettingModelPrefix, &c.ModelPrefix)
	str(SettingPolicy, &c.Policy)
	str(SettingModelRegistry, &c.ModelRegistry)
	str(SettingModelCacheDir, &c.ModelCacheDir)
	str(SettingImageRepository, &c.ImageRepository)
	str(SettingOllamaImage, &c.OllamaImage)
	str(SettingImageLockPrefix, &c.ImageLockPrefix)
	str(SettingCPUTaskDefinition, &c.CPUTaskDefinition)
	str(SettingGPUTaskDefinition, &c.GPUTaskDefinition)
	str(SettingScheduleGroup, &c.ScheduleGroup)
	str(SettingSchedulerRoleArn, &c.SchedulerRoleArn)
	str(SettingStateMachineArn, &c.StateMachineArn)
	str(SettingListenerArn, &c.ListenerArn)
	str(SettingLoadBalancerName, &c.LoadBalancerName)
	str(SettingEndpointBase, &c.EndpointBase)
	str(SettingVpcID, &c.VpcID)
	str(SettingKeyPrefix, &c.KeyPrefix)
	str(SettingStopFunctionArn, &c.StopFunctionArn)
	str(SettingWakerTargetGroup, &c.WakerTargetGroup)
	str(SettingSleepPrefix, &c.SleepPrefix)
	switch v := getenv(SettingAPIKeys); v {
	case "", "off":
	case "on":
		c.APIKeys = true
	default:
		return c, fmt.Errorf("%s=%q: want on or off", SettingAPIKeys, v)
	}
	c.GPUInstanceTypes = list(getenv(SettingGPUInstanceTypes))
	c.Subnets = list(getenv(SettingSubnets))
	c.SecurityGroups = list(getenv(SettingSecurityGroups))
	for _, n := range []struct {
		env  string
		min  int
		into *int
	}{{SettingOllamaPort, 1, &c.OllamaPort}, {SettingGPUVolumeGiB, 1, &c.GPUVolumeGiB}, {SettingScaleTarget, 1, &c.ScaleTargetRequests}, {SettingWakesPerDay, 1, &c.WakesPerDay}, {SettingImageMaxGiB, 1, &c.ImageMaxGiB}} {
		if v := getenv(n.env); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil || i < n.min || (n.env == SettingOllamaPort && i > 65535) {
				return c, fmt.Errorf("%s=%q is not a valid number", n.env, v)
			}
			*n.into = i
		}
	}
	if v := getenv(SettingUploadDefaults); v != "" {
		r, err := events.ParseRequirements(v)
		if err != nil {
			return c, fmt.Errorf("%s=%q: %w", SettingUploadDefaults, v, err)
		}
		c.UploadDefaults = r
	}
	for _, kv := range list(getenv(SettingGPUCapacityProviders)) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return c, fmt.Errorf("%s entry %q is not type=provider", SettingGPUCapacityProviders, kv)
		}
		c.Providers[k] = v
	}
	for _, d := range []struct {
		env  string
		into *time.Duration
	}{{SettingDevTTL, &c.DevTTL}, {SettingHealthTimeout, &c.HealthTimeout}, {SettingHealthWatch, &c.HealthWatch},
		{SettingHealthPoll, &c.HealthPoll}, {SettingProvisioningTimeout, &c.ProvisioningTimeout},
		{SettingIdleWindow, &c.IdleWindow}, {SettingMaxLifetime, &c.MaxLifetime}} {
		if v := getenv(d.env); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed <= 0 {
				return c, fmt.Errorf("%s=%q is not a positive duration", d.env, v)
			}
			*d.into = parsed
		}
	}
	return c, nil
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// NewLogger is the JSON logger every function writes to (CloudWatch Logs on AWS).
func NewLogger() *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("LOG_LEVEL") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Boot reads the environment and the AWS SDK configuration every function's main starts from.
func Boot(context.Context) (Config, aws.Config, *slog.Logger, error) {
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		return cfg, aws.Config{}, nil, err
	}
	awsCfg, err := LambdaAWSConfig(os.Getenv)
	return cfg, awsCfg, NewLogger(), err
}

// LambdaAWSConfig is the SDK configuration of a function on Lambda, which puts the execution role's credentials
// and the region in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION).
// Reading them directly, instead of the SDK's whole default chain (shared files, SSO, STS, IMDS), keeps about
// 1.8 MB of code out of every binary; the clients keep the SDK's standard retryer and HTTP client.
func LambdaAWSConfig(getenv func(string) string) (aws.Config, error) {
	region, key, secret := getenv("AWS_REGION"), getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
	if region == "" || key == "" || secret == "" {
		return aws.Config{}, fmt.Errorf("AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set, as Lambda sets them")
	}
	return aws.Config{
		Region:      region,
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(key, secret, getenv("AWS_SESSION_TOKEN"))),
	}, nil
}
