package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
)

func TestTaskDefinitionSizesAndGPU(t *testing.T) {
	f := synth(t)

	cpu := f.taskDefinition(t, CpuFamily)
	for key, want := range map[string]interface{}{
		"Cpu": "2048", "Memory": "8192", "NetworkMode": "awsvpc",
		"RequiresCompatibilities": []interface{}{"FARGATE"},
		"EphemeralStorage":        map[string]interface{}{"SizeInGiB": float64(50)},
	} {
		if !reflect.DeepEqual(cpu[key], want) {
			t.Errorf("%s %s = %v, want %v", CpuFamily, key, cpu[key], want)
		}
	}
	if c := container(t, cpu, OllamaContainer); c["ResourceRequirements"] != nil {
		t.Errorf("Fargate ollama container asks for %v; Fargate has no GPU", c["ResourceRequirements"])
	}

	gpu := f.taskDefinition(t, GpuFamily)
	for key, want := range map[string]interface{}{
		"NetworkMode": "awsvpc", "RequiresCompatibilities": []interface{}{"EC2"},
	} {
		if !reflect.DeepEqual(gpu[key], want) {
			t.Errorf("%s %s = %v, want %v", GpuFamily, key, gpu[key], want)
		}
	}
	g := container(t, gpu, OllamaContainer)
	if want := []interface{}{map[string]interface{}{"Type": "GPU", "Value": "1"}}; !reflect.DeepEqual(g["ResourceRequirements"], want) {
		t.Errorf("GPU ollama ResourceRequirements = %v, want %v", g["ResourceRequirements"], want)
	}
	if g["Cpu"] != float64(2048) || g["MemoryReservation"] != float64(8192) {
		t.Errorf("GPU ollama Cpu/MemoryReservation = %v/%v, want 2048/8192", g["Cpu"], g["MemoryReservation"])
	}
	if !hasVolume(gpu, "model-cache", "/var/lib/ollama") || !hasMount(g, "model-cache", "/root/.ollama") {
		t.Errorf("GPU task lacks the host model cache /var/lib/ollama -> /root/.ollama: volumes %v, mounts %v",
			gpu["Volumes"], g["MountPoints"])
	}
	if hasVolume(cpu, "model-cache", "/var/lib/ollama") {
		t.Errorf("Fargate task has a host volume: %v", cpu["Volumes"])
	}
}

func TestContainers(t *testing.T) {
	f := synth(t)
	for _, family := range []string{CpuFamily, GpuFamily} {
		t.Run(family, func(t *testing.T) {
			td := f.taskDefinition(t, family)
			o := container(t, td, OllamaContainer)
			fetch := container(t, td, FetchContainer)
			if want := []interface{}{map[string]interface{}{"ContainerPort": float64(OllamaPort), "Protocol": "tcp", "Name": "ollama"}}; !reflect.DeepEqual(o["PortMappings"], want) {
				t.Errorf("ollama PortMappings = %v, want %v", o["PortMappings"], want)
			}
			if o["Essential"] != true || fetch["Essential"] != false {
				t.Errorf("Essential ollama=%v fetch=%v, want true/false", o["Essential"], fetch["Essential"])
			}
			if o["Image"] != "ollama/ollama:0.17.4" {
				t.Errorf("ollama image = %v", o["Image"])
			}
			if !strings.HasPrefix(fmt.Sprint(fetch["Image"]), "public.ecr.aws/aws-cli/aws-cli") {
				t.Errorf("fetch image = %v", fetch["Image"])
			}
			if want := []interface{}{map[string]interface{}{"Condition": "SUCCESS", "ContainerName": FetchContainer}}; !reflect.DeepEqual(o["DependsOn"], want) {
				t.Errorf("ollama DependsOn = %v, want %v", o["DependsOn"], want)
			}
			for name, c := range map[string]map[string]interface{}{"ollama": o, "fetch": fetch} {
				if !hasMount(c, "model-source", sourceDir) {
					t.Errorf("%s does not mount the shared model-source volume: %v", name, c["MountPoints"])
				}
				logs := c["LogConfiguration"].(map[string]interface{})
				if logs["LogDriver"] != "awslogs" {
					t.Errorf("%s logs to %v, want awslogs", name, logs["LogDriver"])
				}
			}
			if got := mustJSON(o["Command"]); got != mustJSON([]string{readScript(t, "ollama-entry.sh")}) {
				t.Errorf("ollama command is not container/ollama-entry.sh")
			}
			if got := mustJSON(fetch["Command"]); got != mustJSON([]string{readScript(t, "fetch-entry.sh")}) {
				t.Errorf("fetch command is not container/fetch-entry.sh")
			}
			env := map[string]interface{}{}
			for _, e := range o["Environment"].([]interface{}) {
				e := e.(map[string]interface{})
				env[e["Name"].(string)] = e["Value"]
			}
			if env["OLLAMA_KEEP_ALIVE"] != "-1" {
				t.Errorf("OLLAMA_KEEP_ALIVE = %v, want -1 (keep the model loaded)", env["OLLAMA_KEEP_ALIVE"])
			}
		})
	}
}

