package prices

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// priceItem is one PriceList entry of a GetProducts answer (FormatVersion aws_v1): a JSON document, sent as a
// string, with the product's attributes and its terms. Field names are the price list's own.
type priceItem struct {
	Product struct {
		ProductFamily string            `json:"productFamily"`
		Attributes    map[string]string `json:"attributes"`
		SKU           string            `json:"sku"`
	} `json:"product"`
	ServiceCode string `json:"serviceCode"`
	Terms       struct {
		OnDemand map[string]offerTerm `json:"OnDemand"`
		Reserved map[string]offerTerm `json:"Reserved"`
	} `json:"terms"`
}

type offerTerm struct {
	OfferTermCode   string                    `json:"offerTermCode"`
	PriceDimensions map[string]priceDimension `json:"priceDimensions"`
	TermAttributes  map[string]string         `json:"termAttributes"`
}

type priceDimension struct {
	Description  string            `json:"description"`
	Unit         string            `json:"unit"`
	BeginRange   string            `json:"beginRange"`
	PricePerUnit map[string]string `json:"pricePerUnit"`
}

func parseItem(raw string) (*priceItem, error) {
	var it priceItem
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	if err := dec.Decode(&it); err != nil {
		return nil, fmt.Errorf("not a price list product: %w", err)
	}
	if it.Product.SKU == "" || it.Product.Attributes == nil {
		return nil, errors.New("not a price list product: no product.sku or product.attributes")
	}
	return &it, nil
}

// hourly reports a dimension billed by the hour: EC2 writes "Hrs", Fargate "hours".
func hourly(d priceDimension) bool {
	return strings.EqualFold(d.Unit, "Hrs") || strings.EqualFold(d.Unit, "hours")
}

// onDemandHourly is the product's On-Demand price per hour: its one OnDemand term's first-tier hourly dimension.
func (it *priceItem) onDemandHourly() (float64, error) {
	switch n := len(it.Terms.OnDemand); n {
	case 0:
		return 0, errors.New("no OnDemand term (terms.OnDemand is missing or empty)")
	case 1:
	default:
		return 0, fmt.Errorf("%d OnDemand terms, want one", n)
	}
	var term offerTerm
	for _, t := range it.Terms.OnDemand {
		term = t
	}
	var price *float64
	for _, key := range sortedKeys(term.PriceDimensions) {
		d := term.PriceDimensions[key]
		if !hourly(d) || (d.BeginRange != "" && d.BeginRange != "0") {
			continue
		}
		if price != nil {
			return 0, fmt.Errorf("OnDemand term %s has more than one first-tier hourly price", term.OfferTermCode)
		}
		p, err := usd(key, d)
		if err != nil {
			return 0, fmt.Errorf("OnDemand: %w", err)
		}
		price = &p
	}
	if price == nil {
		return 0, fmt.Errorf("OnDemand term %s has no hourly price dimension", term.OfferTermCode)
	}
	if *price == 0 {
		return 0, fmt.Errorf("OnDemand term %s prices it at $0 an hour", term.OfferTermCode)
	}
	return *price, nil
}

// reservedHourly is the effective hourly price of the Reserved term with these attributes: its hourly rate plus
// any upfront fee spread over the term's hours.
func (it *priceItem) reservedHourly(length, class, purchase string) (float64, error) {
	var terms []offerTerm
	for _, key := range sortedKeys(it.Terms.Reserved) {
		t := it.Terms.Reserved[key]
		a := t.TermAttributes
		if a["LeaseContractLength"] == length && a["OfferingClass"] == class && a["PurchaseOption"] == purchase {
			terms = append(terms, t)
		}
	}
	desc := fmt.Sprintf("Reserved term (%s %s %s)", length, class, purchase)
	switch len(terms) {
	case 0:
		return 0, fmt.Errorf("no %s among %d Reserved terms", desc, len(it.Terms.Reserved))
	case 1:
	default:
		return 0, fmt.Errorf("%d of them: want one %s", len(terms), desc)
	}
	years := map[string]float64{"1yr": 1, "3yr": 3}[length]
	if years == 0 {
		return 0, fmt.Errorf("unknown lease length %q", length)
	}
	effective, sawHourly := 0.0, false
	for _, key := range sortedKeys(terms[0].PriceDimensions) {
		d := terms[0].PriceDimensions[key]
		p, err := usd(key, d)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", desc, err)
		}
		switch {
		case hourly(d):
			effective += p
			sawHourly = true
		case strings.EqualFold(d.Unit, "Quantity"): // the upfront fee
			effective += p / (years * hoursPerYear)
		default:
			return 0, fmt.Errorf("%s: dimension %s has unit %q, neither hours nor an upfront quantity", desc, key, d.Unit)
		}
	}
	if !sawHourly {
		return 0, fmt.Errorf("%s has no hourly price dimension", desc)
	}
	if effective <= 0 {
		return 0, fmt.Errorf("%s prices it at $0 an hour", desc)
	}
	return effective, nil
}

func usd(key string, d priceDimension) (float64, error) {
	s, ok := d.PricePerUnit["USD"]
	if !ok {
		return 0, fmt.Errorf("price dimension %s has no pricePerUnit.USD", key)
	}
	p, err := parsePrice(s)
	if err != nil {
		return 0, fmt.Errorf("price dimension %s: pricePerUnit.USD %w", key, err)
	}
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
