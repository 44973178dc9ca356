package prices

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	"github.com/aws/aws-sdk-go-v2/service/savingsplans"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/prices/pricestest"
	"github.com/ollama-ecs/ollama-ecs/test/moto"
)

// now is when the recorded responses were taken: the Spot history in testdata/ec2 covers the week before it.
var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// recorded are the prices in testdata, by instance type: On-Demand, the reserved discount the 1-year standard No
// Upfront term gives (rounded as written), and the median over the availability zones of each zone's latest Spot
// price.
var recorded = map[string]struct{ onDemand, reserved, spot float64 }{
	"m5.large":     {0.096, 0.375, 0.0371},
	"m5.xlarge":    {0.192, 0.375, 0.0737}, // four zones: the mean of the middle two; zone c's older price ignored
	"m5.2xlarge":   {0.384, 0.375, 0.149},
	"m5.4xlarge":   {0.768, 0.375, 0.295},
	"m5.8xlarge":   {1.536, 0.375, 0.6011},
	"g4dn.xlarge":  {0.526, 0.3707, 0.2166},
	"g4dn.2xlarge": {0.752, 0.3697, 0.3082},
	"p3.2xlarge":   {3.06, 0.3497, 0.918},
	"g5.xlarge":    {1.006, 0.3698, 0.4024},
	"g6.xlarge":    {0.8048, 0.37, 0.3248},
	"g6e.xlarge":   {1.861, 0.3702, 0.7444},
	"g5.12xlarge":  {5.672, 0.3701, 2.2688},
}

func newFake(t *testing.T) (*pricestest.Server, aws.Config) {
	f := pricestest.Start(t, "testdata")
	return f, f.Config()
}

func clientsFor(cfg aws.Config) Clients {
	return Clients{Pricing: pricing.NewFromConfig(cfg), EC2: ec2.NewFromConfig(cfg), SavingsPlans: savingsplans.NewFromConfig(cfg)}
}