func TestModelImages(t *testing.T) {
	f := synth(t)
	repoID := onlyID(t, f.ofType("AWS::ECR::Repository"), "TasksModelImages")
	repo := f.resources[repoID].Properties
	if repo["ImageTagMutability"] != "IMMUTABLE" || !strings.Contains(mustJSON(repo["LifecyclePolicy"]), "untagged") {
		t.Errorf("model images repository %v: want immutable tags and untagged images expired", repo)
	}
	id, image := f.function(t, "image")
	env := image["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
	if !strings.Contains(mustJSON(env["MODEL_IMAGE_REPOSITORY"]), repoID) || env["OLLAMA_IMAGE"] != "ollama/ollama:0.17.4" ||
		env["MODEL_IMAGE_MAX_GIB"] != "30" || env["IMAGE_LOCK_PREFIX"] != ImageLockPrefix {
		t.Errorf("image function environment %v", env)
	}
	if image["Timeout"] != float64(900) || image["MemorySize"] != float64(2048) {
		t.Errorf("image function %s: timeout %v, memory %v; want 900 s and 2048 MB to stream a model", id, image["Timeout"], image["MemorySize"])
	}
	push := withAction(f.functionStatements(t, "image"), "ecr:PutImage")
	if len(push) != 1 || !strings.Contains(mustJSON(push[0].Resources), repoID) || strings.Contains(mustJSON(push[0].Resources), "*") {
		t.Errorf("image function ecr:PutImage = %+v, want the model images repository only", push)
	}
	// Tasks pull from that repository only, and the runtask function may run the model images' families.
	pull := withAction(f.roleStatements(t, onlyID(t, f.ofType("AWS::IAM::Role"), "TasksExecutionRole")), "ecr:BatchGetImage")
	if len(pull) != 1 || !strings.Contains(mustJSON(pull[0].Resources), repoID) {
		t.Errorf("execution role ecr:BatchGetImage = %+v, want the model images repository", pull)
	}
	run := mustJSON(withAction(f.functionStatements(t, "runtask"), "ecs:RunTask"))
	if !strings.Contains(run, "task-definition/ollama-cpu-*:*") || !strings.Contains(run, "task-definition/ollama-gpu-*:*") {
		t.Errorf("runtask ecs:RunTask %s, want the model images' families too", run)
	}
}

func TestCapacityProviders(t *testing.T) {
	f := synth(t)
	assoc := f.resources[onlyID(t, f.ofType("AWS::ECS::ClusterCapacityProviderAssociations"), "")].Properties
	providers := assoc["CapacityProviders"].([]interface{})
	if providers[0] != "FARGATE" || providers[1] != "FARGATE_SPOT" || len(providers) != 2+2*len(f.settings.GpuInstanceTypes) {
		t.Errorf("cluster capacity providers = %v, want FARGATE, FARGATE_SPOT and an on-demand and a Spot one per GPU type", providers)
	}

	byName := map[string]map[string]interface{}{}
	for _, id := range f.ofType("AWS::ECS::CapacityProvider") {
		p := f.resources[id].Properties
		byName[p["Name"].(string)] = p
		if !containsValue(providers[2:], ref(id)) {
			t.Errorf("provider %s is not associated with the cluster", id)
		}
	}
	var want []string
	for _, kind := range []struct{ typ, key, name, maxPrice string }{
		{"g4dn.xlarge", "g4dn.xlarge", CapacityProviderName(StackID, "g4dn.xlarge"), ""},
		{"g4dn.xlarge", "g4dn.xlarge:spot", CapacityProviderName(StackID, "g4dn.xlarge") + SpotSuffix, "0.526"},
		{"g4dn.2xlarge", "g4dn.2xlarge", CapacityProviderName(StackID, "g4dn.2xlarge"), ""},
		{"g4dn.2xlarge", "g4dn.2xlarge:spot", CapacityProviderName(StackID, "g4dn.2xlarge") + SpotSuffix, "0.752"},
	} {
		typ, name := kind.typ, kind.name
		want = append(want, kind.key+"="+name)
		p, ok := byName[name]
		if !ok {
			t.Errorf("no capacity provider named %s (have %v)", name, keys(byName))
			continue
		}
		asg := p["AutoScalingGroupProvider"].(map[string]interface{})
		if ms := asg["ManagedScaling"].(map[string]interface{}); ms["Status"] != "ENABLED" {
			t.Errorf("%s managed scaling = %v", name, ms)
		}
		// With managed termination protection on, `cdk destroy` hangs while instances exist (aws-cdk 18179).
		if asg["ManagedTerminationProtection"] != "DISABLED" || asg["ManagedDraining"] != "ENABLED" {
			t.Errorf("%s termination protection %v, draining %v; want DISABLED and ENABLED", name,
				asg["ManagedTerminationProtection"], asg["ManagedDraining"])
		}
		groupID := asg["AutoScalingGroupArn"].(map[string]interface{})["Ref"].(string)
		group := f.resources[groupID].Properties
		if group["MinSize"] != "0" || group["MaxSize"] != "2" {
			t.Errorf("%s ASG min/max = %v/%v, want 0/2", name, group["MinSize"], group["MaxSize"])
		}
		ltID := group["LaunchTemplate"].(map[string]interface{})["LaunchTemplateId"].(map[string]interface{})["Ref"].(string)
		lt := f.resources[ltID].Properties["LaunchTemplateData"].(map[string]interface{})
		if lt["InstanceType"] != typ {
			t.Errorf("%s launch template instance type = %v", name, lt["InstanceType"])
		}
		// A Spot group's launch template asks for Spot at most at the on-demand price, and its instances drain
		// on the interruption notice; an on-demand one has neither.
		market, _ := lt["InstanceMarketOptions"].(map[string]interface{})
		userData, _ := json.Marshal(lt["UserData"])
		draining := strings.Contains(string(userData), "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true")
		if kind.maxPrice == "" {
			if market != nil || draining {
				t.Errorf("%s: on-demand group with market options %v, Spot draining %v", name, market, draining)
			}
		} else {
			opts, _ := market["SpotOptions"].(map[string]interface{})
			if market["MarketType"] != "spot" || fmt.Sprint(opts["MaxPrice"]) != kind.maxPrice || !draining {
				t.Errorf("%s: market options %v, Spot draining %v; want spot at most $%s/h, draining on", name, market, draining, kind.maxPrice)
			}
		}
		imageParam := lt["ImageId"].(map[string]interface{})["Ref"].(string)
		params := f.template.ToJSON()
		p2 := (*params)["Parameters"].(map[string]interface{})[imageParam].(map[string]interface{})
		if p2["Default"] != "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id" {
			t.Errorf("%s AMI = %v, want the AL2023 GPU ECS AMI resolved at deploy time", name, p2["Default"])
		}
	}
	if got := f.ofType("AWS::AutoScaling::LaunchConfiguration"); len(got) != 0 {
		t.Errorf("launch configurations %v: the launch-template feature flag is not in effect", got)
	}
	for _, fn := range []string{"capacity", "configure", "runtask"} {
		_, p := f.function(t, fn)
		env := p["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
		if env["GPU_CAPACITY_PROVIDERS"] != strings.Join(want, ",") {
			t.Errorf("%s GPU_CAPACITY_PROVIDERS = %v, want %v", fn, env["GPU_CAPACITY_PROVIDERS"], strings.Join(want, ","))
		}
	}
}

// TestPlacementExpression: ECS sets ecs.instance-type on every container
// instance, and the planner (which the runtask Lambda follows) must pin GPU
// tasks with exactly this expression form.
func TestPlacementExpression(t *testing.T) {
	if got, want := PlacementExpression("g4dn.xlarge"), "attribute:ecs.instance-type == g4dn.xlarge"; got != want {
		t.Fatalf("PlacementExpression = %q, want %q", got, want)
	}
	form := `"attribute:` + InstanceTypeAttribute + ` == "`
	var users []string
	for _, dir := range []string{"planner", "functions"} {
		filepath.WalkDir(filepath.Join("..", dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			if src, err := os.ReadFile(path); err == nil && strings.Contains(string(src), form) {
				users = append(users, path)
			}
			return nil
		})
	}
	if len(users) == 0 {
		t.Errorf("no non-test Go file under planner/ or functions/ builds the placement expression %s", form)
	}
}

func TestLambdas(t *testing.T) {
	f := synth(t)
	if got := len(f.ofType("AWS::Lambda::Function")); got < len(FunctionNames) {
		t.Fatalf("%d Lambda functions, want at least %d", got, len(FunctionNames))
	}
	clusterID := onlyID(t, f.ofType("AWS::ECS::Cluster"), "ComputeCluster")
	// The load balancer's settings go to every function that routes or unroutes a deployment.
	route := []string{"ENDPOINT_BASE", "KEY_PREFIX", "LISTENER_ARN", "LOAD_BALANCER_NAME", "SLEEP_PREFIX", "VPC_ID", "WAKER_TARGET_GROUP"}
	wantEnv := map[string][]string{
		"validate":  {"MODEL_BUCKET", "MODEL_PREFIX", "MODEL_REGISTRY", "UPLOAD_DEFAULTS"},
		"configure": {"DEV_TTL", "GPU_CAPACITY_PROVIDERS", "GPU_INSTANCE_TYPES", "GPU_VOLUME_GIB", "POLICY"},
		"capacity":  {"GPU_CAPACITY_PROVIDERS"},
		"image": {"CPU_TASK_DEFINITION", "GPU_TASK_DEFINITION", "IMAGE_LOCK_PREFIX", "MODEL_IMAGE_MAX_GIB", "MODEL_IMAGE_REPOSITORY",
			"MODEL_REGISTRY", "OLLAMA_IMAGE"},
		"runtask":  append([]string{"API_KEYS", "CPU_TASK_DEFINITION", "GPU_CAPACITY_PROVIDERS", "GPU_TASK_DEFINITION", "SECURITY_GROUPS", "SUBNETS"}, route...),
		"health":   append([]string{"HEALTH_TIMEOUT", "OLLAMA_PORT"}, route...),
		"autostop": {"IDLE_WINDOW", "MAX_LIFETIME", "SCHEDULER_ROLE_ARN", "SCHEDULE_GROUP", "STOP_FUNCTION_ARN"},
		"cleanup":  append([]string{"SCHEDULE_GROUP"}, route...),
		"teardown": append([]string{"SCHEDULE_GROUP", "STATE_MACHINE_ARN"}, route...),
		"waker":    append([]string{"STATE_MACHINE_ARN"}, route...),
	}
	for _, name := range FunctionNames {
		t.Run(name, func(t *testing.T) {
			_, p := f.function(t, name)
			if p["Runtime"] != "provided.al2023" || p["Handler"] != "bootstrap" || !reflect.DeepEqual(p["Architectures"], []interface{}{"arm64"}) {
				t.Errorf("runtime/handler/arch = %v/%v/%v", p["Runtime"], p["Handler"], p["Architectures"])
			}
			if tc := p["TracingConfig"]; !reflect.DeepEqual(tc, map[string]interface{}{"Mode": "Active"}) {
				t.Errorf("TracingConfig = %v", tc)
			}
			env := p["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
			if !reflect.DeepEqual(env["CLUSTER"], getAtt(clusterID, "Arn")) {
				t.Errorf("CLUSTER = %v, want the cluster ARN", env["CLUSTER"])
			}
			got := keys(env)
			want := append([]string{"CLUSTER"}, wantEnv[name]...)
			sort.Strings(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("environment keys = %v, want %v", got, want)
			}
			_, inVpc := p["VpcConfig"]
			if inVpc != (name == "health") {
				t.Errorf("in VPC = %v; only health needs to reach task IPs", inVpc)
			}
		})
	}

	values := func(name string) map[string]interface{} {
		_, p := f.function(t, name)
		return p["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
	}
	for name, want := range map[string]map[string]interface{}{
		"validate":  {"MODEL_PREFIX": "models/", "UPLOAD_DEFAULTS": "", "MODEL_REGISTRY": "registry.ollama.ai"},
		"configure": {"DEV_TTL": "2h", "GPU_INSTANCE_TYPES": "g4dn.xlarge,g4dn.2xlarge", "POLICY": "cost", "GPU_VOLUME_GIB": "100"},
		"runtask":   {"CPU_TASK_DEFINITION": CpuFamily, "GPU_TASK_DEFINITION": GpuFamily},
		"health":    {"OLLAMA_PORT": "11434", "HEALTH_TIMEOUT": "30m"},
		"autostop":  {"SCHEDULE_GROUP": ScheduleGroupName, "IDLE_WINDOW": "30m", "MAX_LIFETIME": "12h"},
		"teardown":  {"SCHEDULE_GROUP": ScheduleGroupName, "KEY_PREFIX": KeyPrefix},
	} {
		env := values(name)
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s %s = %v, want %v", name, k, env[k], v)
			}
		}
	}
	runtask := values("runtask")
	taskSG := onlyID(t, f.ofType("AWS::EC2::SecurityGroup"), "NetworkTaskSecurityGroup")
	if !reflect.DeepEqual(runtask["SECURITY_GROUPS"], getAtt(taskSG, "GroupId")) {
		t.Errorf("SECURITY_GROUPS = %v, want the task security group", runtask["SECURITY_GROUPS"])
	}
	subnets := mustJSON(runtask["SUBNETS"])
	if !strings.Contains(subnets, "privateSubnet1") || !strings.Contains(subnets, "privateSubnet2") || strings.Contains(subnets, "public") {
		t.Errorf("SUBNETS = %s, want the private subnets only", subnets)
	}
	_, health := f.function(t, "health")
	healthSG := onlyID(t, f.ofType("AWS::EC2::SecurityGroup"), "NetworkHealthSecurityGroup")
	vpc := health["VpcConfig"].(map[string]interface{})
	if !reflect.DeepEqual(vpc["SecurityGroupIds"], []interface{}{getAtt(healthSG, "GroupId")}) {
		t.Errorf("health Lambda security groups = %v, want its own", vpc["SecurityGroupIds"])
	}
	if s := mustJSON(vpc["SubnetIds"]); !strings.Contains(s, "privateSubnet") || strings.Contains(s, "public") {
		t.Errorf("health Lambda subnets = %s, want private", s)
	}
}

// TestOllamaPortOnlyFromHealthLambdaAndLoadBalancer: the tasks' Ollama port admits the health Lambda and the load
// balancer, nothing else; the load balancer admits the VPC (it is internal) on its listener port, and may reach
// only the Ollama port.
func TestOllamaPortOnlyFromHealthLambdaAndLoadBalancer(t *testing.T) {
	f := synth(t)
	taskSG := onlyID(t, f.ofType("AWS::EC2::SecurityGroup"), "NetworkTaskSecurityGroup")
	healthSG := onlyID(t, f.ofType("AWS::EC2::SecurityGroup"), "NetworkHealthSecurityGroup")
	lbSG := onlyID(t, f.ofType("AWS::EC2::SecurityGroup"), "LoadBalancerSecurityGroup")
	var rules []map[string]interface{}
	for _, id := range f.ofType("AWS::EC2::SecurityGroupIngress") {
		rules = append(rules, f.resources[id].Properties)
	}
	for _, id := range f.ofType("AWS::EC2::SecurityGroup") {
		for _, r := range asList(f.resources[id].Properties["SecurityGroupIngress"]) {
			if r == nil {
				continue
			}
			rule := r.(map[string]interface{})
			if id != lbSG || !reflect.DeepEqual(rule["CidrIp"], getAtt(onlyID(t, f.ofType("AWS::EC2::VPC"), "NetworkVpc"), "CidrBlock")) ||
				rule["FromPort"] != float64(80) {
				t.Errorf("security group %s has inline ingress %v; only the load balancer's from the VPC is expected", id, r)
			}
		}
	}
	if len(rules) != 2 {
		t.Fatalf("want two ingress rules (health Lambda and load balancer into the tasks), got %v", rules)
	}
	sources := map[string]bool{}
	for _, r := range rules {
		if !reflect.DeepEqual(r["GroupId"], getAtt(taskSG, "GroupId")) || r["FromPort"] != float64(OllamaPort) ||
			r["ToPort"] != float64(OllamaPort) || r["IpProtocol"] != "tcp" {
			t.Errorf("ingress = %v, want tcp 11434 into the task SG", r)
		}
		sources[mustJSON(r["SourceSecurityGroupId"])] = true
	}
	if !sources[mustJSON(getAtt(healthSG, "GroupId"))] || !sources[mustJSON(getAtt(lbSG, "GroupId"))] {
		t.Errorf("ingress sources = %v, want the health Lambda's and the load balancer's groups", sources)
	}
	for _, id := range f.ofType("AWS::EC2::SecurityGroupEgress") {
		e := f.resources[id].Properties
		if reflect.DeepEqual(e["GroupId"], getAtt(lbSG, "GroupId")) && (e["FromPort"] != float64(OllamaPort) ||
			!reflect.DeepEqual(e["DestinationSecurityGroupId"], getAtt(taskSG, "GroupId"))) {
			t.Errorf("load balancer egress %v, want the tasks' Ollama port only", e)
		}
	}
}

func TestIAMScoping(t *testing.T) {
	f := synth(t)
	clusterID := onlyID(t, f.ofType("AWS::ECS::Cluster"), "ComputeCluster")
	clusterArn := getAtt(clusterID, "Arn")
	inCluster := map[string]interface{}{"ArnEquals": map[string]interface{}{"ecs:cluster": clusterArn}}
	tasksInCluster := accountArn("ecs", ":task/", ref(clusterID), "/*")

	t.Run("runtask", func(t *testing.T) {
		stmts := f.functionStatements(t, "runtask")
		run := withAction(stmts, "ecs:RunTask")
		wantRes := []interface{}{
			accountArn("ecs", ":task-definition/ollama-cpu:*"),
			accountArn("ecs", ":task-definition/ollama-gpu:*"),
			accountArn("ecs", ":task-definition/ollama-cpu-*:*"),
			accountArn("ecs", ":task-definition/ollama-gpu-*:*"),
		}
		if len(run) != 1 || !sameSet(run[0].Resources, wantRes) || !reflect.DeepEqual(run[0].Conditions, inCluster) {
			t.Errorf("ecs:RunTask = %+v, want %v with the ecs:cluster condition", run, wantRes)
		}
		tag := withAction(stmts, "ecs:TagResource")
		wantTag := map[string]interface{}{"StringEquals": map[string]interface{}{"ecs:CreateAction": "RunTask"}}
		wantSvcTag := map[string]interface{}{"StringEquals": map[string]interface{}{"ecs:CreateAction": []interface{}{"CreateService", "RegisterTaskDefinition"}}}
		if len(tag) != 2 || !reflect.DeepEqual(tag[0].Resources, []interface{}{tasksInCluster}) || !reflect.DeepEqual(tag[0].Conditions, wantTag) ||
			!reflect.DeepEqual(tag[1].Conditions, wantSvcTag) {
			t.Errorf("ecs:TagResource = %+v: want tagging at RunTask, CreateService and RegisterTaskDefinition only", tag)
		}
		// The route: target groups by the stack's name prefix, rules on this listener, keys under the prefix.
		for action, want := range map[string]string{
			"elasticloadbalancing:CreateTargetGroup": ":targetgroup/" + TargetGroupPrefix + "*/*",
			"elasticloadbalancing:CreateRule":        "LoadBalancerAlbListener",
			"elasticloadbalancing:DeleteRule":        ":listener-rule/",
			"ssm:PutParameter":                       ":parameter" + KeyPrefix + "/*",
			"ecs:CreateService":                      "/ollama-*",
		} {
			if got := mustJSON(withAction(stmts, action)); !strings.Contains(got, want) || strings.Contains(got, `"Resource":"*"`) {
				t.Errorf("%s = %s, want it scoped to %s", action, got, want)
			}
		}
		scaling := withAction(stmts, "application-autoscaling:RegisterScalableTarget")
		if len(scaling) != 1 || !strings.Contains(mustJSON(scaling[0].Conditions), `"application-autoscaling:service-namespace":"ecs"`) {
			t.Errorf("application-autoscaling:RegisterScalableTarget = %+v, want it held to ECS services", scaling)
		}
		pass := withAction(stmts, "iam:PassRole")
		taskRole := onlyID(t, f.ofType("AWS::IAM::Role"), "TasksTaskRole")
		execRole := onlyID(t, f.ofType("AWS::IAM::Role"), "TasksExecutionRole")
		if len(pass) != 1 || !sameSet(pass[0].Resources, []interface{}{getAtt(taskRole, "Arn"), getAtt(execRole, "Arn")}) {
			t.Errorf("iam:PassRole = %+v, want the task and execution roles only", pass)
		}
		for _, a := range []string{"ecs:ListTasks", "ecs:DescribeTasks"} {
			if s := withAction(stmts, a); len(s) != 1 || !reflect.DeepEqual(s[0].Conditions, inCluster) {
				t.Errorf("%s = %+v, want it held to the cluster", a, s)
			}
		}
		wantActions := []string{"application-autoscaling:PutScalingPolicy", "application-autoscaling:RegisterScalableTarget",
			"cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm",
			"ecs:CreateService", "ecs:DescribeServices", "ecs:DescribeTaskDefinition", "ecs:DescribeTasks", "ecs:ListTasks",
			"ecs:RegisterTaskDefinition", "ecs:RunTask", "ecs:TagResource", "ecs:UpdateService",
			"elasticloadbalancing:AddTags", "elasticloadbalancing:CreateRule", "elasticloadbalancing:CreateTargetGroup",
			"elasticloadbalancing:DeleteRule", "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups",
			"elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes", "iam:CreateServiceLinkedRole", "iam:PassRole",
			"logs:CreateLogStream", "logs:PutLogEvents", "ssm:GetParameter", "ssm:PutParameter", "xray:PutTelemetryRecords", "xray:PutTraceSegments"}
		if got := allActions(stmts); !reflect.DeepEqual(got, wantActions) {
			t.Errorf("runtask actions = %v, want %v", got, wantActions)
		}
	})

	t.Run("autostop", func(t *testing.T) {
		stmts := f.functionStatements(t, "autostop")
		group := accountArn("scheduler", ":schedule/ollama-ecs/*")
		for _, a := range []string{"scheduler:CreateSchedule", "scheduler:GetSchedule", "scheduler:DeleteSchedule"} {
			s := withAction(stmts, a)
			if len(s) != 1 || !reflect.DeepEqual(s[0].Resources, []interface{}{group}) {
				t.Errorf("%s = %+v, want only %s", a, s, group)
			}
		}
		schedRole := onlyID(t, f.ofType("AWS::IAM::Role"), "SchedulesRole")
		pass := withAction(stmts, "iam:PassRole")
		if len(pass) != 1 || !reflect.DeepEqual(pass[0].Resources, []interface{}{getAtt(schedRole, "Arn")}) {
			t.Errorf("autostop iam:PassRole = %+v, want the scheduler role", pass)
		}
	})

	t.Run("scheduler role", func(t *testing.T) {
		schedRole := onlyID(t, f.ofType("AWS::IAM::Role"), "SchedulesRole")
		trust := mustJSON(f.resources[schedRole].Properties["AssumeRolePolicyDocument"])
		if !strings.Contains(trust, `"Service":"scheduler.amazonaws.com"`) || !strings.Contains(trust, "aws:SourceAccount") {
			t.Errorf("scheduler role trust = %s", trust)
		}
		// The schedules invoke the stop (teardown) function, which looks at the deployment's use first.
		stmts := f.roleStatements(t, schedRole)
		if got := allActions(stmts); !reflect.DeepEqual(got, []string{"lambda:InvokeFunction"}) {
			t.Errorf("scheduler role actions = %v, want lambda:InvokeFunction only", got)
		}
		teardown, _ := f.function(t, "teardown")
		if res := mustJSON(stmts[0].Resources); !strings.Contains(res, teardown) || strings.Contains(res, `"*"`) {
			t.Errorf("scheduler role may invoke %s, want the teardown function only", res)
		}
		autostop, props := f.function(t, "autostop")
		_, teardownProps := f.function(t, "teardown")
		if env := mustJSON(props["Environment"]); !strings.Contains(env, `"STOP_FUNCTION_ARN":{"Fn::Join"`) || !strings.Contains(env, `:function:`+teardownProps["FunctionName"].(string)) {
			t.Errorf("%s environment %s: want STOP_FUNCTION_ARN = the teardown function", autostop, env)
		}
	})

	t.Run("stoppers", func(t *testing.T) {
		for _, name := range []string{"cleanup", "teardown"} {
			stmts := f.functionStatements(t, name)
			for _, a := range []string{"ecs:ListTasks", "ecs:DescribeTasks", "ecs:StopTask"} {
				s := withAction(stmts, a)
				if len(s) != 1 || !reflect.DeepEqual(s[0].Conditions, inCluster) {
					t.Errorf("%s %s = %+v, want it held to the cluster", name, a, s)
				}
			}
			for _, a := range []string{"scheduler:GetSchedule", "scheduler:DeleteSchedule"} {
				s := withAction(stmts, a)
				if len(s) != 1 || !reflect.DeepEqual(s[0].Resources, []interface{}{accountArn("scheduler", ":schedule/ollama-ecs/*")}) {
					t.Errorf("%s %s = %+v", name, a, s)
				}
			}
		}
		// The teardown function marks an interrupted task and restarts its deployment through the state machine.
		stmts := f.functionStatements(t, "teardown")
		tag := withAction(stmts, "ecs:TagResource")
		if len(tag) != 1 || !reflect.DeepEqual(tag[0].Resources, []interface{}{tasksInCluster}) {
			t.Errorf("teardown ecs:TagResource = %+v, want the cluster's tasks only", tag)
		}
		sm := onlyID(t, f.ofType("AWS::StepFunctions::StateMachine"), "DeployStateMachine")
		start := withAction(stmts, "states:StartExecution")
		if len(start) != 1 || !reflect.DeepEqual(start[0].Resources, []interface{}{ref(sm)}) {
			t.Errorf("teardown states:StartExecution = %+v, want the deploy state machine only", start)
		}
		if d := withAction(stmts, "states:DescribeExecution"); len(d) != 1 || !strings.Contains(mustJSON(d[0].Resources), ":execution:") {
			t.Errorf("teardown states:DescribeExecution = %+v, want its executions only", d)
		}
		if got := allActions(f.functionStatements(t, "cleanup")); contains(got, "ecs:TagResource") || contains(got, "states:StartExecution") {
			t.Errorf("cleanup actions = %v: tagging and restarting are the teardown function's", got)
		}
	})

	t.Run("read-only steps", func(t *testing.T) {
		prefix := mustJSON(withAction(f.functionStatements(t, "validate"), "s3:GetObject"))
		if !strings.Contains(prefix, `"/models/*"`) {
			t.Errorf("validate s3:GetObject = %s, want the model prefix only", prefix)
		}
		if got := allActions(f.functionStatements(t, "health")); !reflect.DeepEqual(got, []string{
			"autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities",
			"ec2:AssignPrivateIpAddresses", "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeNetworkInterfaces",
			"ec2:DescribeSubnets", "ec2:UnassignPrivateIpAddresses", "ecs:DescribeCapacityProviders", "ecs:DescribeServices",
			"ecs:DescribeTasks", "ecs:ListTasks", "elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:DescribeRules",
			"elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:ModifyRule", "elasticloadbalancing:RegisterTargets",
			"logs:CreateLogStream", "logs:PutLogEvents", "ssm:GetParameter", "ssm:PutParameter", "xray:PutTelemetryRecords", "xray:PutTraceSegments"}) {
			t.Errorf("health actions = %v", got)
		}
		capacity := allActions(f.functionStatements(t, "capacity"))
		for _, a := range []string{"ecs:ListContainerInstances", "ecs:DescribeContainerInstances", "ecs:DescribeCapacityProviders",
			"autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities", "servicequotas:GetServiceQuota",
			"servicequotas:GetAWSDefaultServiceQuota", "ec2:DescribeInstances"} {
			if !contains(capacity, a) {
				t.Errorf("capacity lacks %s (has %v)", a, capacity)
			}
		}
		if got := allActions(f.functionStatements(t, "configure")); !reflect.DeepEqual(got, []string{"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTelemetryRecords", "xray:PutTraceSegments"}) {
			t.Errorf("configure actions = %v, want logs and traces only", got)
		}
		taskRole := onlyID(t, f.ofType("AWS::IAM::Role"), "TasksTaskRole")
		stmts := f.roleStatements(t, taskRole)
		if got := allActions(stmts); !reflect.DeepEqual(got, []string{"s3:GetObject"}) || !strings.Contains(mustJSON(stmts[0].Resources), `"/models/*"`) {
			t.Errorf("task role = %+v, want s3:GetObject on the model prefix only", stmts)
		}
	})
}

func TestTriggers(t *testing.T) {
	f := synth(t)
	bus := onlyID(t, f.ofType("AWS::Events::EventBus"), "TriggersBus")
	if name := f.resources[bus].Properties["Name"]; name != EventBusName {
		t.Errorf("event bus name = %v", name)
	}
	sm := onlyID(t, f.ofType("AWS::StepFunctions::StateMachine"), "DeployStateMachine")
	teardown, _ := f.function(t, "teardown")
	bucket := onlyID(t, f.ofType("AWS::S3::Bucket"), "StorageModels")

	cases := []struct {
		rule    string
		bus     interface{}
		pattern interface{}
		target  interface{}
	}{
		{"TriggersDeployRequest", ref(bus),
			map[string]interface{}{"source": []interface{}{"ollama-ecs"}, "detail-type": []interface{}{"Deploy Request"}}, ref(sm)},
		{"TriggersStopRequest", ref(bus),
			map[string]interface{}{"source": []interface{}{"ollama-ecs"}, "detail-type": []interface{}{"Stop Request"}}, getAtt(teardown, "Arn")},
		{"TriggersModelUploaded", nil, map[string]interface{}{
			"source": []interface{}{"aws.s3"}, "detail-type": []interface{}{"Object Created"},
			"detail": map[string]interface{}{
				"bucket": map[string]interface{}{"name": []interface{}{ref(bucket)}},
				"object": map[string]interface{}{"key": []interface{}{map[string]interface{}{"prefix": "models/"}}},
			},
		}, ref(sm)},
		{"TriggersTaskStopped", nil, map[string]interface{}{
			"source": []interface{}{"aws.ecs"}, "detail-type": []interface{}{"ECS Task State Change"},
			"detail": map[string]interface{}{
				"clusterArn": []interface{}{getAtt(onlyID(t, f.ofType("AWS::ECS::Cluster"), "ComputeCluster"), "Arn")},
				"lastStatus": []interface{}{"STOPPED"},
				"stopCode":   []interface{}{map[string]interface{}{"anything-but": []interface{}{"UserInitiated"}}},
			},
		}, getAtt(teardown, "Arn")},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			p := f.resources[onlyID(t, f.ofType("AWS::Events::Rule"), c.rule)].Properties
			if !reflect.DeepEqual(p["EventBusName"], c.bus) {
				t.Errorf("bus = %v, want %v (nil: the default bus)", p["EventBusName"], c.bus)
			}
			if !reflect.DeepEqual(p["EventPattern"], c.pattern) {
				t.Errorf("pattern = %s, want %s", mustJSON(p["EventPattern"]), mustJSON(c.pattern))
			}
			targets := p["Targets"].([]interface{})
			if len(targets) != 1 {
				t.Fatalf("targets = %v", targets)
			}
			target := targets[0].(map[string]interface{})
			if !reflect.DeepEqual(target["Arn"], c.target) {
				t.Errorf("target = %v, want %v", target["Arn"], c.target)
			}
			// The whole event is the input: no Input/InputPath/InputTransformer.
			for _, k := range []string{"Input", "InputPath", "InputTransformer"} {
				if target[k] != nil {
					t.Errorf("target sets %s = %v", k, target[k])
				}
			}
		})
	}
	// The nightly teardown is an EventBridge Scheduler schedule, read in the configured time zone.
	sched := f.resources[onlyID(t, f.ofType("AWS::Scheduler::Schedule"), "TriggersDevTeardownSchedule")].Properties
	if sched["ScheduleExpression"] != "cron(0 20 * * ? *)" || sched["ScheduleExpressionTimezone"] != "UTC" {
		t.Errorf("teardown schedule = %v in %v", sched["ScheduleExpression"], sched["ScheduleExpressionTimezone"])
	}
	target := sched["Target"].(map[string]interface{})
	if !reflect.DeepEqual(target["Arn"], getAtt(teardown, "Arn")) || !strings.Contains(mustJSON(target["Input"]), `\"source\":\"aws.scheduler\"`) ||
		!strings.Contains(mustJSON(target["Input"]), `Scheduled Event`) {
		t.Errorf("teardown schedule target = %s", mustJSON(target))
	}
	group := f.resources[onlyID(t, f.ofType("AWS::Scheduler::ScheduleGroup"), "SchedulesGroup")].Properties
	if group["Name"] != ScheduleGroupName {
		t.Errorf("schedule group = %v", group["Name"])
	}
}

