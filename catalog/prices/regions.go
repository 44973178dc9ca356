package prices

import (
	"fmt"
	"slices"
	"strings"
)

// regions are the regions the Price List Query API prices (its regionCode values): the aws and aws-us-gov
// partitions as the AWS SDK for Go v2 lists them. The China regions have a price list of their own.
var regions = []string{
	"af-south-1",
	"ap-east-1", "ap-east-2",
	"ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
	"ap-south-1", "ap-south-2",
	"ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
	"ca-central-1", "ca-west-1",
	"eu-central-1", "eu-central-2",
	"eu-north-1",
	"eu-south-1", "eu-south-2",
	"eu-west-1", "eu-west-2", "eu-west-3",
	"il-central-1",
	"me-central-1", "me-south-1", "me-west-1",
	"mx-central-1",
	"sa-east-1", "sa-west-1",
	"us-east-1", "us-east-2",
	"us-gov-east-1", "us-gov-west-1",
	"us-west-1", "us-west-2",
}

// UnknownRegionError is a region name AWS does not price: a typo, or a partition with its own price list.
type UnknownRegionError struct{ Region string }

func (e *UnknownRegionError) Error() string {
	return fmt.Sprintf("unknown region %q; the Price List API prices %s", e.Region, strings.Join(regions, ", "))
}

// CheckRegion refuses a region the Price List API does not price, before any call is made.
func CheckRegion(region string) error {
	if !slices.Contains(regions, region) {
		return &UnknownRegionError{Region: region}
	}
	return nil
}
