package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
)

// MapContext is a ContextReader over a plain map, keyed like cdk.json.
type MapContext map[string]interface{}

func (m MapContext) TryGetContext(key *string) interface{} { return m[*key] }

func TestSettingsDefaults(t *testing.T) {
	s, err := LoadSettings(MapContext{}, "/repo")
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		GpuInstanceTypes: []string{"g4dn.xlarge", "g4dn.2xlarge"},
		MaxGpuInstances:  2,
		DevTTL:           "2h",
		TeardownCron:     "cron(0 20 * * ? *)",
		TeardownTimezone: "UTC",
		Image:            "ollama/ollama:0.17.4",
		ModelImageMaxGiB: 30,
		FetchImage:       "public.ecr.aws/aws-cli/aws-cli:2.27.0",
		ModelPrefix:      "models/",
		Policy:           "cost",
		HealthTimeout:    "30m",
		LambdaDist:       filepath.Join("/repo", "dist"),
		DefinitionFile:   filepath.Join("/repo", "workflow", "deploy.asl.json"),
		ContainerDir:     filepath.Join("/repo", "container"),
		AllowedCidrs:     []string{},
		APIKeys:          "off",
		IdleWindow:       "30m",
		MaxLifetime:      "12h",
		GpuSpot:          "on",
		ModelRegistry:    "registry.ollama.ai",
		ComputeDataFile:  filepath.Join("/repo", "catalog", "data", "compute.json"),
		SpotMaxPrices:    map[string]string{},
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("defaults =\n%+v\nwant\n%+v", s, want)
	}
}

func TestSettingsFromContext(t *testing.T) {
	cases := []struct {
		name  string
		ctx   MapContext
		check func(Settings) bool
	}{
		{"cdk.json list", MapContext{"ollama-ecs:gpuInstanceTypes": []interface{}{"p3.2xlarge"}},
			func(s Settings) bool { return reflect.DeepEqual(s.GpuInstanceTypes, []string{"p3.2xlarge"}) }},
		{"-c comma list", MapContext{"ollama-ecs:gpuInstanceTypes": "g4dn.xlarge, p3.2xlarge"},
			func(s Settings) bool {
				return reflect.DeepEqual(s.GpuInstanceTypes, []string{"g4dn.xlarge", "p3.2xlarge"})
			}},
		{"-c JSON list", MapContext{"ollama-ecs:gpuInstanceTypes": `["g5.xlarge"]`},
			func(s Settings) bool { return reflect.DeepEqual(s.GpuInstanceTypes, []string{"g5.xlarge"}) }},
		{"cdk.json number", MapContext{"ollama-ecs:maxGpuInstances": float64(4)},
			func(s Settings) bool { return s.MaxGpuInstances == 4 }},
		{"-c number", MapContext{"ollama-ecs:maxGpuInstances": "3"},
			func(s Settings) bool { return s.MaxGpuInstances == 3 }},
		{"no model images", MapContext{"ollama-ecs:modelImageMaxGiB": "0"},
			func(s Settings) bool { return s.ModelImageMaxGiB == 0 }},
		{"existing VPC", MapContext{"ollama-ecs:vpcId": "vpc-0123456789abcdef0"},
			func(s Settings) bool { return s.VpcID == "vpc-0123456789abcdef0" }},
		{"absolute dist kept", MapContext{"ollama-ecs:lambdaDist": "/tmp/dist"},
			func(s Settings) bool { return s.LambdaDist == "/tmp/dist" }},
		{"strings", MapContext{"ollama-ecs:devTtl": "45m", "ollama-ecs:policy": "seed", "ollama-ecs:modelPrefix": "uploads/",
			"ollama-ecs:teardownCron": "rate(1 day)", "ollama-ecs:image": "ollama/ollama:0.18.0"},
			func(s Settings) bool {
				return s.DevTTL == "45m" && s.Policy == "seed" && s.ModelPrefix == "uploads/" &&
					s.TeardownCron == "rate(1 day)" && s.Image == "ollama/ollama:0.18.0"
			}},
		{"internet-facing load balancer", MapContext{"ollama-ecs:loadBalancerScheme": "internet-facing",
			"ollama-ecs:allowedCidrs": "203.0.113.0/24, 198.51.100.7/32", "ollama-ecs:certificateArn": "arn:aws:acm:us-east-1:111122223333:certificate/x",
			"ollama-ecs:apiKeys": "on", "ollama-ecs:idleWindow": "15m"},
			func(s Settings) bool {
				return s.InternetFacing && reflect.DeepEqual(s.AllowedCidrs, []string{"203.0.113.0/24", "198.51.100.7/32"}) &&
					s.CertificateArn != "" && s.APIKeys == "on" && s.IdleWindow == "15m"
			}},
		{"upload defaults", MapContext{"ollama-ecs:uploadDefaults": "minTokensPerSecond=10, optimize=cost-per-token"},
			func(s Settings) bool { return s.UploadDefaults == "minTokensPerSecond=10, optimize=cost-per-token" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := LoadSettings(c.ctx, "/repo")
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(s) {
				t.Errorf("unexpected settings %+v", s)
			}
		})
	}
}

