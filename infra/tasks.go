package main

import (
	"fmt"
	"regexp"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecr"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

const (
	// CpuFamily and GpuFamily are the task-definition families RunTask uses
	// (and the only ones the runtask Lambda may run).
	CpuFamily = "ollama-cpu"
	GpuFamily = "ollama-gpu"
	// OllamaContainer and FetchContainer are the container names RunTask
	// overrides address.
	OllamaContainer = "ollama"
	FetchContainer  = "fetch"
	// Defaults match the seed's smallest CPU row (ml.m5.large: 2 vCPU, 8 GB);
	// RunTask overrides them per model.
	defaultCPU    = 2048
	defaultMemory = 8192
	// sourceDir is the volume the fetch container fills with an uploaded GGUF.
	sourceDir = "/models-source"
	// modelCacheHostPath is where a GPU instance keeps pulled models across
	// tasks; /root/.ollama is where the ollama image stores them.
	modelCacheHostPath = "/var/lib/ollama"
	modelCachePath     = "/root/.ollama"
)

// Tasks holds the task definitions and the two roles every task uses.
type Tasks struct {
	TaskRole      awsiam.Role
	ExecutionRole awsiam.Role
	Cpu           awsecs.FargateTaskDefinition
	Gpu           awsecs.Ec2TaskDefinition
	// Definitions lists every task definition: CPU, then GPU.
	Definitions []awsecs.TaskDefinition
	// ModelImages is the repository of the model images the "Ensure model image" step builds (the Ollama image
	// mirrored once, plus one image per model), and registers copies of Cpu and Gpu for, in the families
	// ollama-cpu-HEX12 and ollama-gpu-HEX12.
	ModelImages awsecr.Repository
}

// Families are the task-definition families tasks run: the stack's two, and the model images' copies of them.
func (t *Tasks) Families() []string {
	return []string{CpuFamily, GpuFamily, CpuFamily + "-*", GpuFamily + "-*"}
}

// NewTasks creates the CPU (Fargate) and GPU (EC2) task definitions and the
// model images' repository. Every definition (and every model image's copy)
// shares one task role (read
// the model prefix, nothing else) and one execution role, so the runtask
// Lambda passes exactly two roles.
func NewTasks(scope constructs.Construct, id string, s Settings, bucket awss3.IBucket) *Tasks {
	c := constructs.NewConstruct(scope, jsii.String(id))
	t := &Tasks{}

	t.TaskRole = awsiam.NewRole(c, jsii.String("TaskRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), nil),
		Description: jsii.String("ollama-ecs task: reads uploaded models under the model prefix"),
	})
	t.TaskRole.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:   jsii.Strings("s3:GetObject"),
		Resources: jsii.Strings(*bucket.ArnForObjects(jsii.String(s.ModelPrefix + "*"))),
	}))
	t.ExecutionRole = awsiam.NewRole(c, jsii.String("ExecutionRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), nil),
		Description: jsii.String("ollama-ecs task execution: image pulls and container logs"),
	})

	logGroup := awslogs.NewLogGroup(c, jsii.String("Logs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	images := &imageResolver{scope: c}
	fetchImage := images.resolve(s.FetchImage)

	build := func(idSuffix, cpuFamily, gpuFamily string, image awsecs.ContainerImage) (awsecs.FargateTaskDefinition, awsecs.Ec2TaskDefinition) {
		cpu := awsecs.NewFargateTaskDefinition(c, jsii.String("Cpu"+idSuffix), &awsecs.FargateTaskDefinitionProps{
			Family:         jsii.String(cpuFamily),
			Cpu:            jsii.Number(defaultCPU),
			MemoryLimitMiB: jsii.Number(defaultMemory),
			// Room for a 13B GGUF twice over (the uploaded file and
			// Ollama's blob copy) plus the image.
			EphemeralStorageGiB: jsii.Number(50),
			TaskRole:            t.TaskRole,
			ExecutionRole:       t.ExecutionRole,
		})
		addContainers(cpu, s, image, fetchImage, logGroup, false)

		gpu := awsecs.NewEc2TaskDefinition(c, jsii.String("Gpu"+idSuffix), &awsecs.Ec2TaskDefinitionProps{
			Family:        jsii.String(gpuFamily),
			NetworkMode:   awsecs.NetworkMode_AWS_VPC,
			TaskRole:      t.TaskRole,
			ExecutionRole: t.ExecutionRole,
		})
		gpu.AddVolume(&awsecs.Volume{
			Name: jsii.String("model-cache"),
			Host: &awsecs.Host{SourcePath: jsii.String(modelCacheHostPath)},
		})
		addContainers(gpu, s, image, fetchImage, logGroup, true)
		t.Definitions = append(t.Definitions, cpu, gpu)
		return cpu, gpu
	}

	t.Cpu, t.Gpu = build("", CpuFamily, GpuFamily, images.resolve(s.Image))

	t.ModelImages = awsecr.NewRepository(c, jsii.String("ModelImages"), &awsecr.RepositoryProps{
		// Tags are content addresses (the model's manifest digest, the Ollama version): never rewritten.
		ImageTagMutability: awsecr.TagMutability_IMMUTABLE,
		RemovalPolicy:      awscdk.RemovalPolicy_DESTROY,
		EmptyOnDelete:      jsii.Bool(true),
		LifecycleRules: &[]*awsecr.LifecycleRule{{
			Description: jsii.String("what a build killed half-way left untagged"),
			TagStatus:   awsecr.TagStatus_UNTAGGED, MaxImageAge: awscdk.Duration_Days(jsii.Number(1)),
		}},
	})
	t.ModelImages.GrantPull(t.ExecutionRole)
	return t
}

// addContainers adds the fetch init container and the ollama container to
// one task definition. On EC2 the ollama container also gets the GPU and the
// host model cache; Fargate has neither.
func addContainers(td awsecs.TaskDefinition, s Settings, image, fetchImage awsecs.ContainerImage, logGroup awslogs.ILogGroup, gpu bool) {
	td.AddVolume(&awsecs.Volume{Name: jsii.String("model-source")})
	sourceMount := &awsecs.MountPoint{
		SourceVolume: jsii.String("model-source"), ContainerPath: jsii.String(sourceDir), ReadOnly: jsii.Bool(false),
	}

	fetch := td.AddContainer(jsii.String(FetchContainer), &awsecs.ContainerDefinitionOptions{
		ContainerName:        jsii.String(FetchContainer),
		Image:                fetchImage,
		Essential:            jsii.Bool(false),
		EntryPoint:           jsii.Strings("/bin/sh", "-c"),
		Command:              jsii.Strings(s.FetchEntryScript),
		MemoryReservationMiB: jsii.Number(256),
		Environment:          &map[string]*string{"OLLAMA_ECS_SOURCE_DIR": jsii.String(sourceDir)},
		Logging: awsecs.LogDrivers_AwsLogs(&awsecs.AwsLogDriverProps{
			StreamPrefix: jsii.String(FetchContainer), LogGroup: logGroup,
		}),
	})
	fetch.AddMountPoints(sourceMount)

	opts := &awsecs.ContainerDefinitionOptions{
		ContainerName: jsii.String(OllamaContainer),
		Image:         image,
		Essential:     jsii.Bool(true),
		EntryPoint:    jsii.Strings("/bin/sh", "-c"),
		Command:       jsii.Strings(s.OllamaEntryScript),
		PortMappings: &[]*awsecs.PortMapping{{
			ContainerPort: jsii.Number(OllamaPort), Protocol: awsecs.Protocol_TCP, Name: jsii.String("ollama"),
		}},
		Environment: &map[string]*string{
			"OLLAMA_ECS_SOURCE_DIR": jsii.String(sourceDir),
			"OLLAMA_KEEP_ALIVE":     jsii.String("-1"),
			"OLLAMA_CONTEXT_LENGTH": jsii.String("4096"),
		},
		Logging: awsecs.LogDrivers_AwsLogs(&awsecs.AwsLogDriverProps{
			StreamPrefix: jsii.String(OllamaContainer), LogGroup: logGroup,
		}),
	}
	if gpu {
		// EC2 tasks have no task-level size here: the reservation is what
		// ECS places by, and RunTask overrides it per model.
		opts.GpuCount = jsii.Number(1)
		opts.Cpu = jsii.Number(defaultCPU)
		opts.MemoryReservationMiB = jsii.Number(defaultMemory)
	}
	ollama := td.AddContainer(jsii.String(OllamaContainer), opts)
	ollama.AddMountPoints(sourceMount)
	if gpu {
		ollama.AddMountPoints(&awsecs.MountPoint{
			SourceVolume: jsii.String("model-cache"), ContainerPath: jsii.String(modelCachePath), ReadOnly: jsii.Bool(false),
		})
	}
	// The fetch container must have copied the GGUF (or found nothing to
	// copy) before Ollama starts; a failed copy keeps the task from starting.
	ollama.AddContainerDependencies(&awsecs.ContainerDependency{
		Container: fetch, Condition: awsecs.ContainerDependencyCondition_SUCCESS,
	})
}

var ecrImagePattern = regexp.MustCompile(`^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/([a-z0-9._/-]+)(?::([\w.-]+))?(?:@(sha256:[0-9a-f]{64}))?$`)

// imageResolver turns an image URI into a ContainerImage. ECR URIs go through
// FromEcrRepository so the execution role is granted pull on that repository
// only; anything else is a public registry image.
type imageResolver struct {
	scope constructs.Construct
	repos map[string]awsecr.IRepository
}

func (r *imageResolver) resolve(uri string) awsecs.ContainerImage {
	m := ecrImagePattern.FindStringSubmatch(uri)
	if m == nil {
		return awsecs.ContainerImage_FromRegistry(jsii.String(uri), nil)
	}
	account, region, cn, name, tag, digest := m[1], m[2], m[3], m[4], m[5], m[6]
	partition := "aws"
	if cn != "" {
		partition = "aws-cn"
	}
	arn := fmt.Sprintf("arn:%s:ecr:%s:%s:repository/%s", partition, region, account, name)
	if r.repos == nil {
		r.repos = map[string]awsecr.IRepository{}
	}
	repo, ok := r.repos[arn]
	if !ok {
		repo = awsecr.Repository_FromRepositoryAttributes(r.scope, jsii.String(fmt.Sprintf("Repo%d", len(r.repos))),
			&awsecr.RepositoryAttributes{RepositoryArn: jsii.String(arn), RepositoryName: jsii.String(name)})
		r.repos[arn] = repo
	}
	ref := tag
	if digest != "" {
		ref = digest
	}
	if ref == "" {
		ref = "latest"
	}
	return awsecs.ContainerImage_FromEcrRepository(repo, jsii.String(ref))
}
