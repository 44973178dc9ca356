package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	// The time zone database travels with the app, so a time zone is checked the same on every machine.
	_ "time/tzdata"
)

// contextPrefix namespaces every setting in cdk.json so that CDK's own feature
// flags and ours never collide.
const contextPrefix = "ollama-ecs:"

// Settings is everything a deployment may change, read once from the CDK
// context (cdk.json "context" or `cdk synth -c key=value`). Constructs take
// typed values from here and never read the context themselves, so a typo in
// a key or a malformed value fails synth in one place with one message.
type Settings struct {
	// VpcID selects an existing VPC (looked up at synth time, which needs an
	// account and region); empty creates a VPC with private subnets and NAT.
	VpcID string
	// GpuInstanceTypes are the EC2 types that get an Auto Scaling capacity
	// provider each; the configure Lambda ranks only these.
	GpuInstanceTypes []string
	// MaxGpuInstances caps each GPU Auto Scaling group (minimum is always 0,
	// so an idle cluster costs nothing).
	MaxGpuInstances int
	// DevTTL is how long a dev deployment lives before its auto-stop schedule
	// fires (a Go duration such as "2h").
	DevTTL string
	// TeardownCron is the EventBridge Scheduler expression of the nightly stop
	// of every dev deployment, a safety net behind the per-deployment TTL.
	TeardownCron string
	// TeardownTimezone is the IANA time zone TeardownCron is read in (EventBridge
	// rules know only UTC: 20:00 UTC is 05:00 in Tokyo), e.g. "Asia/Tokyo".
	TeardownTimezone string
	// Image is the default Ollama image for both task definitions.
	Image string
	// ModelImageMaxGiB is the largest model the "Ensure model image" step bakes
	// into its own image in the stack's ECR repository (the seed's
	// "model-specific ECR images"); a larger one is pulled at start. 0 bakes none.
	ModelImageMaxGiB int
	// FetchImage is the init container that copies an uploaded GGUF from S3.
	FetchImage string
	// ModelPrefix is the key prefix in the model bucket whose uploads start a
	// deployment and which the tasks may read.
	ModelPrefix string
	// Policy is the default placement policy handed to the configure Lambda.
	Policy string
	// HealthTimeout bounds how long the workflow waits for a model to load.
	HealthTimeout string
	// LambdaDist is the folder holding <fn>/bootstrap, absolute after
	// resolution against the repository root.
	LambdaDist string
	// DefinitionFile is the state machine's ASL file, absolute after
	// resolution against the repository root.
	DefinitionFile string
	// ContainerDir holds the containers' entry scripts (ollama-entry.sh, fetch-entry.sh; the local runner runs the
	// same files), absolute after resolution against the repository root. LoadContainerScripts reads them.
	ContainerDir string
	// OllamaEntryScript and FetchEntryScript are the scripts' text, once read.
	OllamaEntryScript, FetchEntryScript string
	// InternetFacing puts the load balancer in the public subnets; it then
	// admits only AllowedCidrs (required). Internal by default: reachable
	// from the VPC (and what is peered or connected to it), from AllowedCidrs.
	InternetFacing bool
	AllowedCidrs   []string
	// CertificateArn (an ACM certificate) makes the listener HTTPS on 443.
	CertificateArn string
	// APIKeys puts every deployment behind an API key unless its request
	// says otherwise ("on" or "off").
	APIKeys string
	// IdleWindow is how far back auto-stop looks for requests; MaxLifetime
	// bounds how long use can keep a dev deployment past its TTL.
	IdleWindow  string
	MaxLifetime string
	// ModelRegistry is the registry host a model the catalog does not list
	// is resolved against (registry.ollama.ai, or a private mirror).
	ModelRegistry string
	// GpuSpot ("on" or "off") adds an EC2 Spot capacity provider per GPU
	// type beside the on-demand one: dev deployments try Spot first.
	GpuSpot string
	// ComputeDataFile is the catalog's compute data (catalog/data/compute.json),
	// whose on-demand prices cap each Spot group's price; SpotMaxPrices holds
	// them by GPU type once loaded (empty with GpuSpot off).
	ComputeDataFile string
	SpotMaxPrices   map[string]string
	// ComputeDataRegion is the region the compute data's prices are for.
	ComputeDataRegion string
	// UploadDefaults are the required performance and ranking of the
	// deployments S3 uploads start, which carry no request:
	// "minTokensPerSecond=10,maxTimeToFirstToken=5,optimize=speed" (any
	// subset; empty: none).
	UploadDefaults string
}