func TestSettingsRejectBadValues(t *testing.T) {
	cases := []struct {
		key   string
		value interface{}
	}{
		{"vpcId", "subnet-123"},
		{"vpcId", float64(3)},
		{"gpuInstanceTypes", []interface{}{}},
		{"gpuInstanceTypes", []interface{}{"g4dn.xlarge", "g4dn.xlarge"}},
		{"gpuInstanceTypes", []interface{}{"G4DN XL"}},
		{"gpuInstanceTypes", []interface{}{float64(1)}},
		{"maxGpuInstances", float64(0)},
		{"maxGpuInstances", float64(1.5)},
		{"maxGpuInstances", "two"},
		{"devTtl", "2 hours"},
		{"devTtl", "-1h"},
		{"healthTimeout", "0s"},
		{"teardownCron", "0 20 * * *"},
		{"teardownTimezone", "Mars/Olympus"},
		{"teardownTimezone", ""},
		{"modelPrefix", "models"},
		{"modelPrefix", "/models/"},
		{"policy", "Cost!"},
		{"modelImageMaxGiB", "-1"},
		{"modelImageMaxGiB", "1000"},
		{"image", ""},
		{"loadBalancerScheme", "public"},
		{"allowedCidrs", "10.0.0.0"},
		{"allowedCidrs", "0.0.0.0/0"},
		{"certificateArn", "my-cert"},
		{"apiKeys", "yes"},
		{"idleWindow", "soon"},
		{"maxLifetime", "0s"},
		{"uploadDefaults", "minTokensPerSecond=-1"},
		{"uploadDefaults", "minTokensPerSecond=fast"},
		{"uploadDefaults", "maxTimeToFirstToken=99999"},
		{"uploadDefaults", "optimize=fastest"},
		{"uploadDefaults", "speed=10"},
		{"gpuSpot", "yes"},
		{"modelRegistry", "https://registry.ollama.ai"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			_, err := LoadSettings(MapContext{contextPrefix + c.key: c.value}, "/repo")
			if err == nil || !strings.Contains(err.Error(), contextPrefix+c.key) {
				t.Errorf("%s=%v: err = %v, want an error naming the key", c.key, c.value, err)
			}
		})
	}
}

// TestSpotMaxPrices: each GPU type's Spot group is capped at its on-demand price from the catalog; a type the
// data lacks fails synth (unless gpuSpot is off).
func TestSpotMaxPrices(t *testing.T) {
	s := DefaultSettings()
	s.ComputeDataFile = filepath.Join("..", "catalog", "data", "compute.json")
	if err := s.LoadSpotMaxPrices(); err != nil || s.SpotMaxPrices["g4dn.xlarge"] != "0.526" || len(s.SpotMaxPrices) != 2 || s.ComputeDataRegion != "us-east-1" {
		t.Errorf("prices %v, err %v", s.SpotMaxPrices, err)
	}
	s.GpuInstanceTypes = []string{"g4dn.xlarge", "x9.huge"}
	if err := s.LoadSpotMaxPrices(); err == nil || !strings.Contains(err.Error(), "no on-demand price for x9.huge") {
		t.Errorf("a type without a price: %v", err)
	}
	s.GpuSpot, s.SpotMaxPrices = "off", map[string]string{}
	if err := s.LoadSpotMaxPrices(); err != nil || len(s.SpotMaxPrices) != 0 {
		t.Errorf("gpuSpot off: %v %v", s.SpotMaxPrices, err)
	}
}

func TestCheckLambdaDist(t *testing.T) {
	dir := t.TempDir()
	err := CheckLambdaDist(dir)
	if err == nil || !strings.Contains(err.Error(), "validate/bootstrap") || !strings.Contains(err.Error(), "make lambdas") {
		t.Errorf("empty dist: err = %v", err)
	}
}

func TestCapacityProviderName(t *testing.T) {
	if got := CapacityProviderName("OllamaEcs", "g4dn.2xlarge"); got != "OllamaEcs-g4dn-2xlarge" {
		t.Errorf("CapacityProviderName = %q", got)
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("CDK_DEFAULT_ACCOUNT", "")
	t.Setenv("CDK_DEFAULT_REGION", "")
	if env, err := environment(DefaultSettings()); err != nil || env != nil {
		t.Errorf("no CLI env: env=%v err=%v, want an environment-agnostic stack", env, err)
	}
	withVpc := DefaultSettings()
	withVpc.VpcID = "vpc-0123456789abcdef0"
	if _, err := environment(withVpc); err == nil || !strings.Contains(err.Error(), "vpcId") {
		t.Errorf("existing VPC without account/region: err = %v", err)
	}
	t.Setenv("CDK_DEFAULT_ACCOUNT", "123456789012")
	t.Setenv("CDK_DEFAULT_REGION", "eu-west-1")
	env, err := environment(withVpc)
	if err != nil || *env.Account != "123456789012" || *env.Region != "eu-west-1" {
		t.Errorf("env = %+v, err = %v", env, err)
	}
}

// TestSpotPriceRegionWarning: a stack in another region than the compute data's gets a synth warning, since its
// Spot groups are capped at that region's on-demand prices.
func TestSpotPriceRegionWarning(t *testing.T) {
	s := DefaultSettings()
	s.ComputeDataFile = filepath.Join("..", "catalog", "data", "compute.json")
	if err := s.LoadSpotMaxPrices(); err != nil {
		t.Fatal(err)
	}
	for region, warned := range map[string]bool{"eu-west-1": true, "us-east-1": false} {
		app := awscdk.NewApp(nil)
		stack := awscdk.NewStack(app, jsii.String("W"), &awscdk.StackProps{Env: &awscdk.Environment{Region: jsii.String(region)}})
		NewCluster(stack, "Compute", s, NewNetwork(stack, "Network", s))
		found := assertions.Annotations_FromStack(stack).FindWarning(jsii.String("*"),
			assertions.Match_StringLikeRegexp(jsii.String("make prices REGION="+region)))
		if got := len(*found) > 0; got != warned {
			t.Errorf("%s: warned %v, want %v", region, got, warned)
		}
	}
}
