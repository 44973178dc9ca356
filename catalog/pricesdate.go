package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// ComputeData is compute.json as the catalog reads it: where its prices come from, for which region and as of
// when, and the instance types and Fargate rates the planner decides from.
type ComputeData struct {
	Source        string
	Region        string
	AsOf          time.Time
	InstanceTypes []InstanceType
	Fargate       Fargate
}

// ParseCompute reads a compute.json document strictly (unknown fields refused) and checks that every price is
// usable: the catalog loads the embedded one with it, and a regenerated file is checked with it before it replaces
// the data.
func ParseCompute(raw []byte) (*ComputeData, error) {
	var doc struct {
		Source        string         `json:"source"`
		AsOf          string         `json:"asOf"`
		Region        string         `json:"region"`
		Fargate       Fargate        `json:"fargate"`
		InstanceTypes []InstanceType `json:"instanceTypes"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("compute data: %w", err)
	}
	asOf, err := time.Parse(time.DateOnly, doc.AsOf)
	if err != nil {
		return nil, fmt.Errorf("compute data: asOf %q is not a YYYY-MM-DD date", doc.AsOf)
	}
	if doc.Region == "" {
		return nil, fmt.Errorf("compute data: no region")
	}
	if len(doc.InstanceTypes) == 0 {
		return nil, fmt.Errorf("compute data: no instance types")
	}
	for _, t := range doc.InstanceTypes {
		if t.Name == "" || t.OnDemandUSD <= 0 || t.SpotUSD <= 0 || !isFraction(t.Reserved1yDiscount) {
			return nil, fmt.Errorf("compute data: instance type %q has unusable prices (on-demand %v, spot %v, reserved discount %v)",
				t.Name, t.OnDemandUSD, t.SpotUSD, t.Reserved1yDiscount)
		}
	}
	f := doc.Fargate
	if f.VCPUHourUSD <= 0 || f.GBHourUSD <= 0 || !isFraction(f.SpotDiscount) || !isFraction(f.SavingsPlan1yDiscount) {
		return nil, fmt.Errorf("compute data: Fargate has unusable prices (vCPU-hour %v, GB-hour %v, Spot discount %v, Savings Plan discount %v)",
			f.VCPUHourUSD, f.GBHourUSD, f.SpotDiscount, f.SavingsPlan1yDiscount)
	}
	return &ComputeData{Source: doc.Source, Region: doc.Region, AsOf: asOf, InstanceTypes: doc.InstanceTypes, Fargate: doc.Fargate}, nil
}

// isFraction reports a discount AWS could offer: at least nothing, less than everything.
func isFraction(d float64) bool { return d >= 0 && d < 1 }

// ComputeJSON is the embedded compute.json, as written.
func ComputeJSON() []byte {
	raw, err := dataFS.ReadFile("data/compute.json")
	if err != nil {
		panic(err) // embedded at build time
	}
	return raw
}
