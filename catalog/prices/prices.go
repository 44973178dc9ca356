// Package prices regenerates the price fields of the compute data (catalog/data/compute.json) from AWS, for the
// instance types the data already lists and one region:
//
//   - EC2 On-Demand and one-year standard No Upfront Reserved prices, and Fargate's per vCPU-hour and per GB-hour
//     prices (with Fargate Spot's, when the price list has them), from the Price List Query API (GetProducts);
//   - each instance type's Spot price from EC2's Spot price history (DescribeSpotPriceHistory);
//   - Fargate's one-year Compute Savings Plan discount from the Savings Plans offering rates.
//
// Every other member of the file is kept as written. Refresh returns the whole new document or an error naming the
// region, the instance type (or Fargate) and the field it could not price; WriteFile replaces the file atomically.
package prices

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	pricingtypes "github.com/aws/aws-sdk-go-v2/service/pricing/types"
	"github.com/aws/aws-sdk-go-v2/service/savingsplans"
	sptypes "github.com/aws/aws-sdk-go-v2/service/savingsplans/types"
	"github.com/aws/smithy-go"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

const (
	// PricingRegion is where the Price List Query API and the Savings Plans API are called, whatever region is
	// priced.
	PricingRegion = "us-east-1"
	// SpotWindow is how far back the Spot price history is read.
	SpotWindow = 7 * 24 * time.Hour

	hoursPerYear = 365 * 24
	oneYear      = 365 * 24 * 3600 // a one-year Savings Plan's durationSeconds

	// The reference Fargate task that weighs the vCPU and GB discounts into one figure: 1 vCPU and 4 GB, the m5
	// family's ratio and the shape of the model servers the planner sizes.
	refVCPU, refGB = 1.0, 4.0

	// Decimals written: prices as the price list gives them (it quotes up to 10), Spot prices and discounts a
	// little coarser than they move.
	priceDecimals    = 8
	spotDecimals     = 6
	discountDecimals = 4
)

// Fargate's usage types without their region prefix (USE1-, EU-, APN1-...): x86 Linux tasks and their Spot form.
const (
	fargateVCPU     = "Fargate-vCPU-Hours:perCPU"
	fargateGB       = "Fargate-GB-Hours"
	fargateSpotVCPU = "SpotUsage-Fargate-vCPU-Hours:perCPU"
	fargateSpotGB   = "SpotUsage-Fargate-GB-Hours"
)

// Products is the Price List Query API call the refresh makes.
type Products interface {
	GetProducts(ctx context.Context, in *pricing.GetProductsInput, opts ...func(*pricing.Options)) (*pricing.GetProductsOutput, error)
}

// SpotHistory is the EC2 call the refresh makes, on a client in the region being priced.
type SpotHistory interface {
	DescribeSpotPriceHistory(ctx context.Context, in *ec2.DescribeSpotPriceHistoryInput, opts ...func(*ec2.Options)) (*ec2.DescribeSpotPriceHistoryOutput, error)
}

// SavingsPlanRates is the Savings Plans call the refresh makes.
type SavingsPlanRates interface {
	DescribeSavingsPlansOfferingRates(ctx context.Context, in *savingsplans.DescribeSavingsPlansOfferingRatesInput, opts ...func(*savingsplans.Options)) (*savingsplans.DescribeSavingsPlansOfferingRatesOutput, error)
}

var (
	_ Products         = (*pricing.Client)(nil)
	_ SpotHistory      = (*ec2.Client)(nil)
	_ SavingsPlanRates = (*savingsplans.Client)(nil)
)

// Clients are the AWS clients a refresh calls.
type Clients struct {
	Pricing Products
	EC2     SpotHistory
	// SavingsPlans may be nil: the data's savingsPlan1yDiscount is then kept, and the source says so.
	SavingsPlans SavingsPlanRates
}

// Change is one price that a refresh moved.
type Change struct {
	// Field names the member, e.g. instanceTypes[m5.large].onDemandUSD or fargate.vcpuHourUSD.
	Field    string
	Old, New float64
}