func TestModelBucket(t *testing.T) {
	f := synth(t)
	p := f.resources[onlyID(t, f.ofType("AWS::S3::Bucket"), "StorageModels")].Properties
	checks := map[string]interface{}{
		"VersioningConfiguration.Status":                       "Enabled",
		"PublicAccessBlockConfiguration.BlockPublicAcls":       true,
		"PublicAccessBlockConfiguration.BlockPublicPolicy":     true,
		"PublicAccessBlockConfiguration.IgnorePublicAcls":      true,
		"PublicAccessBlockConfiguration.RestrictPublicBuckets": true,
		"LoggingConfiguration.LogFilePrefix":                   "models/",
	}
	for path, want := range checks {
		if got := dig(p, path); got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	enc := mustJSON(p["BucketEncryption"])
	if !strings.Contains(enc, `"SSEAlgorithm":"AES256"`) {
		t.Errorf("BucketEncryption = %s, want S3-managed", enc)
	}
	// EventBridge notifications may be switched on by a custom resource.
	if p["NotificationConfiguration"] == nil {
		found := false
		for _, id := range f.ofType("Custom::S3BucketNotifications") {
			if strings.Contains(mustJSON(f.resources[id].Properties), `"EventBridgeConfiguration":{}`) {
				found = true
			}
		}
		if !found {
			t.Errorf("EventBridge notifications are not enabled on the model bucket")
		}
	}
	bucketID := onlyID(t, f.ofType("AWS::S3::Bucket"), "StorageModels")
	sslEnforced := false
	for _, id := range f.ofType("AWS::S3::BucketPolicy") {
		bp := f.resources[id].Properties
		doc := mustJSON(bp["PolicyDocument"])
		if reflect.DeepEqual(bp["Bucket"], ref(bucketID)) && strings.Contains(doc, `"aws:SecureTransport":"false"`) && strings.Contains(doc, `"Effect":"Deny"`) {
			sslEnforced = true
		}
	}
	if !sslEnforced {
		t.Errorf("no bucket policy denies non-TLS access to the model bucket")
	}
}

func TestStateMachine(t *testing.T) {
	f := synth(t)
	smID := onlyID(t, f.ofType("AWS::StepFunctions::StateMachine"), "DeployStateMachine")
	p := f.resources[smID].Properties
	if p["StateMachineType"] != "STANDARD" {
		t.Errorf("type = %v", p["StateMachineType"])
	}
	if !reflect.DeepEqual(p["TracingConfiguration"], map[string]interface{}{"Enabled": true}) {
		t.Errorf("tracing = %v", p["TracingConfiguration"])
	}
	logging := p["LoggingConfiguration"].(map[string]interface{})
	if logging["Level"] != "ALL" || logging["IncludeExecutionData"] != true || len(asList(logging["Destinations"])) != 1 {
		t.Errorf("logging = %v", logging)
	}

	t.Run("definition equals the ASL file", func(t *testing.T) {
		file, err := os.ReadFile(f.definitionPath)
		if err != nil {
			t.Fatal(err)
		}
		if p["DefinitionString"] != string(file) {
			t.Fatalf("DefinitionString differs from %s", f.definitionPath)
		}
		subs := p["DefinitionSubstitutions"].(map[string]interface{})
		if got := keys(subs); !reflect.DeepEqual(got, WorkflowPlaceholders) {
			t.Errorf("substitutions = %v, want %v", got, WorkflowPlaceholders)
		}
		// Resolve each placeholder to the logical id of the Lambda it names:
		// the result must be the file with each placeholder replaced, and
		// every Task must then point at a distinct workflow Lambda.
		stepOf := map[string]string{
			"ValidateFunctionArn": "validate", "ConfigureFunctionArn": "configure", "CapacityFunctionArn": "capacity",
			"RunTaskFunctionArn": "runtask", "HealthFunctionArn": "health", "AutoStopFunctionArn": "autostop",
			"CleanupFunctionArn": "cleanup", "ImageFunctionArn": "image",
		}
		resolved := string(file)
		for name, v := range subs {
			id, _ := f.function(t, stepOf[name])
			if !reflect.DeepEqual(v, getAtt(id, "Arn")) {
				t.Errorf("${%s} = %v, want the %s Lambda's ARN", name, v, stepOf[name])
			}
			resolved = strings.ReplaceAll(resolved, "${"+name+"}", "arn:lambda:"+id)
		}
		if placeholderPattern.MatchString(resolved) {
			t.Errorf("unresolved placeholders remain: %v", placeholderPattern.FindAllString(resolved, -1))
		}
		var asl struct {
			States map[string]struct {
				Type     string `json:"Type"`
				Resource string `json:"Resource"`
			} `json:"States"`
		}
		if err := json.Unmarshal([]byte(resolved), &asl); err != nil {
			t.Fatalf("resolved definition is not JSON: %v", err)
		}
		for state, s := range asl.States {
			if s.Type == "Task" && !strings.HasPrefix(s.Resource, "arn:lambda:Functions") {
				t.Errorf("state %s resource %q is not a stack Lambda", state, s.Resource)
			}
		}
	})

	t.Run("invokes the seven workflow Lambdas only", func(t *testing.T) {
		roleID := p["RoleArn"].(map[string]interface{})["Fn::GetAtt"].([]interface{})[0].(string)
		invoke := withAction(f.roleStatements(t, roleID), "lambda:InvokeFunction")
		var got []string
		for _, s := range invoke {
			for _, r := range s.Resources {
				got = append(got, mustJSON(r))
			}
		}
		var want []string
		for _, name := range FunctionNames {
			if name == "teardown" || name == "waker" {
				continue
			}
			id, _ := f.function(t, name)
			arn := getAtt(id, "Arn")
			want = append(want, mustJSON(arn), mustJSON(map[string]interface{}{"Fn::Join": []interface{}{"", []interface{}{arn, ":*"}}}))
		}
		sort.Strings(got)
		sort.Strings(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("lambda:InvokeFunction resources =\n%v\nwant\n%v", got, want)
		}
	})
}

// TestStateTimeoutsCoverFunctions: in the real workflow/deploy.asl.json, no Task state gives up before the
// Lambda it invokes may finish, with 10 s to spare (that would turn a slow success into States.Timeout, and a slow Clean up into a
// leak).
func TestStateTimeoutsCoverFunctions(t *testing.T) {
	f := synth(t)
	raw, err := os.ReadFile(filepath.Join("..", "workflow", "deploy.asl.json"))
	if err != nil {
		t.Fatal(err)
	}
	var asl struct {
		States map[string]struct {
			Type           string  `json:"Type"`
			Resource       string  `json:"Resource"`
			TimeoutSeconds float64 `json:"TimeoutSeconds"`
		} `json:"States"`
	}
	if err := json.Unmarshal(raw, &asl); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for state, s := range asl.States {
		if s.Type != "Task" {
			continue
		}
		// ${CleanupFunctionArn} → the cleanup Lambda.
		name := strings.ToLower(strings.TrimSuffix(strings.Trim(s.Resource, "${}"), "FunctionArn"))
		_, p := f.function(t, name)
		// A margin for the invocation itself (queueing, a cold start's init) on top of the function's own limit.
		if fn := p["Timeout"].(float64); s.TimeoutSeconds < fn+10 {
			t.Errorf("state %q times out after %gs, within 10 s of its %s function's %gs", state, s.TimeoutSeconds, name, fn)
		}
		checked++
	}
	if checked < len(WorkflowPlaceholders) {
		t.Errorf("checked %d Task states, want at least %d", checked, len(WorkflowPlaceholders))
	}
}

// TestStopDeploymentsOnDelete: the stack's custom resource, answered by the teardown function, depends on the
// cluster, every GPU group and capacity provider, so CloudFormation deletes it, stopping every deployment, before
// any of them.
func TestStopDeploymentsOnDelete(t *testing.T) {
	f := synth(t)
	id := onlyID(t, f.ofType("Custom::StopDeployments"), "StopDeploymentsOnDelete")
	teardown, _ := f.function(t, "teardown")
	if got := f.resources[id].Properties["ServiceToken"]; !reflect.DeepEqual(got, getAtt(teardown, "Arn")) {
		t.Errorf("service token = %v, want the teardown function", got)
	}
	raw := f.template.ToJSON()
	dependsOn := mustJSON((*raw)["Resources"].(map[string]interface{})[id].(map[string]interface{})["DependsOn"])
	want := append([]string{onlyID(t, f.ofType("AWS::ECS::Cluster"), "ComputeCluster")}, f.ofType("AWS::AutoScaling::AutoScalingGroup")...)
	want = append(want, f.ofType("AWS::ECS::CapacityProvider")...)
	for _, w := range want {
		if !strings.Contains(dependsOn, `"`+w+`"`) {
			t.Errorf("DependsOn %s lacks %s", dependsOn, w)
		}
	}
}

func TestOutputs(t *testing.T) {
	f := synth(t)
	want := []string{"ClusterName", "EndpointBase", "EventBusName", "GpuInstanceTypes", "GpuSpotInstanceTypes", "KeyPrefix", "ListenerArn", "LoadBalancerFullName", "ModelBucketName",
		"ModelImageRepository", "ModelPrefix", "ModelRegistry", "ScheduleGroupName", "StateMachineArn", "WakerTargetGroup"}
	if got := keys(f.outputs); !reflect.DeepEqual(got, want) {
		t.Errorf("outputs = %v, want %v", got, want)
	}
	if v := f.outputs["ModelPrefix"].(map[string]interface{})["Value"]; v != "models/" {
		t.Errorf("ModelPrefix output = %v", v)
	}
	if *f.stack.StackName() != StackID {
		t.Errorf("stack name = %s", *f.stack.StackName())
	}
}

// TestNag: the AWS Solutions pack reports nothing unsuppressed, and every
// suppression in the template carries a reason.
func TestNag(t *testing.T) {
	f := synth(t)
	nag := assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*"))
	for _, m := range *f.annotations.FindError(jsii.String("*"), nag) {
		t.Errorf("cdk-nag error at %s: %s", *m.Id, firstLine(fmt.Sprint(m.Entry.Data)))
	}
	for _, m := range *f.annotations.FindWarning(jsii.String("*"), nag) {
		t.Errorf("cdk-nag warning at %s: %s", *m.Id, firstLine(fmt.Sprint(m.Entry.Data)))
	}
	reason := regexp.MustCompile(`\S{3,}.*\S{3,}`)
	count := 0
	for id, r := range f.resources {
		var meta struct {
			RulesToSuppress []struct{ ID, Reason string } `json:"rules_to_suppress"`
		}
		raw, ok := r.Metadata["cdk_nag"]
		if !ok {
			continue
		}
		if err := json.Unmarshal([]byte(mustJSON(raw)), &meta); err != nil {
			t.Fatal(err)
		}
		for _, rule := range meta.RulesToSuppress {
			count++
			if len(rule.Reason) < 40 || !reason.MatchString(rule.Reason) {
				t.Errorf("%s: suppression of %s has no specific reason: %q", id, rule.ID, rule.Reason)
			}
		}
	}
	if count == 0 {
		t.Errorf("found no cdk-nag suppressions: the metadata walk is broken")
	}
}

func hasVolume(td map[string]interface{}, name, hostPath string) bool {
	for _, v := range asList(td["Volumes"]) {
		v, _ := v.(map[string]interface{})
		if v["Name"] == name && dig(v, "Host.SourcePath") == hostPath {
			return true
		}
	}
	return false
}

func hasMount(c map[string]interface{}, volume, path string) bool {
	for _, m := range asList(c["MountPoints"]) {
		m, _ := m.(map[string]interface{})
		if m["SourceVolume"] == volume && m["ContainerPath"] == path {
			return true
		}
	}
	return false
}

func dig(m map[string]interface{}, path string) interface{} {
	var cur interface{} = m
	for _, part := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]interface{})
		if !ok {
			return nil
		}
		cur = mm[part]
	}
	return cur
}

