package steps

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// Clients are the AWS ports the steps call: the SDK's clients on Lambda (see the handlers below), the local cloud
// in local mode. A step whose port is nil is not called.
type Clients struct {
	S3          deployment.ObjectReader
	ECS         deployment.ECSAPI
	AutoScaling deployment.AutoScalingGroups
	Quotas      deployment.ServiceQuotas
	EC2         deployment.EC2Instances
	Scheduler   deployment.Schedules
	Executions  deployment.Executions
	LB          deployment.LoadBalancer
	Metrics     deployment.Metrics
	Services    deployment.Services
	Scaling     deployment.Scaling
	Parameters  deployment.Parameters
}

// Set is every step and the teardown function, configured.
type Set struct {
	Validate  *Validate
	Configure *Configure
	Capacity  *Capacity
	RunTask   *RunTask
	Health    *Health
	AutoStop  *AutoStop
	Cleanup   *Cleanup
	Teardown  *Teardown
	// Waker is the load balancer's target for sleeping deployments (nil without a load balancer).
	Waker *Waker
}

// Build configures every step from one Config and the clients. Each function's main and the local stack both
// build their steps here, so a default or a wiring can never differ between AWS and local mode; local mode then
// replaces only what is local by nature (how a task's endpoint is found, the clock, the GPU rule's verdict).
func Build(cfg deployment.Config, c Clients, log *slog.Logger) *Set {
	launches := &Launches{ECS: c.ECS, Groups: c.AutoScaling, Quotas: c.Quotas, Instances: c.EC2}
	var router *Router
	if cfg.ListenerArn != "" && c.LB != nil {
		router = &Router{LB: c.LB, Keys: c.Parameters, ListenerArn: cfg.ListenerArn, VpcID: cfg.VpcID,
			BaseURL: cfg.EndpointBase, KeyPrefix: cfg.KeyPrefix, Port: cfg.OllamaPort,
			WakerTargetGroup: cfg.WakerTargetGroup, SleepPrefix: cfg.SleepPrefix}
	}
	var usage *UsageReader
	if c.Metrics != nil && cfg.LoadBalancerName != "" {
		usage = &UsageReader{Metrics: c.Metrics, LoadBalancer: cfg.LoadBalancerName}
	}
	var services *ServiceRunner
	if router != nil && c.Services != nil {
		services = &ServiceRunner{Services: c.Services, Scaling: c.Scaling, Cluster: cfg.Cluster, LoadBalancer: cfg.LoadBalancerName,
			TargetRequests: cfg.ScaleTargetRequests}
	}
	stopper := &deployment.Stopper{ECS: c.ECS, Scheduler: c.Scheduler, Cluster: cfg.Cluster, Group: cfg.ScheduleGroup, Log: log}
	if router != nil {
		stopper.Routes = router
	}
	if services != nil {
		stopper.Services = services
	}
	var waker *Waker
	if router != nil {
		waker = &Waker{Router: router, Executions: c.Executions, StateMachineArn: cfg.StateMachineArn, WakesPerDay: cfg.WakesPerDay, Log: log}
	}
	return &Set{
		Waker: waker,
		Validate: &Validate{Catalog: catalog.Default(), Models: registry.NewClient(cfg.ModelRegistry, cfg.ModelCacheDir),
			S3: c.S3, Bucket: cfg.ModelBucket, Prefix: cfg.ModelPrefix,
			UploadDefaults: cfg.UploadDefaults, Log: log},
		Configure: &Configure{Catalog: catalog.Default(), GPUInstanceTypes: cfg.GPUInstanceTypes,
			GPUSpotInstanceTypes: cfg.SpotInstanceTypes(), DevTTL: cfg.DevTTL,
			DefaultPolicy: cfg.Policy, GPUVolumeGiB: cfg.GPUVolumeGiB, Log: log},
		Capacity: &Capacity{ECS: c.ECS, Launches: launches, Cluster: cfg.Cluster, Providers: cfg.Providers, Log: log},
		RunTask: &RunTask{ECS: c.ECS, Cluster: cfg.Cluster, CPUTaskDefinition: cfg.CPUTaskDefinition,
			GPUTaskDefinition: cfg.GPUTaskDefinition, Subnets: cfg.Subnets,
			SecurityGroups: cfg.SecurityGroups, Providers: cfg.Providers, Router: router, APIKeys: cfg.APIKeys, Services: services, Log: log},
		Health: &Health{ECS: c.ECS, Cluster: cfg.Cluster, Endpoint: PrivateEndpoint(cfg.OllamaPort),
			HTTP: &http.Client{Timeout: 5 * time.Second}, Timeout: cfg.HealthTimeout, Watch: cfg.HealthWatch,
			PollInterval: cfg.HealthPoll, ProvisioningTimeout: cfg.ProvisioningTimeout, Launches: launches, Router: router, Services: services, Log: log},
		AutoStop: &AutoStop{Scheduler: c.Scheduler, ECS: c.ECS, Cluster: cfg.Cluster, Group: cfg.ScheduleGroup,
			RoleArn: cfg.SchedulerRoleArn, StopFunctionArn: cfg.StopFunctionArn, IdleWindow: cfg.IdleWindow, MaxLifetime: cfg.MaxLifetime, Log: log},
		Cleanup: &Cleanup{Stopper: stopper},
		Teardown: &Teardown{Stopper: stopper, Interrupted: &Interrupted{Stopper: stopper, Tags: c.ECS,
			Executions: c.Executions, StateMachineArn: cfg.StateMachineArn}, Usage: usage},
	}
}