// DefaultSettings are the values used for every key absent from the context.
func DefaultSettings() Settings {
	return Settings{
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
		LambdaDist:       "dist",
		DefinitionFile:   "workflow/deploy.asl.json",
		ContainerDir:     "container",
		AllowedCidrs:     []string{},
		APIKeys:          "off",
		IdleWindow:       "30m",
		MaxLifetime:      "12h",
		GpuSpot:          "on",
		ModelRegistry:    "registry.ollama.ai",
		ComputeDataFile:  "catalog/data/compute.json",
		SpotMaxPrices:    map[string]string{},
	}
}

// ContextReader is the part of constructs.Node that settings need, so the
// parsing is tested without an App.
type ContextReader interface {
	TryGetContext(key *string) interface{}
}

var (
	instanceTypePattern = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`)
	schedulePattern     = regexp.MustCompile(`^(cron|rate)\(.+\)$`)
	policyPattern       = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	registryPattern     = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]{1,5})?$`)
)

// LoadSettings reads every setting from ctx, applies defaults, validates, and
// resolves the two paths against root (the folder holding cdk.json).
func LoadSettings(ctx ContextReader, root string) (Settings, error) {
	s := DefaultSettings()
	var errs []string
	fail := func(key string, err error) { errs = append(errs, fmt.Sprintf("%s%s: %v", contextPrefix, key, err)) }

	readString := func(key string, dst *string) {
		if v, ok, err := stringValue(ctx, key); err != nil {
			fail(key, err)
		} else if ok {
			*dst = v
		}
	}
	readString("vpcId", &s.VpcID)
	readString("devTtl", &s.DevTTL)
	readString("teardownCron", &s.TeardownCron)
	readString("teardownTimezone", &s.TeardownTimezone)
	readString("image", &s.Image)
	readString("fetchImage", &s.FetchImage)
	readString("modelPrefix", &s.ModelPrefix)
	readString("policy", &s.Policy)
	readString("healthTimeout", &s.HealthTimeout)
	readString("lambdaDist", &s.LambdaDist)
	readString("definitionFile", &s.DefinitionFile)
	readString("containerDir", &s.ContainerDir)
	readString("certificateArn", &s.CertificateArn)
	readString("apiKeys", &s.APIKeys)
	readString("idleWindow", &s.IdleWindow)
	readString("maxLifetime", &s.MaxLifetime)
	readString("uploadDefaults", &s.UploadDefaults)
	readString("gpuSpot", &s.GpuSpot)
	readString("modelRegistry", &s.ModelRegistry)
	readString("computeDataFile", &s.ComputeDataFile)
	var scheme string
	readString("loadBalancerScheme", &scheme)
	switch scheme {
	case "", "internal":
	case "internet-facing":
		s.InternetFacing = true
	default:
		fail("loadBalancerScheme", fmt.Errorf("%q is not internal or internet-facing", scheme))
	}
	if v, ok, err := stringListValue(ctx, "allowedCidrs"); err != nil {
		fail("allowedCidrs", err)
	} else if ok {
		s.AllowedCidrs = v
	}

	if v, ok, err := stringListValue(ctx, "gpuInstanceTypes"); err != nil {
		fail("gpuInstanceTypes", err)
	} else if ok {
		s.GpuInstanceTypes = v
	}
	if v, ok, err := intValue(ctx, "maxGpuInstances"); err != nil {
		fail("maxGpuInstances", err)
	} else if ok {
		s.MaxGpuInstances = v
	}
	if v, ok, err := intValue(ctx, "modelImageMaxGiB"); err != nil {
		fail("modelImageMaxGiB", err)
	} else if ok {
		s.ModelImageMaxGiB = v
	}

	// Validation: each check names the key so the message is actionable.
	if s.VpcID != "" && !strings.HasPrefix(s.VpcID, "vpc-") {
		fail("vpcId", fmt.Errorf("%q is not a VPC id (vpc-...)", s.VpcID))
	}
	if len(s.GpuInstanceTypes) == 0 {
		fail("gpuInstanceTypes", fmt.Errorf("at least one GPU instance type is needed"))
	}
	seen := map[string]bool{}
	for _, t := range s.GpuInstanceTypes {
		if !instanceTypePattern.MatchString(t) {
			fail("gpuInstanceTypes", fmt.Errorf("%q is not an EC2 instance type", t))
		}
		if seen[t] {
			fail("gpuInstanceTypes", fmt.Errorf("%q is listed twice", t))
		}
		seen[t] = true
	}
	if s.MaxGpuInstances < 1 {
		fail("maxGpuInstances", fmt.Errorf("must be at least 1, got %d", s.MaxGpuInstances))
	}
	for _, c := range s.AllowedCidrs {
		if _, _, err := net.ParseCIDR(c); err != nil || !strings.Contains(c, ".") {
			fail("allowedCidrs", fmt.Errorf("%q is not an IPv4 CIDR such as \"10.0.0.0/8\"", c))
		}
		if c == "0.0.0.0/0" && !s.InternetFacing {
			fail("allowedCidrs", fmt.Errorf("0.0.0.0/0 on an internal load balancer: name the networks that may call the models"))
		}
	}
	if s.InternetFacing && len(s.AllowedCidrs) == 0 {
		fail("allowedCidrs", fmt.Errorf("an internet-facing load balancer needs the source CIDRs allowed to call it"))
	}
	if s.CertificateArn != "" && !strings.HasPrefix(s.CertificateArn, "arn:") {
		fail("certificateArn", fmt.Errorf("%q is not an ACM certificate ARN", s.CertificateArn))
	}
	if s.APIKeys != "on" && s.APIKeys != "off" {
		fail("apiKeys", fmt.Errorf("%q is not on or off", s.APIKeys))
	}
	for key, v := range map[string]string{"devTtl": s.DevTTL, "healthTimeout": s.HealthTimeout, "idleWindow": s.IdleWindow, "maxLifetime": s.MaxLifetime} {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			fail(key, fmt.Errorf("%q is not a positive Go duration such as \"2h\"", v))
		}
	}
	if !registryPattern.MatchString(s.ModelRegistry) {
		fail("modelRegistry", fmt.Errorf("%q is not a registry host[:port]", s.ModelRegistry))
	}
	if s.GpuSpot != "on" && s.GpuSpot != "off" {
		fail("gpuSpot", fmt.Errorf("%q is not on or off", s.GpuSpot))
	}
	if err := checkRequirements(s.UploadDefaults); err != nil {
		fail("uploadDefaults", err)
	}
	if !schedulePattern.MatchString(s.TeardownCron) {
		fail("teardownCron", fmt.Errorf("%q is not an EventBridge cron(...) or rate(...) expression", s.TeardownCron))
	}
	if _, err := time.LoadLocation(s.TeardownTimezone); err != nil || s.TeardownTimezone == "" || s.TeardownTimezone == "Local" {
		fail("teardownTimezone", fmt.Errorf("%q is not an IANA time zone such as \"UTC\" or \"Asia/Tokyo\"", s.TeardownTimezone))
	}
	if s.Image == "" {
		fail("image", fmt.Errorf("must not be empty"))
	}
	if s.FetchImage == "" {
		fail("fetchImage", fmt.Errorf("must not be empty"))
	}
	if s.ModelImageMaxGiB < 0 || s.ModelImageMaxGiB > 150 {
		fail("modelImageMaxGiB", fmt.Errorf("%d must be between 0 (bake none) and 150 (what a Lambda streams in its 15 minutes at best)", s.ModelImageMaxGiB))
	}
	if s.ModelPrefix == "" || strings.HasPrefix(s.ModelPrefix, "/") || !strings.HasSuffix(s.ModelPrefix, "/") {
		fail("modelPrefix", fmt.Errorf("%q must be a relative key prefix ending in /", s.ModelPrefix))
	}
	if !policyPattern.MatchString(s.Policy) {
		fail("policy", fmt.Errorf("%q must be a lower-case word", s.Policy))
	}
	if s.LambdaDist == "" {
		fail("lambdaDist", fmt.Errorf("must not be empty"))
	}
	if s.DefinitionFile == "" {
		fail("definitionFile", fmt.Errorf("must not be empty"))
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return Settings{}, fmt.Errorf("invalid cdk.json context:\n  %s", strings.Join(errs, "\n  "))
	}

	s.LambdaDist = resolvePath(root, s.LambdaDist)
	s.DefinitionFile = resolvePath(root, s.DefinitionFile)
	s.ContainerDir = resolvePath(root, s.ContainerDir)
	s.ComputeDataFile = resolvePath(root, s.ComputeDataFile)
	return s, nil
}

