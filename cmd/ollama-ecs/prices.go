package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	"github.com/aws/aws-sdk-go-v2/service/savingsplans"
	"github.com/spf13/pflag"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/prices"
)

// defaultComputeData is the compute data file, from the repository's root.
const defaultComputeData = "catalog/data/compute.json"

const pricesLong = `Reads the prices of the instance types the compute data lists, and Fargate's, for one region from AWS,
and rewrites only the price fields of the data (every other field is kept as written):

  onDemandUSD            EC2 On-Demand, Linux, shared tenancy, no pre-installed software (Price List API)
  reserved1yDiscount     1 - the 1-year standard No Upfront Reserved Instance's hourly price / On-Demand
  spotUSD                EC2 Spot price history, Linux/UNIX, last 7 days: the median over the region's
                         availability zones of each zone's latest price
  fargate.vcpuHourUSD    Fargate x86 Linux per vCPU-hour and per GB-hour (Price List API)
  fargate.gbHourUSD
  fargate.spotDiscount   Fargate Spot against On-Demand for a 1 vCPU / 4 GB task (kept when the price list
                         has no Fargate Spot prices for the region)
  fargate.savingsPlan1yDiscount
                         1-year No Upfront Compute Savings Plan rates for Fargate (Savings Plans API)

It needs AWS credentials allowed pricing:GetProducts, ec2:DescribeSpotPriceHistory and
savingsplans:DescribeSavingsPlansOfferingRates. Any price that cannot be read fails the command and leaves the
file as it was; otherwise the file is replaced atomically. Rebuild the CLI afterwards: the data is embedded.`

func definePrices(fs *pflag.FlagSet) runner {
	region := fs.String("region", "", "the region to price (default: the data's region)")
	out := fs.String("out", defaultComputeData, "the compute data to refresh in place (the built-in data when it does not exist yet); - prints the new data instead")
	dryRun := fs.Bool("dry-run", false, "print what would change and write nothing")
	profile := fs.String("profile", "", "AWS profile (default: the SDK's chain: AWS_PROFILE, env keys, SSO, ...)")
	return func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
		current, from, err := readComputeData(*out)
		if err != nil {
			return err
		}
		before, _ := catalog.ParseCompute(current)
		if *region == "" {
			if before == nil {
				return usageError{"pass --region: the data's own region cannot be read from " + from}
			}
			*region = before.Region
		}
		if err := prices.CheckRegion(*region); err != nil {
			return usageError{err.Error()}
		}
		clients, err := priceClients(ctx, *profile, *region)
		if err != nil {
			return err
		}
		res, err := prices.Refresh(ctx, clients, *region, current, time.Now())
		if err != nil {
			return err
		}
		report := stdout
		if *out == "-" {
			report = stderr
			if _, err := stdout.Write(res.JSON); err != nil {
				return err
			}
		}
		writePriceChanges(report, from, before, *region, res)
		switch {
		case *out == "-":
		case *dryRun:
			fmt.Fprintf(report, "dry run: %s not written\n", *out)
		default:
			if err := prices.WriteFile(*out, res.JSON); err != nil {
				return fmt.Errorf("writing %s: %w", *out, err)
			}
			fmt.Fprintf(report, "wrote %s; rebuild the CLI to use it (the data is embedded)\n", *out)
		}
		return nil
	}
}

// readComputeData is the data a refresh starts from: the file, or the built-in data when the file does not exist
// (or --out is -).
func readComputeData(path string) (data []byte, from string, err error) {
	if path != "-" {
		data, err = os.ReadFile(path)
		if err == nil {
			return data, path, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, "", err
		}
	}
	from = "the built-in data"
	from += " (prices as of " + catalog.Default().PricesAsOf.Format(time.DateOnly) + ")"
	return catalog.ComputeJSON(), from, nil
}

// priceClients are the SDK clients a refresh calls: the Price List and Savings Plans APIs where they answer
// (us-east-1), EC2 in the region priced. Throttling is retried with the SDK's backoff, up to 8 attempts unless
// AWS_MAX_ATTEMPTS or the profile says otherwise.
func priceClients(ctx context.Context, profile, region string) (prices.Clients, error) {
	opts := []func(*config.LoadOptions) error{}
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return prices.Clients{}, fmt.Errorf("AWS configuration: %s", oneLine(err.Error()))
	}
	if awsHTTPClient != nil {
		cfg.HTTPClient = awsHTTPClient
	}
	if cfg.RetryMaxAttempts == 0 {
		cfg.RetryMaxAttempts = 8
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return prices.Clients{}, errors.New("no AWS credentials: pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run 'aws sso login'")
	}
	return prices.Clients{
		Pricing:      pricing.NewFromConfig(cfg, func(o *pricing.Options) { o.Region = prices.PricingRegion }),
		EC2:          ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.Region = region }),
		SavingsPlans: savingsplans.NewFromConfig(cfg, func(o *savingsplans.Options) { o.Region = prices.PricingRegion }),
	}, nil
}

// writePriceChanges prints what the refresh moved: one line a price, old and new, then what it kept.
func writePriceChanges(w io.Writer, from string, before *catalog.ComputeData, region string, res *prices.Result) {
	var after struct {
		AsOf string `json:"asOf"`
	}
	_ = json.Unmarshal(res.JSON, &after)
	was := ""
	if before != nil {
		was = fmt.Sprintf(", were %s as of %s", before.Region, before.AsOf.Format(time.DateOnly))
	}
	fmt.Fprintf(w, "%s prices as of %s from AWS (%s%s)\n", region, after.AsOf, from, was)
	if len(res.Changes) == 0 {
		fmt.Fprintln(w, "no price changed")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FIELD\tOLD\tNEW\tCHANGE")
		for _, c := range res.Changes {
			change := "-"
			switch {
			case math.IsNaN(c.Old):
			case strings.HasSuffix(c.Field, "Discount"): // a fraction: its move in percentage points
				change = fmt.Sprintf("%+.2f pt", (c.New-c.Old)*100)
			case c.Old != 0:
				change = fmt.Sprintf("%+.1f%%", (c.New-c.Old)/c.Old*100)
			}
			fmt.Fprintf(tw, "%s\t%v\t%v\t%s\n", c.Field, c.Old, c.New, change)
		}
		tw.Flush()
		fmt.Fprintf(w, "%d price(s) changed\n", len(res.Changes))
	}
	for _, k := range res.Kept {
		fmt.Fprintln(w, "note: "+k)
	}
}
