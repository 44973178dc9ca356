package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/prices/pricestest"
)

// TestPricesCommand: the prices command against recorded AWS answers, through the SDK's default chain (endpoint,
// credentials) as a user's shell would set it: an unknown region is a usage error before any call, a dry run
// writes nothing, a refresh rewrites the prices, and a region AWS has no prices for fails leaving the file as it was.
func TestPricesCommand(t *testing.T) {
	const testdata = "../../catalog/prices/testdata"
	srv := pricestest.Start(t, testdata)
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL": srv.URL, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_REGION": "", "AWS_MAX_ATTEMPTS": "3", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none"),
	} {
		t.Setenv(k, v)
	}
	original, err := os.ReadFile(filepath.Join(testdata, "compute.json"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "compute.json")
	if err := os.WriteFile(path, original, 0o644); err != nil {
		t.Fatal(err)
	}
	prices := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"prices", "--out", path}, args...), &out, &out)
		return out.String(), err
	}
	unchanged := func(what string) {
		if now, _ := os.ReadFile(path); !bytes.Equal(now, original) {
			t.Errorf("%s changed the file", what)
		}
	}

	out, err := prices("--region", "us-east-9")
	if exitCode(err) != 2 || !strings.Contains(err.Error(), `unknown region "us-east-9"`) || srv.Called("pricing/AmazonEC2/us-east-9/m5.large.json") {
		t.Errorf("unknown region: %v (exit %d)\n%s", err, exitCode(err), out)
	}
	unchanged("an unknown region")

	out, err = prices("--dry-run")
	if err != nil || !regexp.MustCompile(`instanceTypes\[g4dn\.xlarge\]\.reserved1yDiscount +0\.37 +0\.3707 +\+0\.07 pt\n`).MatchString(out) ||
		!strings.Contains(out, "dry run: "+path+" not written") {
		t.Errorf("dry run: %v\n%s", err, out)
	}
	unchanged("a dry run")

	out, err = prices("--region", "eu-south-2")
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "m5.large onDemandUSD/reserved1yDiscount in eu-south-2") {
		t.Errorf("a region without prices: %v\n%s", err, out)
	}
	unchanged("a failed refresh")

	out, err = prices("--region", "us-east-1")
	if err != nil || !strings.Contains(out, "wrote "+path) {
		t.Fatalf("refresh: %v\n%s", err, out)
	}
	written, _ := os.ReadFile(path)
	d, err := catalog.ParseCompute(written)
	if err != nil {
		t.Fatal(err)
	}
	g4dn := d.InstanceTypes[5]
	if d.Region != "us-east-1" || d.AsOf.Format(time.DateOnly) != time.Now().UTC().Format(time.DateOnly) ||
		g4dn.Name != "g4dn.xlarge" || g4dn.Reserved1yDiscount != 0.3707 || g4dn.SpotUSD != 0.2166 || d.Fargate.SavingsPlan1yDiscount != 0.2 {
		t.Errorf("refreshed data: %s %v %+v %+v", d.Region, d.AsOf, g4dn, d.Fargate)
	}

	if data, from, err := readComputeData("-"); err != nil || !bytes.Equal(data, catalog.ComputeJSON()) || !strings.HasPrefix(from, "the built-in data (prices as of ") {
		t.Errorf("--out -: starts from %s, %v", from, err)
	}
}