// LoadContainerScripts reads the containers' entry scripts from ContainerDir.
func (s *Settings) LoadContainerScripts() error {
	for file, into := range map[string]*string{"ollama-entry.sh": &s.OllamaEntryScript, "fetch-entry.sh": &s.FetchEntryScript} {
		raw, err := os.ReadFile(filepath.Join(s.ContainerDir, file))
		if err != nil {
			return fmt.Errorf("container entry script: %w (set ollama-ecs:containerDir)", err)
		}
		*into = string(raw)
	}
	return nil
}

// LoadSpotMaxPrices reads, with gpuSpot on, each GPU type's on-demand hourly price from the catalog's compute data
// into SpotMaxPrices: a Spot group's maximum price, so Spot never costs more than on-demand (what EC2 does when no
// maximum is given; CDK's Spot launch template needs one).
func (s *Settings) LoadSpotMaxPrices() error {
	if s.GpuSpot != "on" {
		return nil
	}
	prices, region, err := spotMaxPrices(s.ComputeDataFile, s.GpuInstanceTypes)
	if err != nil {
		return fmt.Errorf("%sgpuSpot: %v", contextPrefix, err)
	}
	s.SpotMaxPrices, s.ComputeDataRegion = prices, region
	return nil
}

func spotMaxPrices(file string, types []string) (map[string]string, string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, "", err
	}
	var data struct {
		Region        string `json:"region"`
		InstanceTypes []struct {
			Name        string  `json:"name"`
			OnDemandUSD float64 `json:"onDemandUSD"`
		} `json:"instanceTypes"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, "", fmt.Errorf("%s: %v", file, err)
	}
	prices := map[string]string{}
	for _, typ := range types {
		for _, t := range data.InstanceTypes {
			if t.Name == typ && t.OnDemandUSD > 0 {
				prices[typ] = strconv.FormatFloat(t.OnDemandUSD, 'f', -1, 64)
			}
		}
		if prices[typ] == "" {
			return nil, "", fmt.Errorf("%s has no on-demand price for %s, which caps its Spot price (or set gpuSpot off)", file, typ)
		}
	}
	return prices, data.Region, nil
}

// checkRequirements checks an uploadDefaults value as the validate function
// reads it (events.ParseRequirements in the root module), so a bad value
// fails synth rather than every upload.
func checkRequirements(v string) error {
	bounds := map[string]float64{"minTokensPerSecond": 10000, "maxTimeToFirstToken": 3600}
	for _, kv := range strings.Split(v, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, val, _ := strings.Cut(kv, "=")
		if k == "optimize" {
			if val != "cost" && val != "speed" && val != "cost-per-token" {
				return fmt.Errorf("optimize %q is not cost, speed or cost-per-token", val)
			}
			continue
		}
		limit, ok := bounds[k]
		if !ok {
			return fmt.Errorf("%q is not minTokensPerSecond, maxTimeToFirstToken or optimize", k)
		}
		if f, err := strconv.ParseFloat(val, 64); err != nil || !(f >= 0 && f <= limit) {
			return fmt.Errorf("%s=%q is not a number in 0..%g", k, val, limit)
		}
	}
	return nil
}

func resolvePath(root, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(root, p)
}

// The readers below accept both cdk.json's JSON types and the plain strings
// that `cdk synth -c key=value` produces, so either way of setting a value works.

func stringValue(ctx ContextReader, key string) (string, bool, error) {
	raw := ctx.TryGetContext(ptr(contextPrefix + key))
	if raw == nil {
		return "", false, nil
	}
	s, ok := raw.(string)
	if !ok {
		return "", false, fmt.Errorf("want a string, got %T", raw)
	}
	return s, true, nil
}

func intValue(ctx ContextReader, key string) (int, bool, error) {
	switch v := ctx.TryGetContext(ptr(contextPrefix + key)).(type) {
	case nil:
		return 0, false, nil
	case float64:
		if v != float64(int(v)) {
			return 0, false, fmt.Errorf("want a whole number, got %v", v)
		}
		return int(v), true, nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0, false, fmt.Errorf("want a whole number, got %q", v)
		}
		return n, true, nil
	default:
		return 0, false, fmt.Errorf("want a number, got %T", v)
	}
}

func stringListValue(ctx ContextReader, key string) ([]string, bool, error) {
	switch v := ctx.TryGetContext(ptr(contextPrefix + key)).(type) {
	case nil:
		return nil, false, nil
	case []interface{}:
		out := make([]string, 0, len(v))
		for _, item := range v {
			s, ok := item.(string)
			if !ok {
				return nil, false, fmt.Errorf("want a list of strings, got an item of type %T", item)
			}
			out = append(out, s)
		}
		return out, true, nil
	case string:
		if strings.HasPrefix(strings.TrimSpace(v), "[") {
			var out []string
			if err := json.Unmarshal([]byte(v), &out); err != nil {
				return nil, false, fmt.Errorf("want a JSON list of strings: %v", err)
			}
			return out, true, nil
		}
		var out []string
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return out, true, nil
	default:
		return nil, false, fmt.Errorf("want a list of strings, got %T", v)
	}
}

func ptr[T any](v T) *T { return &v }
