package catalog

import (
	"strings"
	"testing"
	"time"
)

// TestPricesDate: the loaded catalog carries the compute data's region and date, and names them in its sources.
func TestPricesDate(t *testing.T) {
	c := Default()
	if c.PricesRegion == "" || c.PricesAsOf.IsZero() || c.PricesAsOf.Location() != time.UTC {
		t.Fatalf("prices %q as of %v", c.PricesRegion, c.PricesAsOf)
	}
	if want := ", " + c.PricesRegion + " (" + c.PricesAsOf.Format(time.DateOnly) + ")"; !strings.HasSuffix(c.Sources["compute"], want) {
		t.Errorf("source %q lacks %q", c.Sources["compute"], want)
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