// Start is every function's main: read the configuration Lambda's environment holds, and serve the handler that
// handler builds on the SDK's clients.
func Start(name string, handler func(cfg deployment.Config, awsCfg aws.Config, log *slog.Logger) any) {
	cfg, awsCfg, log, err := deployment.Boot(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	lambda.Start(handler(cfg, awsCfg, log))
}

// The handlers of the Lambda functions. Each builds the steps with Build, but creates only the SDK clients its
// step calls: a client created is linked into the binary, and creating every one would take each binary past
// 10 MB.

// handlerClients are the SDK clients each function's step calls (and no others: each one created is linked into
// that function's binary).
func handlerClients(name string, a aws.Config) Clients {
	switch name {
	case "validate":
		return Clients{S3: s3.NewFromConfig(a)}
	case "capacity":
		return Clients{ECS: ecs.NewFromConfig(a), AutoScaling: autoscaling.NewFromConfig(a), Quotas: servicequotas.NewFromConfig(a),
			EC2: ec2.NewFromConfig(a)}
	case "runtask":
		e := ecs.NewFromConfig(a)
		return Clients{ECS: e, Services: e, LB: elbv2.NewFromConfig(a), Parameters: ssm.NewFromConfig(a), Scaling: applicationautoscaling.NewFromConfig(a)}
	case "health":
		e := ecs.NewFromConfig(a)
		return Clients{ECS: e, Services: e, AutoScaling: autoscaling.NewFromConfig(a), LB: elbv2.NewFromConfig(a), Parameters: ssm.NewFromConfig(a)}
	case "autostop":
		return Clients{ECS: ecs.NewFromConfig(a), Scheduler: scheduler.NewFromConfig(a)}
	case "cleanup":
		e := ecs.NewFromConfig(a)
		return Clients{ECS: e, Services: e, Scheduler: scheduler.NewFromConfig(a), LB: elbv2.NewFromConfig(a), Parameters: ssm.NewFromConfig(a),
			Scaling: applicationautoscaling.NewFromConfig(a)}
	case "teardown":
		e := ecs.NewFromConfig(a)
		return Clients{ECS: e, Services: e, Scheduler: scheduler.NewFromConfig(a), Executions: sfn.NewFromConfig(a), LB: elbv2.NewFromConfig(a),
			Parameters: ssm.NewFromConfig(a), Metrics: cloudwatch.NewFromConfig(a), Scaling: applicationautoscaling.NewFromConfig(a)}
	case "waker":
		return Clients{LB: elbv2.NewFromConfig(a), Parameters: ssm.NewFromConfig(a), Executions: sfn.NewFromConfig(a)}
	}
	return Clients{} // configure calls no AWS service
}

func ValidateHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("validate", a), log).Validate.Handle
}

func ConfigureHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("configure", a), log).Configure.Handle
}

func CapacityHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("capacity", a), log).Capacity.Handle
}

func RunTaskHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("runtask", a), log).RunTask.Handle
}

func HealthHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("health", a), log).Health.Handle
}

func AutoStopHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("autostop", a), log).AutoStop.Handle
}

func CleanupHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("cleanup", a), log).Cleanup.Handle
}

func WakerHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("waker", a), log).Waker.Handle
}

func TeardownHandler(cfg deployment.Config, a aws.Config, log *slog.Logger) any {
	return Build(cfg, handlerClients("teardown", a), log).Teardown.Handle
}