func keys[V any](m map[string]V) []string { return SortedKeys(m) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsValue(list []interface{}, v interface{}) bool {
	for _, x := range list {
		if reflect.DeepEqual(x, v) {
			return true
		}
	}
	return false
}

func sameSet(a, b []interface{}) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !containsValue(b, x) {
			return false
		}
	}
	return true
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestInternetFacingLoadBalancer: with the context keys, the load balancer is internet-facing in the public
// subnets, listens on HTTPS with the given certificate, and admits only the given CIDRs; cdk-nag stays clean. The
// same (second) synth turns model images off.
func TestInternetFacingLoadBalancer(t *testing.T) {
	cert := "arn:aws:acm:us-east-1:111122223333:certificate/0f0e0d0c-0000-4000-8000-000000000000"
	f, err := buildFixture(map[string]interface{}{
		contextPrefix + "loadBalancerScheme": "internet-facing", contextPrefix + "allowedCidrs": "203.0.113.0/24",
		contextPrefix + "certificateArn": cert, contextPrefix + "modelImageMaxGiB": "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	_, image := f.function(t, "image")
	if env := image["Environment"].(map[string]interface{})["Variables"].(map[string]interface{}); env["MODEL_IMAGE_REPOSITORY"] != "" {
		t.Errorf("modelImageMaxGiB 0: MODEL_IMAGE_REPOSITORY = %v, want none (every task pulls at start)", env["MODEL_IMAGE_REPOSITORY"])
	}
	alb := f.resources[onlyID(t, f.ofType("AWS::ElasticLoadBalancingV2::LoadBalancer"), "LoadBalancerAlb")].Properties
	if alb["Scheme"] != "internet-facing" || !strings.Contains(mustJSON(alb["Subnets"]), "publicSubnet") {
		t.Errorf("load balancer %s, want internet-facing in the public subnets", mustJSON(alb))
	}
	listener := f.resources[onlyID(t, f.ofType("AWS::ElasticLoadBalancingV2::Listener"), "LoadBalancerAlbListener")].Properties
	if listener["Protocol"] != "HTTPS" || listener["Port"] != float64(443) || !strings.Contains(mustJSON(listener["Certificates"]), cert) {
		t.Errorf("listener %s, want HTTPS on 443 with the certificate", mustJSON(listener))
	}
	lbSG := f.resources[onlyID(t, f.ofType("AWS::EC2::SecurityGroup"), "LoadBalancerSecurityGroup")].Properties
	ingress := asList(lbSG["SecurityGroupIngress"])
	if len(ingress) != 1 || ingress[0].(map[string]interface{})["CidrIp"] != "203.0.113.0/24" || ingress[0].(map[string]interface{})["FromPort"] != float64(443) {
		t.Errorf("load balancer ingress %s, want 203.0.113.0/24 on 443 only", mustJSON(ingress))
	}
	if out := mustJSON(f.outputs["EndpointBase"]); !strings.Contains(out, "https://") {
		t.Errorf("EndpointBase = %s, want https://", out)
	}
	for _, m := range *f.annotations.FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*"))) {
		t.Errorf("cdk-nag error at %s: %v", *m.Id, m.Entry.Data)
	}
}

// TestWakerIsTheLoadBalancersLambdaTarget: the waker's target group is a lambda one, named as the functions find
// it, whose one target is the waker function, which the load balancer may invoke; the waker may start the deploy
// state machine.
func TestWakerIsTheLoadBalancersLambdaTarget(t *testing.T) {
	f := synth(t)
	waker, _ := f.function(t, "waker")
	tg := f.resources[onlyID(t, f.ofType("AWS::ElasticLoadBalancingV2::TargetGroup"), "LoadBalancerWakerTargets")].Properties
	if tg["TargetType"] != "lambda" || tg["Name"] != WakerTargetGroupName(StackID) || !strings.Contains(mustJSON(tg["Targets"]), waker) {
		t.Errorf("waker target group %s", mustJSON(tg))
	}
	invoked := false
	for _, id := range f.ofType("AWS::Lambda::Permission") {
		p := f.resources[id].Properties
		if p["Principal"] == "elasticloadbalancing.amazonaws.com" && strings.Contains(mustJSON(p["FunctionName"]), waker) {
			invoked = true
		}
	}
	if !invoked {
		t.Error("the load balancer may not invoke the waker")
	}
	if start := withAction(f.functionStatements(t, "waker"), "states:StartExecution"); len(start) != 1 {
		t.Errorf("waker states:StartExecution = %+v, want the deploy state machine", start)
	}
}

// readScript reads one of the containers' entry scripts, which synth copies into the task definitions.
func readScript(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "container", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