// Result is a refreshed compute document.
type Result struct {
	// JSON is the whole new file.
	JSON []byte
	// Changes are the prices that moved, in file order.
	Changes []Change
	// Kept says which figures were not refreshed, and why (the source says it too).
	Kept []string
}

// FieldError is a price the refresh could not produce.
type FieldError struct {
	// Region is the region priced; Subject the instance type, or Fargate; Field the data member(s).
	Region, Subject, Field string
	Err                    error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %s in %s: %v", e.Subject, e.Field, e.Region, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// Refresh prices the instance types listed in current (a compute.json document) and Fargate in region, as of now,
// and returns the new document. Any price that cannot be read fails the whole refresh.
func Refresh(ctx context.Context, c Clients, region string, current []byte, now time.Time) (*Result, error) {
	if err := CheckRegion(region); err != nil {
		return nil, err
	}
	doc, types, names, fargate, err := parseCompute(current)
	if err != nil {
		return nil, fmt.Errorf("current compute data: %w", err)
	}
	r := &refresher{c: c, region: region, now: now.UTC()}

	instance := map[string]instancePrice{}
	for _, name := range names {
		p, err := r.instancePrice(ctx, name)
		if err != nil {
			return nil, err
		}
		instance[name] = p
	}
	fg, err := r.fargate(ctx)
	if err != nil {
		return nil, err
	}
	spDiscount, spRead := math.NaN(), c.SavingsPlans != nil
	if spRead {
		if spDiscount, err = r.savingsPlan(ctx, fg); err != nil {
			return nil, err
		}
	}
	spot, err := r.spot(ctx, names)
	if err != nil {
		return nil, err
	}

	res := &Result{}
	update := func(o *object, label, field string, v json.RawMessage) {
		old := floatOf(*o, field)
		o.set(field, v)
		if n := floatOf(*o, field); n != old {
			res.Changes = append(res.Changes, Change{Field: label + "." + field, Old: old, New: n})
		}
	}
	update(&fargate, "fargate", "vcpuHourUSD", number(fg.VCPU, priceDecimals))
	update(&fargate, "fargate", "gbHourUSD", number(fg.GB, priceDecimals))
	if fg.HasSpot {
		update(&fargate, "fargate", "spotDiscount", number(discount(fg.SpotVCPU, fg.SpotGB, fg.VCPU, fg.GB), discountDecimals))
	} else {
		res.Kept = append(res.Kept, "fargate.spotDiscount kept from the previous data: the Price List has no Fargate Spot prices for "+region)
	}
	if spRead {
		update(&fargate, "fargate", "savingsPlan1yDiscount", number(spDiscount, discountDecimals))
	} else {
		res.Kept = append(res.Kept, "fargate.savingsPlan1yDiscount kept from the previous data: no Savings Plans rates were read")
	}
	for i, name := range names {
		p, label := instance[name], "instanceTypes["+name+"]"
		update(&types[i], label, "onDemandUSD", number(p.OnDemand, priceDecimals))
		update(&types[i], label, "reserved1yDiscount", number(1-p.Reserved/p.OnDemand, discountDecimals))
		if p.NoReservation {
			res.Kept = append(res.Kept, label+".reserved1yDiscount is 0: the Price List offers "+name+" no reservation in "+region)
		}
		update(&types[i], label, "spotUSD", number(spot[name], spotDecimals))
	}
	elems := make([]json.RawMessage, len(types))
	for i, t := range types {
		if elems[i], err = t.MarshalJSON(); err != nil {
			return nil, err
		}
	}
	rawTypes, err := json.Marshal(elems)
	if err != nil {
		return nil, err
	}
	rawFargate, err := fargate.MarshalJSON()
	if err != nil {
		return nil, err
	}
	oldSource := ""
	if v, ok := doc.get("source"); ok {
		_ = json.Unmarshal(v, &oldSource)
	}
	doc.set("source", str(source(oldSource, fg.HasSpot, spRead, res.Kept)))
	doc.set("asOf", str(r.now.Format(time.DateOnly)))
	doc.set("region", str(region))
	doc.set("fargate", rawFargate)
	doc.set("instanceTypes", rawTypes)
	if res.JSON, err = render(doc); err != nil {
		return nil, err
	}
	if _, err := catalog.ParseCompute(res.JSON); err != nil {
		return nil, fmt.Errorf("the refreshed data would not load: %w", err)
	}
	return res, nil
}

// parseCompute splits the document into the members a refresh rewrites: the instance types (with their names)
// and the fargate object.
func parseCompute(raw []byte) (doc object, types []object, names []string, fargate object, err error) {
	if doc, err = parseObject(raw); err != nil {
		return
	}
	rawTypes, ok := doc.get("instanceTypes")
	if !ok {
		return nil, nil, nil, nil, errors.New("no instanceTypes")
	}
	var elems []json.RawMessage
	if err = json.Unmarshal(rawTypes, &elems); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("instanceTypes: %w", err)
	}
	if len(elems) == 0 {
		return nil, nil, nil, nil, errors.New("instanceTypes is empty: there is nothing to price")
	}
	for i, e := range elems {
		t, err := parseObject(e)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("instanceTypes[%d]: %w", i, err)
		}
		var name string
		if v, ok := t.get("name"); ok {
			_ = json.Unmarshal(v, &name)
		}
		if name == "" || strings.TrimSpace(name) != name {
			return nil, nil, nil, nil, fmt.Errorf("instanceTypes[%d]: no usable name", i)
		}
		if slices.Contains(names, name) {
			return nil, nil, nil, nil, fmt.Errorf("instance type %s is listed twice", name)
		}
		types, names = append(types, t), append(names, name)
	}
	rawFargate, ok := doc.get("fargate")
	if !ok {
		return nil, nil, nil, nil, errors.New("no fargate")
	}
	if fargate, err = parseObject(rawFargate); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("fargate: %w", err)
	}
	return doc, types, names, fargate, nil
}

