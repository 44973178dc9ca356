package catalog

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParseComputeMatchesLoad: ParseCompute reads the embedded compute.json exactly as load does (a field added to
// one and not the other fails here), and PricesAsOf is its date.
func TestParseComputeMatchesLoad(t *testing.T) {
	raw, err := dataFS.ReadFile("data/compute.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseCompute(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := Default()
	if !reflect.DeepEqual(d.InstanceTypes, c.InstanceTypes) {
		t.Errorf("instance types differ from the loaded catalog's")
	}
	f := c.Fargate
	f.Sizes = nil
	if !reflect.DeepEqual(d.Fargate, f) {
		t.Errorf("Fargate differs from the loaded catalog's: %+v vs %+v", d.Fargate, f)
	}
	want := d.Source + ", " + d.Region + " (" + d.AsOf.Format(time.DateOnly) + ")"
	if c.Sources["compute"] != want {
		t.Errorf("source %q, want %q", c.Sources["compute"], want)
	}
	asOf, err := c.PricesAsOf()
	if err != nil || !asOf.Equal(d.AsOf) || asOf.IsZero() || asOf.Location() != time.UTC {
		t.Errorf("PricesAsOf = %v, %v; want %v", asOf, err, d.AsOf)
	}
}

func TestParseComputeRefuses(t *testing.T) {
	good := `{"source": "s", "asOf": "2026-01-02", "region": "us-east-1",
	  "fargate": {"vcpuHourUSD": 0.04, "gbHourUSD": 0.004, "spotDiscount": 0.7, "savingsPlan1yDiscount": 0.2, "sizes": []},
	  "instanceTypes": [{"name": "m5.large", "vcpu": 2, "memoryMiB": 8192, "onDemandUSD": 0.096, "reserved1yDiscount": 0.375, "spotUSD": 0.04}]}`
	if _, err := ParseCompute([]byte(good)); err != nil {
		t.Fatalf("good document: %v", err)
	}
	for name, tc := range map[string]struct{ old, new, want string }{
		"unknown field": {`"region"`, `"bogus": 1, "region"`, "unknown field"},
		"bad date":      {`"2026-01-02"`, `"Jan 2"`, "asOf"},
		"no region":     {`"us-east-1"`, `""`, "no region"},
		"zero price":    {`"onDemandUSD": 0.096`, `"onDemandUSD": 0`, "m5.large"},
		"discount >= 1": {`"spotDiscount": 0.7`, `"spotDiscount": 1`, "Fargate"},
	} {
		_, err := ParseCompute([]byte(strings.Replace(good, tc.old, tc.new, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
	noTypes := good[:strings.Index(good, `"instanceTypes"`)] + `"instanceTypes": []}`
	if _, err := ParseCompute([]byte(noTypes)); err == nil || !strings.Contains(err.Error(), "no instance types") {
		t.Errorf("no types: %v", err)
	}
}
