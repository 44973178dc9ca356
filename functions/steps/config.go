package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Config is every setting a step reads from its Lambda environment (the names the CDK stack sets).
type Config struct {
	Cluster           string
	ModelBucket       string
	ModelPrefix       string
	GPUInstanceTypes  []string
	DevTTL            time.Duration
	Policy            string
	Providers         map[string]string
	CPUTaskDefinition string
	GPUTaskDefinition string
	Subnets           []string
	SecurityGroups    []string
	// ModelTaskDefinitions maps a model with its own image (the seed's model-specific ECR images, which start
	// faster) to its CPU and GPU families.
	ModelTaskDefinitions map[string]TaskDefinitions
	HealthTimeout        time.Duration
	HealthWatch          time.Duration
	// GPUVolumeGiB is the GPU instances' root volume, which holds an EC2 task's image and model.
	GPUVolumeGiB int
	// ProvisioningTimeout bounds a task's wait in PROVISIONING for a GPU instance (see DefaultProvisioningTimeout).
	ProvisioningTimeout time.Duration
	// OllamaPort is where Ollama listens in the task (the task definition's container port).
	OllamaPort       int
	ScheduleGroup    string
	SchedulerRoleArn string
	// StateMachineArn is the deploy state machine, which the teardown function starts to restart a deployment.
	StateMachineArn string
}

// ConfigFromEnv reads Config with defaults; a malformed value is an error, a missing one takes its default.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		Cluster:           getenv("CLUSTER"),
		ModelBucket:       getenv("MODEL_BUCKET"),
		ModelPrefix:       or(getenv("MODEL_PREFIX"), "models/"),
		GPUInstanceTypes:  list(getenv("GPU_INSTANCE_TYPES")),
		Policy:            or(getenv("POLICY"), "cost"),
		Providers:         map[string]string{},
		CPUTaskDefinition: or(getenv("CPU_TASK_DEFINITION"), "ollama-cpu"),
		GPUTaskDefinition: or(getenv("GPU_TASK_DEFINITION"), "ollama-gpu"),
		Subnets:           list(getenv("SUBNETS")),
		SecurityGroups:    list(getenv("SECURITY_GROUPS")),
		ScheduleGroup:     or(getenv("SCHEDULE_GROUP"), "ollama-ecs"),
		SchedulerRoleArn:  getenv("SCHEDULER_ROLE_ARN"),
		StateMachineArn:   getenv("STATE_MACHINE_ARN"),
	}
	c.OllamaPort = OllamaPort
	if v := getenv("OLLAMA_PORT"); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			return c, fmt.Errorf("OLLAMA_PORT=%q is not a port", v)
		}
		c.OllamaPort = port
	}
	if v := getenv("GPU_VOLUME_GIB"); v != "" {
		gib, err := strconv.Atoi(v)
		if err != nil || gib < 1 {
			return c, fmt.Errorf("GPU_VOLUME_GIB=%q is not a positive number of GiB", v)
		}
		c.GPUVolumeGiB = gib
	}
	if raw := getenv("MODEL_TASK_DEFINITIONS"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &c.ModelTaskDefinitions); err != nil {
			return c, fmt.Errorf("MODEL_TASK_DEFINITIONS is not a JSON object of {\"cpu\",\"gpu\"} families: %w", err)
		}
	}
	for _, kv := range list(getenv("GPU_CAPACITY_PROVIDERS")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return c, fmt.Errorf("GPU_CAPACITY_PROVIDERS entry %q is not type=provider", kv)
		}
		c.Providers[k] = v
	}
	for _, d := range []struct {
		env  string
		def  time.Duration
		into *time.Duration
	}{{"DEV_TTL", 2 * time.Hour, &c.DevTTL}, {"HEALTH_TIMEOUT", 30 * time.Minute, &c.HealthTimeout}, {"HEALTH_WATCH", 20 * time.Second, &c.HealthWatch},
		{"PROVISIONING_TIMEOUT", DefaultProvisioningTimeout, &c.ProvisioningTimeout}} {
		*d.into = d.def
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