type refresher struct {
	c      Clients
	region string
	now    time.Time
}

func (r *refresher) fail(subject, field string, err error) error {
	return &FieldError{Region: r.region, Subject: subject, Field: field, Err: err}
}

// products returns every PriceList item of a GetProducts query, following NextToken to the last page.
func (r *refresher) products(ctx context.Context, service string, filters [][2]string) ([]string, error) {
	in := &pricing.GetProductsInput{ServiceCode: aws.String(service), FormatVersion: aws.String("aws_v1"), MaxResults: aws.Int32(100)}
	for _, f := range filters {
		in.Filters = append(in.Filters, pricingtypes.Filter{Type: pricingtypes.FilterTypeTermMatch, Field: aws.String(f[0]), Value: aws.String(f[1])})
	}
	var items []string
	seen := map[string]bool{}
	for {
		out, err := r.c.Pricing.GetProducts(ctx, in)
		if err != nil {
			return nil, callErr("pricing:GetProducts", err)
		}
		if v := aws.ToString(out.FormatVersion); v != "" && v != "aws_v1" {
			return nil, fmt.Errorf("pricing:GetProducts answered in format %q, not aws_v1", v)
		}
		items = append(items, out.PriceList...)
		tok := aws.ToString(out.NextToken)
		if tok == "" {
			return items, nil
		}
		if seen[tok] {
			return nil, fmt.Errorf("pricing:GetProducts returned NextToken %q twice", tok)
		}
		seen[tok] = true
		next := *in
		next.NextToken = aws.String(tok)
		in = &next
	}
}

// The filters every EC2 query sets, besides the instance type and region: what the planner's prices are for.
var ec2Filters = [][2]string{
	{"operatingSystem", "Linux"},
	{"tenancy", "Shared"},
	{"preInstalledSw", "NA"},
	{"capacitystatus", "Used"},
}

type instancePrice struct {
	OnDemand, Reserved float64
	SKU                string
	// NoReservation is true for a type AWS sells no reservation at all (p5): its discount is 0.
	NoReservation bool
}

