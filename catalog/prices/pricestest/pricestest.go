// Package pricestest serves recorded AWS price answers on loopback for tests of the price refresh: the real SDK
// clients call it and deserialise what it sends.
package pricestest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Server answers the three calls a refresh makes from the files of a testdata directory, the way the APIs answer:
// GetProducts (JSON 1.1) from pricing/<service>/<region>[/<instance type>].json, DescribeSavingsPlansOfferingRates
// (REST JSON) from savingsplans/<region>.json, and DescribeSpotPriceHistory (EC2 query, XML) from
// ec2/spot-<region>.xml. A page's NextToken names the next page's file: <key>.<token>.json. A query testdata has no
// file for is answered as AWS answers one that matches nothing: with an empty list.
type Server struct {
	URL string
	// SpotRegion is the region whose Spot history is served (an EC2 request does not name its region).
	SpotRegion string

	t        testing.TB
	dir      string
	mu       sync.Mutex
	override map[string]string
	fail     map[string]failure
	calls    []string
}

type failure struct {
	status int
	body   string
}

// Start serves dir on 127.0.0.1 until the test ends.
func Start(t testing.TB, dir string) *Server {
	s := &Server{SpotRegion: "us-east-1", t: t, dir: dir, override: map[string]string{}, fail: map[string]failure{}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Config is an SDK configuration that sends every service to the server with dummy credentials.
func (s *Server) Config() aws.Config {
	return FastRetries(aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(s.URL),
	})
}

// FastRetries retries what the SDK retries by default (throttling, and a connection the transport closed under a
// response, aws-sdk-go-v2#2737), three attempts in all, backing off milliseconds instead of seconds.
func FastRetries(cfg aws.Config) aws.Config {
	cfg.RetryMaxAttempts = 0
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts, o.RateLimiter = 3, ratelimit.None
			o.Backoff = retry.NewExponentialJitterBackoff(5 * time.Millisecond)
		})
	}
	return cfg
}

// Override answers the page key (e.g. pricing/AmazonEC2/us-east-1/m5.large.json) with body instead of its file.
func (s *Server) Override(key, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override[key] = body
}

// Fail answers every call to an API ("pricing", "savingsplans" or "ec2") with this status and body.
func (s *Server) Fail(api string, status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[api] = failure{status, body}
}

// Called reports whether a page was asked for.
func (s *Server) Called(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.calls, key)
}

// Read is a recorded page.
func (s *Server) Read(key string) string {
	s.t.Helper()
	raw, err := os.ReadFile(filepath.Join(s.dir, key))
	if err != nil {
		s.t.Fatal(err)
	}
	return string(raw)
}

// EditItem is a recorded GetProducts page with its first PriceList item changed by edit.
func (s *Server) EditItem(key string, edit func(item map[string]any)) string {
	s.t.Helper()
	return s.editPage(key, func(i int, item map[string]any) bool {
		if i == 0 {
			edit(item)
		}
		return true
	})
}

// DropItems is a recorded GetProducts page without the PriceList items whose JSON contains any of the strings.
func (s *Server) DropItems(key string, contains ...string) string {
	s.t.Helper()
	return s.editPage(key, func(_ int, item map[string]any) bool {
		b, _ := json.Marshal(item)
		return !slices.ContainsFunc(contains, func(c string) bool { return strings.Contains(string(b), c) })
	})
}

func (s *Server) editPage(key string, keep func(int, map[string]any) bool) string {
	s.t.Helper()
	var resp map[string]any
	if err := json.Unmarshal([]byte(s.Read(key)), &resp); err != nil {
		s.t.Fatal(err)
	}
	var kept []any
	for i, raw := range resp["PriceList"].([]any) {
		var item map[string]any
		if err := json.Unmarshal([]byte(raw.(string)), &item); err != nil {
			s.t.Fatal(err)
		}
		if keep(i, item) {
			b, _ := json.Marshal(item)
			kept = append(kept, string(b))
		}
	}
	resp["PriceList"] = kept
	b, _ := json.Marshal(resp)
	return string(b)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var api, key, contentType string
	switch {
	case r.Header.Get("X-Amz-Target") == "AWSPriceListService.GetProducts":
		api, contentType = "pricing", "application/x-amz-json-1.1"
		var in struct {
			ServiceCode, FormatVersion, NextToken string
			Filters                               []struct{ Type, Field, Value string }
		}
		if err := json.Unmarshal(body, &in); err != nil || in.FormatVersion != "aws_v1" {
			s.t.Errorf("GetProducts request %s: %v", body, err)
		}
		filter := map[string]string{}
		for _, f := range in.Filters {
			if f.Type != "TERM_MATCH" {
				s.t.Errorf("filter %+v is not TERM_MATCH", f)
			}
			filter[f.Field] = f.Value
		}
		key = "pricing/" + in.ServiceCode + "/" + filter["regionCode"]
		if in.ServiceCode == "AmazonEC2" {
			key += "/" + filter["instanceType"]
			for k, v := range map[string]string{"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"} {
				if filter[k] != v {
					s.t.Errorf("EC2 query filters %v, want %s=%s", filter, k, v)
				}
			}
		}
		key = page(key, in.NextToken, ".json")
	case r.URL.Path == "/DescribeSavingsPlansOfferingRates":
		api, contentType = "savingsplans", "application/json"
		var in struct {
			Filters []struct {
				Name   string
				Values []string
			}
			NextToken string
		}
		if err := json.Unmarshal(body, &in); err != nil || len(in.Filters) != 1 || in.Filters[0].Name != "region" || len(in.Filters[0].Values) != 1 {
			s.t.Errorf("DescribeSavingsPlansOfferingRates request %s: %v", body, err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		key = page("savingsplans/"+in.Filters[0].Values[0], in.NextToken, ".json")
	default:
		form, _ := url.ParseQuery(string(body))
		if form.Get("Action") != "DescribeSpotPriceHistory" {
			s.t.Errorf("unexpected request %s %s %s", r.Method, r.URL, body)
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		api, contentType = "ec2", "text/xml;charset=UTF-8"
		if form.Get("ProductDescription.1") != "Linux/UNIX" || form.Get("StartTime") == "" || form.Get("InstanceType.1") == "" {
			s.t.Errorf("DescribeSpotPriceHistory request %s", body)
		}
		key = page("ec2/spot-"+s.SpotRegion, form.Get("NextToken"), ".xml")
	}
	s.mu.Lock()
	s.calls = append(s.calls, key)
	fail, failing := s.fail[api]
	override, overridden := s.override[key]
	s.mu.Unlock()
	w.Header().Set("Content-Type", contentType)
	if failing {
		w.WriteHeader(fail.status)
		io.WriteString(w, fail.body)
		return
	}
	if overridden {
		io.WriteString(w, override)
		return
	}
	raw, err := os.ReadFile(filepath.Join(s.dir, key))
	switch {
	case errors.Is(err, os.ErrNotExist) && api == "pricing":
		io.WriteString(w, `{"FormatVersion":"aws_v1","PriceList":[]}`)
	case errors.Is(err, os.ErrNotExist) && api == "savingsplans":
		io.WriteString(w, `{"searchResults":[]}`)
	case err != nil:
		s.t.Errorf("no recorded response %s: %v", key, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
		w.Write(raw)
	}
}

func page(key, token, ext string) string {
	if token != "" {
		return key + "." + token + ext
	}
	return key + ext
}