func snapshot(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/compute.json")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestRefreshFromRecordedResponses: the real SDK clients read the recorded answers (every second page included);
// the file written loads through the catalog with the recorded prices, every other field as it was, and the
// layout unchanged but for the price values. A second refresh of its output changes nothing.
func TestRefreshFromRecordedResponses(t *testing.T) {
	f, cfg := newFake(t)
	path := filepath.Join(t.TempDir(), "compute.json")
	original := snapshot(t)
	if err := os.WriteFile(path, original, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := UpdateFile(context.Background(), clientsFor(cfg), "us-east-1", path, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"pricing/AmazonEC2/us-east-1/m5.large.page2.json", "pricing/AmazonECS/us-east-1.page2.json",
		"savingsplans/us-east-1.page2.json", "ec2/spot-us-east-1.page2.xml"} {
		if !f.Called(key) {
			t.Errorf("the second page %s was never asked for", key)
		}
	}
	written, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(written, res.JSON) {
		t.Fatalf("file written differs from the result: %v", err)
	}
	got, err := catalog.ParseCompute(written)
	if err != nil {
		t.Fatal(err)
	}
	before, err := catalog.ParseCompute(original)
	if err != nil {
		t.Fatal(err)
	}
	if got.Region != "us-east-1" || got.AsOf.Format(time.DateOnly) != "2026-12-01" {
		t.Errorf("region %s as of %v", got.Region, got.AsOf)
	}
	for _, want := range []string{"GetProducts", "DescribeSpotPriceHistory", "DescribeSavingsPlansOfferingRates", "median", "Fargate Spot",
		"GPU memory is what nvidia-smi reports as usable"} {
		if !strings.Contains(got.Source, want) {
			t.Errorf("source lacks %q: %s", want, got.Source)
		}
	}
	if len(got.InstanceTypes) != len(recorded) || len(before.InstanceTypes) != len(recorded) {
		t.Fatalf("%d instance types, want %d", len(got.InstanceTypes), len(recorded))
	}
	for i, it := range got.InstanceTypes {
		want, ok := recorded[it.Name]
		if !ok {
			t.Fatalf("unexpected type %s", it.Name)
		}
		if it.OnDemandUSD != want.onDemand || it.Reserved1yDiscount != want.reserved || it.SpotUSD != want.spot {
			t.Errorf("%s: on-demand %v reserved %v spot %v, want %+v", it.Name, it.OnDemandUSD, it.Reserved1yDiscount, it.SpotUSD, want)
		}
		old := before.InstanceTypes[i]
		it.OnDemandUSD, it.Reserved1yDiscount, it.SpotUSD = old.OnDemandUSD, old.Reserved1yDiscount, old.SpotUSD
		if !reflect.DeepEqual(it, old) {
			t.Errorf("non-price fields changed: %+v, was %+v", it, old)
		}
	}
	fg := got.Fargate
	// Spot: 1 - (0.01214398 + 4×0.00133326)/(0.04048 + 4×0.004445); the Savings Plan: 0.032384 and 0.003556.
	if fg.VCPUHourUSD != 0.04048 || fg.GBHourUSD != 0.004445 || fg.SpotDiscount != 0.7 || fg.SavingsPlan1yDiscount != 0.2 {
		t.Errorf("Fargate %+v", fg)
	}
	if fmt.Sprint(fg.Ranges) != fmt.Sprint(before.Fargate.Ranges) {
		t.Errorf("Fargate sizes changed")
	}
	// The layout: the same lines, but for the price values, the source and the date.
	mask := regexp.MustCompile(`("(onDemandUSD|reserved1yDiscount|spotUSD|vcpuHourUSD|gbHourUSD|spotDiscount|savingsPlan1yDiscount)": )[0-9.]+|("(source|asOf)": )"[^"]*"`)
	if a, b := mask.ReplaceAllString(string(original), "$1$3X"), mask.ReplaceAllString(string(written), "$1$3X"); a != b {
		t.Errorf("layout changed:\n%s\nwas\n%s", b, a)
	}
	var changed []string
	for _, c := range res.Changes {
		changed = append(changed, fmt.Sprintf("%s %v→%v", c.Field, c.Old, c.New))
	}
	for _, want := range []string{"instanceTypes[g4dn.xlarge].reserved1yDiscount 0.37→0.3707", "instanceTypes[m5.xlarge].spotUSD 0.074→0.0737"} {
		if !slices.Contains(changed, want) {
			t.Errorf("changes %v lack %s", changed, want)
		}
	}
	if slices.ContainsFunc(changed, func(c string) bool { return strings.HasPrefix(c, "instanceTypes[m5.large].onDemandUSD") }) || len(res.Kept) != 0 {
		t.Errorf("changes %v, kept %v", changed, res.Kept)
	}
	again, err := Refresh(context.Background(), clientsFor(cfg), "us-east-1", written, now)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.JSON, written) || len(again.Changes) != 0 {
		t.Errorf("a second refresh changed %v:\n%s", again.Changes, again.JSON)
	}
}

// TestRefreshFailuresLeaveFileUntouched: a price that cannot be read fails with the region, the type and the
// field, and the file is byte for byte what it was, with no temporary file left beside it.
func TestRefreshFailuresLeaveFileUntouched(t *testing.T) {
	const ec2 = "pricing/AmazonEC2/us-east-1/"
	setUSD := func(term, value string) func(map[string]any) {
		return func(item map[string]any) {
			for _, tm := range item["terms"].(map[string]any)[term].(map[string]any) {
				for _, d := range tm.(map[string]any)["priceDimensions"].(map[string]any) {
					d.(map[string]any)["pricePerUnit"].(map[string]any)["USD"] = value
				}
			}
		}
	}
	for _, tc := range []struct {
		name   string
		region string
		setup  func(*pricestest.Server)
		want   []string
	}{
		{"malformed price", "us-east-1", func(f *pricestest.Server) {
			f.Override(ec2+"m5.xlarge.json", f.EditItem(ec2+"m5.xlarge.json", setUSD("OnDemand", "abc")))
		}, []string{"m5.xlarge onDemandUSD in us-east-1", `pricePerUnit.USD "abc" is not a price`}},
		{"missing OnDemand term", "us-east-1", func(f *pricestest.Server) {
			f.Override(ec2+"g5.xlarge.json", f.EditItem(ec2+"g5.xlarge.json", func(item map[string]any) {
				delete(item["terms"].(map[string]any), "OnDemand")
			}))
		}, []string{"g5.xlarge onDemandUSD in us-east-1", "no OnDemand term"}},
		{"missing reserved term", "us-east-1", func(f *pricestest.Server) {
			f.Override(ec2+"g6e.xlarge.json", f.EditItem(ec2+"g6e.xlarge.json", func(item map[string]any) {
				reserved := item["terms"].(map[string]any)["Reserved"].(map[string]any)
				for k, tm := range reserved {
					if a := tm.(map[string]any)["termAttributes"].(map[string]any); a["LeaseContractLength"] == "1yr" && a["OfferingClass"] == "standard" {
						delete(reserved, k)
					}
				}
			}))
		}, []string{"g6e.xlarge reserved1yDiscount in us-east-1", "no Reserved term (1yr standard No Upfront)"}},
		{"a type the price list lacks", "us-east-1", func(f *pricestest.Server) {
			f.Override(ec2+"p3.2xlarge.json", `{"FormatVersion":"aws_v1","PriceList":[]}`)
		}, []string{"p3.2xlarge onDemandUSD/reserved1yDiscount in us-east-1", "no AmazonEC2 product"}},
		{"empty price list for the region", "eu-south-2", nil,
			[]string{"m5.large onDemandUSD/reserved1yDiscount in eu-south-2", "no AmazonEC2 product"}},
		{"Fargate memory price missing", "us-east-1", func(f *pricestest.Server) {
			for _, key := range []string{"pricing/AmazonECS/us-east-1.json", "pricing/AmazonECS/us-east-1.page2.json"} {
				f.Override(key, f.DropItems(key, `"usagetype":"USE1-Fargate-GB-Hours"`))
			}
		}, []string{"Fargate gbHourUSD in us-east-1", "no Fargate-GB-Hours product"}},
		{"only one Fargate Spot price", "us-east-1", func(f *pricestest.Server) {
			f.Override("pricing/AmazonECS/us-east-1.json", f.DropItems("pricing/AmazonECS/us-east-1.json", "USE1-SpotUsage-Fargate-GB-Hours"))
		}, []string{"Fargate spotDiscount in us-east-1", "only one of"}},
		{"malformed Savings Plan rate", "us-east-1", func(f *pricestest.Server) {
			f.Override("savingsplans/us-east-1.page2.json", strings.Replace(f.Read("savingsplans/us-east-1.page2.json"), `"0.0323840000"`, `"n/a"`, 1))
		}, []string{"Fargate savingsPlan1yDiscount in us-east-1", `"n/a" is not a price`}},
		{"no Spot history for a type", "us-east-1", func(f *pricestest.Server) {
			items := regexp.MustCompile(`(?s)\s*<item>\s*<availabilityZone>[^<]*</availabilityZone>\s*<instanceType>p3\.2xlarge</instanceType>.*?</item>`)
			for _, file := range []string{"ec2/spot-us-east-1.xml", "ec2/spot-us-east-1.page2.xml"} {
				f.Override(file, items.ReplaceAllString(f.Read(file), ""))
			}
		}, []string{"p3.2xlarge spotUSD in us-east-1", "no Linux/UNIX Spot price history"}},
		{"throttled past the retries", "us-east-1", func(f *pricestest.Server) {
			f.Fail("pricing", 400, `{"__type":"ThrottlingException","Message":"Rate exceeded"}`)
		},
			[]string{"m5.large onDemandUSD/reserved1yDiscount in us-east-1", "pricing:GetProducts: ThrottlingException: Rate exceeded (gave up after 3 attempts)"}},
		{"Savings Plans refused", "us-east-1", func(f *pricestest.Server) {
			f.Fail("savingsplans", 400, `{"__type":"AccessDeniedException","message":"User is not authorized to perform: savingsplans:DescribeSavingsPlansOfferingRates"}`)
		}, []string{"Fargate savingsPlan1yDiscount in us-east-1", "savingsplans:DescribeSavingsPlansOfferingRates", "not authorized"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, cfg := newFake(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "compute.json")
			original := snapshot(t)
			if err := os.WriteFile(path, original, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := UpdateFile(context.Background(), clientsFor(cfg), tc.region, path, now)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want it to say %q", err, want)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Region != tc.region {
				t.Errorf("error %#v is not a FieldError for %s", err, tc.region)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, original) {
				t.Error("the file changed")
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("the directory holds %d entries, want only the file", len(entries))
			}
		})
	}
}

// failingClients fail the test on any call.
type failingClients struct{ t *testing.T }

func (f failingClients) GetProducts(context.Context, *pricing.GetProductsInput, ...func(*pricing.Options)) (*pricing.GetProductsOutput, error) {
	f.t.Error("GetProducts called")
	return nil, errors.New("called")
}

func (f failingClients) DescribeSpotPriceHistory(context.Context, *ec2.DescribeSpotPriceHistoryInput, ...func(*ec2.Options)) (*ec2.DescribeSpotPriceHistoryOutput, error) {
	f.t.Error("DescribeSpotPriceHistory called")
	return nil, errors.New("called")
}

func (f failingClients) DescribeSavingsPlansOfferingRates(context.Context, *savingsplans.DescribeSavingsPlansOfferingRatesInput, ...func(*savingsplans.Options)) (*savingsplans.DescribeSavingsPlansOfferingRatesOutput, error) {
	f.t.Error("DescribeSavingsPlansOfferingRates called")
	return nil, errors.New("called")
}

// TestBadInputBeforeAnyCall: an unknown region, or data that is not a compute document, is refused before AWS is
// called.
func TestBadInputBeforeAnyCall(t *testing.T) {
	c := Clients{Pricing: failingClients{t}, EC2: failingClients{t}, SavingsPlans: failingClients{t}}
	for _, region := range []string{"us-east-9", "US-EAST-1", "", "cn-north-1", "us-east-1 "} {
		_, err := Refresh(context.Background(), c, region, snapshot(t), now)
		var ure *UnknownRegionError
		if !errors.As(err, &ure) || !strings.Contains(err.Error(), fmt.Sprintf("unknown region %q", region)) || !strings.Contains(err.Error(), "eu-west-1") {
			t.Errorf("%q: %v", region, err)
		}
	}
	for name, doc := range map[string]string{
		"not JSON":        "{",
		"no types":        `{"fargate": {}, "instanceTypes": []}`,
		"a nameless type": `{"fargate": {}, "instanceTypes": [{"vcpu": 2}]}`,
		"a type twice":    `{"fargate": {}, "instanceTypes": [{"name": "m5.large"}, {"name": "m5.large"}]}`,
		"no fargate":      `{"instanceTypes": [{"name": "m5.large"}]}`,
		"trailing data":   `{"fargate": {}, "instanceTypes": [{"name": "m5.large"}]} {}`,
	} {
		if _, err := Refresh(context.Background(), c, "us-east-1", []byte(doc), now); err == nil || !strings.HasPrefix(err.Error(), "current compute data: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestKeptFigures: without Fargate Spot prices in the price list, or without a Savings Plans client, those
// discounts keep their values and the source says so.
func TestKeptFigures(t *testing.T) {
	f, cfg := newFake(t)
	for _, key := range []string{"pricing/AmazonECS/us-east-1.json", "pricing/AmazonECS/us-east-1.page2.json"} {
		f.Override(key, f.DropItems(key, "SpotUsage"))
	}
	c := clientsFor(cfg)
	c.SavingsPlans = nil
	res, err := Refresh(context.Background(), c, "us-east-1", snapshot(t), now)
	if err != nil {
		t.Fatal(err)
	}
	d, err := catalog.ParseCompute(res.JSON)
	if err != nil {
		t.Fatal(err)
	}
	if d.Fargate.SpotDiscount != 0.70 || d.Fargate.SavingsPlan1yDiscount != 0.20 || d.Fargate.VCPUHourUSD != 0.04048 {
		t.Errorf("Fargate %+v", d.Fargate)
	}
	if len(res.Kept) != 2 || !strings.Contains(d.Source, "fargate.spotDiscount kept from the previous data: the Price List has no Fargate Spot prices for us-east-1") ||
		!strings.Contains(d.Source, "fargate.savingsPlan1yDiscount kept") || strings.Contains(d.Source, "DescribeSavingsPlansOfferingRates") {
		t.Errorf("kept %v; source %s", res.Kept, d.Source)
	}
	for _, c := range res.Changes {
		if strings.HasSuffix(c.Field, "Discount") && strings.HasPrefix(c.Field, "fargate.") {
			t.Errorf("kept figure changed: %+v", c)
		}
	}
}

// TestSpotHistoryFromMoto: the real EC2 client against moto_server, which answers DescribeSpotPriceHistory with
// one price ($0.00001) per availability zone for the types its region offers, and nothing for the rest
// (p3.2xlarge in us-east-1).
func TestSpotHistoryFromMoto(t *testing.T) {
	srv := moto.Start(t)
	_, cfg := newFake(t)
	c := clientsFor(cfg)
	c.EC2 = ec2.NewFromConfig(pricestest.FastRetries(srv.Config()))
	full := snapshot(t)
	var without []string
	for _, line := range strings.Split(string(full), "\n") {
		if !strings.Contains(line, `"name": "p3.2xlarge"`) {
			without = append(without, line)
		}
	}
	res, err := Refresh(moto.Context(t), c, "us-east-1", []byte(strings.Join(without, "\n")), now)
	if err != nil {
		t.Fatal(err)
	}
	d, err := catalog.ParseCompute(res.JSON)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range d.InstanceTypes {
		if it.SpotUSD != 0.00001 || it.OnDemandUSD != recorded[it.Name].onDemand {
			t.Errorf("%s: spot %v on-demand %v", it.Name, it.SpotUSD, it.OnDemandUSD)
		}
	}
	_, err = Refresh(moto.Context(t), c, "us-east-1", full, now)
	if err == nil || !strings.Contains(err.Error(), "p3.2xlarge spotUSD in us-east-1: no Linux/UNIX Spot price history") {
		t.Errorf("p3.2xlarge, which moto has no offering of: %v", err)
	}
}

// TestLayoutRoundTrip: reading and writing the data file back without changes gives the same bytes.
func TestLayoutRoundTrip(t *testing.T) {
	for _, raw := range [][]byte{snapshot(t), catalog.ComputeJSON()} {
		doc, err := parseObject(raw)
		if err != nil {
			t.Fatal(err)
		}
		out, err := render(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, raw) {
			t.Errorf("round trip changed the file:\n%s", out)
		}
	}
	if got := string(number(0.37000000000000005, 4)) + " " + string(number(0.0044450000, 8)) + " " + string(number(1, 4)); got != "0.37 0.004445 1" {
		t.Errorf("numbers written as %s", got)
	}
	if !math.IsNaN(floatOf(object{{"a", json.RawMessage(`"x"`)}}, "a")) || !math.IsNaN(floatOf(nil, "a")) {
		t.Error("floatOf of a non-number")
	}
}

func TestUsageType(t *testing.T) {
	for in, want := range map[string]string{
		"USE1-Fargate-vCPU-Hours:perCPU":           fargateVCPU,
		"EU-Fargate-GB-Hours":                      fargateGB,
		"Fargate-GB-Hours":                         fargateGB,
		"APN1-SpotUsage-Fargate-vCPU-Hours:perCPU": fargateSpotVCPU,
		"USE1-Fargate-ARM-GB-Hours":                "Fargate-ARM-GB-Hours",
	} {
		if got := usageType(in); got != want {
			t.Errorf("usageType(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestNoReservationOffered: a type the Price List offers no Reserved term of any kind (as AWS sells p5.48xlarge)
// gets a discount of 0, and the result says so; a type with other reservations but not the 1-year standard No
// Upfront one is still an error (TestRefreshFailuresLeaveFileUntouched).
func TestNoReservationOffered(t *testing.T) {
	const item = "pricing/AmazonEC2/us-east-1/g6e.xlarge.json"
	f, cfg := newFake(t)
	f.Override(item, f.EditItem(item, func(it map[string]any) {
		delete(it["terms"].(map[string]any), "Reserved")
	}))
	res, err := Refresh(context.Background(), clientsFor(cfg), "us-east-1", snapshot(t), now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := catalog.ParseCompute(res.JSON)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range got.InstanceTypes {
		if it.Name == "g6e.xlarge" && it.Reserved1yDiscount != 0 {
			t.Errorf("g6e.xlarge discount %v, want 0", it.Reserved1yDiscount)
		}
	}
	if !strings.Contains(strings.Join(res.Kept, "\n"), "offers g6e.xlarge no reservation in us-east-1") {
		t.Errorf("kept %q", res.Kept)
	}
}