// instancePrice reads one instance type's On-Demand hourly price and its one-year standard No Upfront Reserved
// effective hourly price.
func (r *refresher) instancePrice(ctx context.Context, typ string) (instancePrice, error) {
	const fields = "onDemandUSD/reserved1yDiscount"
	filters := append([][2]string{{"instanceType", typ}, {"regionCode", r.region}}, ec2Filters...)
	items, err := r.products(ctx, "AmazonEC2", filters)
	if err != nil {
		return instancePrice{}, r.fail(typ, fields, err)
	}
	if len(items) == 0 {
		return instancePrice{}, r.fail(typ, fields, errors.New("the Price List has no AmazonEC2 product for it "+
			"(Linux, shared tenancy, no pre-installed software, capacitystatus Used): an unknown type, or one the region does not offer"))
	}
	var found []instancePrice
	for i, raw := range items {
		it, err := parseItem(raw)
		if err != nil {
			return instancePrice{}, r.fail(typ, fields, fmt.Errorf("PriceList item %d: %w", i+1, err))
		}
		a := it.Product.Attributes
		if !matches(a, filters) || cmp.Or(a["operation"], "RunInstances") != "RunInstances" || cmp.Or(a["marketoption"], "OnDemand") != "OnDemand" {
			continue
		}
		od, err := it.onDemandHourly()
		if err != nil {
			return instancePrice{}, r.fail(typ, "onDemandUSD", fmt.Errorf("SKU %s: %w", it.Product.SKU, err))
		}
		if len(it.Terms.Reserved) == 0 {
			// No Reserved term of any kind: AWS sells this type no reservation (p5.48xlarge), so no discount.
			found = append(found, instancePrice{OnDemand: od, Reserved: od, SKU: it.Product.SKU, NoReservation: true})
			continue
		}
		rs, err := it.reservedHourly("1yr", "standard", "No Upfront")
		if err != nil {
			return instancePrice{}, r.fail(typ, "reserved1yDiscount", fmt.Errorf("SKU %s: %w", it.Product.SKU, err))
		}
		if rs >= od {
			return instancePrice{}, r.fail(typ, "reserved1yDiscount", fmt.Errorf("SKU %s: the reserved hourly price $%v is not below the on-demand $%v", it.Product.SKU, rs, od))
		}
		found = append(found, instancePrice{OnDemand: od, Reserved: rs, SKU: it.Product.SKU})
	}
	if len(found) == 0 {
		return instancePrice{}, r.fail(typ, fields, fmt.Errorf("none of the %d PriceList items is a Linux RunInstances On-Demand product in %s", len(items), r.region))
	}
	for _, p := range found[1:] {
		if p.OnDemand != found[0].OnDemand || p.Reserved != found[0].Reserved {
			return instancePrice{}, r.fail(typ, fields, fmt.Errorf("products %s and %s price it differently", found[0].SKU, p.SKU))
		}
	}
	return found[0], nil
}

func matches(attrs map[string]string, filters [][2]string) bool {
	for _, f := range filters {
		if attrs[f[0]] != f[1] {
			return false
		}
	}
	return true
}

type fargateRates struct {
	VCPU, GB         float64
	SpotVCPU, SpotGB float64
	HasSpot          bool
}

// fargate reads Fargate's On-Demand rates, and its Spot rates when the price list has them for the region.
func (r *refresher) fargate(ctx context.Context) (fargateRates, error) {
	items, err := r.products(ctx, "AmazonECS", [][2]string{{"regionCode", r.region}})
	if err != nil {
		return fargateRates{}, r.fail("Fargate", "vcpuHourUSD/gbHourUSD/spotDiscount", err)
	}
	if len(items) == 0 {
		return fargateRates{}, r.fail("Fargate", "vcpuHourUSD/gbHourUSD", errors.New("the Price List has no AmazonECS products for the region"))
	}
	fields := map[string]string{fargateVCPU: "vcpuHourUSD", fargateGB: "gbHourUSD", fargateSpotVCPU: "spotDiscount", fargateSpotGB: "spotDiscount"}
	found := map[string]float64{}
	for i, raw := range items {
		it, err := parseItem(raw)
		if err != nil {
			return fargateRates{}, r.fail("Fargate", "vcpuHourUSD/gbHourUSD/spotDiscount", fmt.Errorf("PriceList item %d: %w", i+1, err))
		}
		usage := usageType(it.Product.Attributes["usagetype"])
		field, ok := fields[usage]
		if !ok || cmp.Or(it.Product.Attributes["regionCode"], r.region) != r.region {
			continue
		}
		p, err := it.onDemandHourly()
		if err != nil {
			return fargateRates{}, r.fail("Fargate", field, fmt.Errorf("%s (SKU %s): %w", it.Product.Attributes["usagetype"], it.Product.SKU, err))
		}
		if prev, ok := found[usage]; ok && prev != p {
			return fargateRates{}, r.fail("Fargate", field, fmt.Errorf("two products for %s price it $%v and $%v", usage, prev, p))
		}
		found[usage] = p
	}
	for _, u := range []string{fargateVCPU, fargateGB} {
		if _, ok := found[u]; !ok {
			return fargateRates{}, r.fail("Fargate", fields[u], fmt.Errorf("the Price List has no %s product for the region", u))
		}
	}
	f := fargateRates{VCPU: found[fargateVCPU], GB: found[fargateGB]}
	sv, okV := found[fargateSpotVCPU]
	sg, okG := found[fargateSpotGB]
	if okV != okG {
		return fargateRates{}, r.fail("Fargate", "spotDiscount", fmt.Errorf("the Price List has only one of %s and %s", fargateSpotVCPU, fargateSpotGB))
	}
	if okV {
		f.SpotVCPU, f.SpotGB, f.HasSpot = sv, sg, true
		if d := discount(sv, sg, f.VCPU, f.GB); d <= 0 || d >= 1 {
			return fargateRates{}, r.fail("Fargate", "spotDiscount", fmt.Errorf("Spot rates $%v/vCPU-hour and $%v/GB-hour against $%v and $%v give a discount of %v", sv, sg, f.VCPU, f.GB, d))
		}
	}
	return f, nil
}

// usageType drops a usage type's region prefix: USE1-Fargate-GB-Hours and EU-Fargate-GB-Hours are Fargate-GB-Hours.
func usageType(u string) string {
	if strings.HasPrefix(u, "Fargate-") || strings.HasPrefix(u, "SpotUsage-") {
		return u
	}
	_, rest, _ := strings.Cut(u, "-")
	return rest
}

// discount is what the reduced rates save on the reference task.
func discount(vcpu, gb, fullVCPU, fullGB float64) float64 {
	return 1 - (vcpu*refVCPU+gb*refGB)/(fullVCPU*refVCPU+fullGB*refGB)
}

// savingsPlan reads the one-year No Upfront Compute Savings Plan rates for Fargate's vCPU and GB hours and
// returns the reference task's discount.
func (r *refresher) savingsPlan(ctx context.Context, fg fargateRates) (float64, error) {
	const field = "savingsPlan1yDiscount"
	in := &savingsplans.DescribeSavingsPlansOfferingRatesInput{
		SavingsPlanTypes:          []sptypes.SavingsPlanType{sptypes.SavingsPlanTypeCompute},
		SavingsPlanPaymentOptions: []sptypes.SavingsPlanPaymentOption{sptypes.SavingsPlanPaymentOptionNoUpfront},
		Products:                  []sptypes.SavingsPlanProductType{sptypes.SavingsPlanProductTypeFargate},
		ServiceCodes:              []sptypes.SavingsPlanRateServiceCode{sptypes.SavingsPlanRateServiceCodeFargate},
		Filters: []sptypes.SavingsPlanOfferingRateFilterElement{
			{Name: sptypes.SavingsPlanRateFilterAttributeRegion, Values: []string{r.region}},
		},
		MaxResults: 1000,
	}
	rates := map[string]float64{}
	seen := map[string]bool{}
	for {
		out, err := r.c.SavingsPlans.DescribeSavingsPlansOfferingRates(ctx, in)
		if err != nil {
			return 0, r.fail("Fargate", field, callErr("savingsplans:DescribeSavingsPlansOfferingRates", err))
		}
		for _, rate := range out.SearchResults {
			o := rate.SavingsPlanOffering
			if o == nil || o.DurationSeconds != oneYear || o.PlanType != sptypes.SavingsPlanTypeCompute ||
				o.PaymentOption != sptypes.SavingsPlanPaymentOptionNoUpfront || cmp.Or(o.Currency, sptypes.CurrencyCodeUsd) != sptypes.CurrencyCodeUsd {
				continue
			}
			if !propertyIs(rate.Properties, "region", r.region) {
				continue
			}
			usage := usageType(aws.ToString(rate.UsageType))
			if usage != fargateVCPU && usage != fargateGB {
				continue
			}
			p, err := parsePrice(aws.ToString(rate.Rate))
			if err != nil {
				return 0, r.fail("Fargate", field, fmt.Errorf("%s rate: %w", aws.ToString(rate.UsageType), err))
			}
			if prev, ok := rates[usage]; ok && prev != p {
				return 0, r.fail("Fargate", field, fmt.Errorf("two one-year rates for %s: $%v and $%v", usage, prev, p))
			}
			rates[usage] = p
		}
		tok := aws.ToString(out.NextToken)
		if tok == "" {
			break
		}
		if seen[tok] {
			return 0, r.fail("Fargate", field, fmt.Errorf("savingsplans:DescribeSavingsPlansOfferingRates returned nextToken %q twice", tok))
		}
		seen[tok] = true
		next := *in
		next.NextToken = aws.String(tok)
		in = &next
	}
	for _, u := range []string{fargateVCPU, fargateGB} {
		if _, ok := rates[u]; !ok {
			return 0, r.fail("Fargate", field, fmt.Errorf("the Savings Plans API has no one-year No Upfront Compute Savings Plan rate for %s", u))
		}
	}
	d := discount(rates[fargateVCPU], rates[fargateGB], fg.VCPU, fg.GB)
	if d <= 0 || d >= 1 {
		return 0, r.fail("Fargate", field, fmt.Errorf("rates $%v/vCPU-hour and $%v/GB-hour against $%v and $%v give a discount of %v",
			rates[fargateVCPU], rates[fargateGB], fg.VCPU, fg.GB, d))
	}
	return d, nil
}

func propertyIs(props []sptypes.SavingsPlanOfferingRateProperty, name, want string) bool {
	for _, p := range props {
		if aws.ToString(p.Name) == name {
			return aws.ToString(p.Value) == want
		}
	}
	return true // a rate that does not say its region is taken as the region filtered for
}

// spot reads the Linux/UNIX Spot price history of the last SpotWindow for the types, in every availability zone of
// the region, and returns per type the median over the zones of each zone's latest price.
func (r *refresher) spot(ctx context.Context, types []string) (map[string]float64, error) {
	in := &ec2.DescribeSpotPriceHistoryInput{
		ProductDescriptions: []string{"Linux/UNIX", "Linux/UNIX (Amazon VPC)"},
		StartTime:           aws.Time(r.now.Add(-SpotWindow)),
		EndTime:             aws.Time(r.now),
		MaxResults:          aws.Int32(1000),
	}
	for _, t := range types {
		in.InstanceTypes = append(in.InstanceTypes, ec2types.InstanceType(t))
	}
	type point struct {
		at    time.Time
		price float64
	}
	latest := map[string]map[string]point{}
	seen := map[string]bool{}
	for {
		out, err := r.c.EC2.DescribeSpotPriceHistory(ctx, in)
		if err != nil {
			return nil, r.fail(strings.Join(types, ", "), "spotUSD", callErr("ec2:DescribeSpotPriceHistory", err))
		}
		for _, sp := range out.SpotPriceHistory {
			typ := string(sp.InstanceType)
			if !slices.Contains(types, typ) || !strings.HasPrefix(string(sp.ProductDescription), "Linux/UNIX") {
				continue
			}
			az := aws.ToString(sp.AvailabilityZone)
			if az == "" {
				return nil, r.fail(typ, "spotUSD", errors.New("a Spot price without an availability zone"))
			}
			p, err := parsePrice(aws.ToString(sp.SpotPrice))
			if err == nil && p == 0 {
				err = errors.New("a Spot price of $0")
			}
			if err != nil {
				return nil, r.fail(typ, "spotUSD", fmt.Errorf("%s: %w", az, err))
			}
			at := aws.ToTime(sp.Timestamp)
			if latest[typ] == nil {
				latest[typ] = map[string]point{}
			}
			if cur, ok := latest[typ][az]; !ok || at.After(cur.at) {
				latest[typ][az] = point{at, p}
			}
		}
		tok := aws.ToString(out.NextToken)
		if tok == "" {
			break
		}
		if seen[tok] {
			return nil, r.fail(strings.Join(types, ", "), "spotUSD", fmt.Errorf("ec2:DescribeSpotPriceHistory returned nextToken %q twice", tok))
		}
		seen[tok] = true
		next := *in
		next.NextToken = aws.String(tok)
		in = &next
	}
	out := map[string]float64{}
	for _, t := range types {
		var ps []float64
		for _, p := range latest[t] {
			ps = append(ps, p.price)
		}
		if len(ps) == 0 {
			return nil, r.fail(t, "spotUSD", fmt.Errorf("no Linux/UNIX Spot price history in any availability zone between %s and %s",
				r.now.Add(-SpotWindow).Format(time.RFC3339), r.now.Format(time.RFC3339)))
		}
		out[t] = median(ps)
	}
	return out, nil
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// source is the data's new source: what this refresh read, then whatever the old source said that is not about
// prices (where non-price figures such as GPU memory come from).
func source(old string, fargateSpot, savingsPlan bool, kept []string) string {
	clauses := []string{
		"AWS Price List Query API (GetProducts): EC2 On-Demand hourly prices and the 1-year standard No Upfront Reserved Instance's effective hourly price (reserved1yDiscount = 1 - reserved/on-demand), Linux, shared tenancy, no pre-installed software, capacitystatus Used",
	}
	fargate := "AWS Fargate (AmazonECS) x86 Linux per vCPU-hour and per GB-hour prices"
	if fargateSpot {
		fargate += ", and Fargate Spot's (spotDiscount for a 1 vCPU / 4 GB task)"
	}
	clauses = append(clauses, fargate,
		"EC2 Spot price history (DescribeSpotPriceHistory, Linux/UNIX, the last 7 days): spotUSD is the median over the region's availability zones of each zone's latest price, an estimate since Spot prices move")
	if savingsPlan {
		clauses = append(clauses, "Savings Plans API (DescribeSavingsPlansOfferingRates): 1-year No Upfront Compute Savings Plan rates for Fargate (savingsPlan1yDiscount for a 1 vCPU / 4 GB task)")
	}
	clauses = append(clauses, kept...)
	for _, c := range strings.Split(old, "; ") {
		l := strings.ToLower(c)
		if c != "" && !strings.Contains(l, "price") && !strings.Contains(l, "savings plan") {
			clauses = append(clauses, c)
		}
	}
	return strings.Join(clauses, "; ")
}

// callError is an AWS call that failed, as one line: the call, the error code and AWS's message.
type callError struct {
	op, msg string
	err     error
}

func (e *callError) Error() string { return e.op + ": " + e.msg }
func (e *callError) Unwrap() error { return e.err }

func callErr(op string, err error) error {
	msg := err.Error()
	var api smithy.APIError
	if errors.As(err, &api) {
		msg = api.ErrorCode() + ": " + api.ErrorMessage()
	}
	var max *retry.MaxAttemptsError
	if errors.As(err, &max) {
		msg += fmt.Sprintf(" (gave up after %d attempts)", max.Attempt)
	}
	return &callError{op: op, msg: strings.Join(strings.Fields(msg), " "), err: err}
}

// parsePrice reads a USD amount as AWS writes it ("0.0960000000").
func parsePrice(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, fmt.Errorf("%q is not a price in USD", s)
	}
	return f, nil
}
