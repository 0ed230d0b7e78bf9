package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/resolvers"
	"github.com/surgeworks/surge/rules"
)

// fuzzRules is an in-memory rule set of two regions; it refuses writes.
type fuzzRules struct{}

var fuzzRuleSet = []pricing.Rule{
	{RegionID: "berlin", RegionName: "Berlin", ProductType: "ride", Currency: "EUR", Version: 3, BasePrice: 8,
		MinMultiplier: 1, MaxMultiplier: 3, MaxStepPerMinute: 0.5, Threshold: 1, Sensitivity: 0.5, MultiplierStep: 0.05, PriceStep: 0.1},
	{RegionID: "berlin", RegionName: "Berlin", ProductType: "xl", Currency: "EUR", Version: 1, BasePrice: 12,
		MinMultiplier: 1, MaxMultiplier: 2.5, MaxStepPerMinute: 0.5, Threshold: 1, Sensitivity: 0.5, MultiplierStep: 0.05, PriceStep: 0.1},
	{RegionID: "nyc", RegionName: "New York", ProductType: "ride", Currency: "USD", Version: 7, BasePrice: 15,
		MinMultiplier: 1, MaxMultiplier: 4, MaxStepPerMinute: 0.5, Threshold: 1, Sensitivity: 0.5, MultiplierStep: 0.05, PriceStep: 0.25},
}

func (fuzzRules) Put(context.Context, pricing.Rule, string) (pricing.Rule, error) {
	return pricing.Rule{}, errors.New("fuzz rules are read-only")
}

func (fuzzRules) Get(region, product string, _ time.Time) (pricing.Rule, bool) {
	for _, r := range fuzzRuleSet {
		if r.RegionID == region && r.ProductType == product {
			return r, true
		}
	}
	return pricing.Rule{}, false
}

func (f fuzzRules) Region(id string) (rules.Region, bool) {
	for _, r := range f.Regions() {
		if r.ID == id {
			return r, true
		}
	}
	return rules.Region{}, false
}

func (fuzzRules) Regions() []rules.Region {
	return []rules.Region{{ID: "berlin", Name: "Berlin", Products: []string{"ride", "xl"}}, {ID: "nyc", Name: "New York", Products: []string{"ride"}}}
}

// fuzzServer is the whole HTTP handler with the services that need no
// server: quotes priced from in-memory rules without Redis, a model or an
// audit trail (degraded quotes), and no other service (their fields
// answer UNAVAILABLE, or panic into gqlgen's recover). The rate limit is
// out of the way.
var fuzzServer = sync.OnceValue(func() http.Handler {
	discard := slog.New(slog.DiscardHandler)
	fc := inference.NewForecaster(nil, nil, inference.ForecasterOptions{Logger: discard})
	res := &resolvers.Resolver{
		Quotes: quotes.New(fuzzRules{}, nil, fc, nil, quotes.Options{Logger: discard}),
		Rules:  fuzzRules{},
	}
	return New(res, testAuth(), nil, Options{Logger: discard, RatePerClient: 1e9, RateBurst: 1 << 30}).Handler()
})

// checkGraphQLAnswer: never a 5xx; a JSON object holding data or errors,
// every error with a message and an extensions.code; no Go panic or stack
// in it (unless the request itself said so: a body that does not decode
// is quoted back).
func checkGraphQLAnswer(t *testing.T, request string, rec *httptest.ResponseRecorder) {
	t.Helper()
	body := rec.Body.Bytes()
	if rec.Code >= 500 {
		t.Fatalf("status %d for %q: %s", rec.Code, request, body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "application/graphql-response+json") {
		t.Fatalf("Content-Type %q (status %d) for %q: %s", ct, rec.Code, request, body)
	}
	var out struct {
		Data   *json.RawMessage `json:"data"`
		Errors []struct {
			Message    *string        `json:"message"`
			Extensions map[string]any `json:"extensions"`
		} `json:"errors"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("answer %d %q to %q is not a GraphQL JSON object: %v", rec.Code, body, request, err)
	}
	if dec.More() {
		t.Fatalf("answer %q to %q holds more than one JSON value", body, request)
	}
	if out.Data == nil && len(out.Errors) == 0 {
		t.Fatalf("answer %d %s to %q has neither data nor errors", rec.Code, body, request)
	}
	for _, e := range out.Errors {
		if code, _ := e.Extensions["code"].(string); e.Message == nil || *e.Message == "" || code == "" {
			t.Fatalf("error without a message or a code in %s (request %q)", body, request)
		}
	}
	for _, leak := range []string{"goroutine ", "runtime error", "nil pointer", "panic"} {
		if bytes.Contains(body, []byte(leak)) && !strings.Contains(request, leak) {
			t.Fatalf("answer to %q shows %q: %s", request, leak, body)
		}
	}
}

func serveFuzz(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	fuzzServer().ServeHTTP(rec, req)
	return rec
}

// fuzzPriceQuery takes every argument of the price fields as a variable.
const fuzzPriceQuery = `query Price($input: PriceInput!, $inputs: [PriceInput!]!, $region: ID!, $horizon: Int) {
  price(input: $input) { quoteId regionId productType price currency basePrice surgeMultiplier degraded warnings validUntil
    factors { name contribution } experiment { id variant } }
  prices(inputs: $inputs) { quoteId price surgeMultiplier }
  forecast(regionId: $region, horizonMinutes: $horizon) { regionId demand lower upper source }
}`

// FuzzGraphQLVariables posts the price query with fuzzed variables (the
// raw JSON text after "variables":, so it may break the body too); see
// checkGraphQLAnswer for what each answer must be.
func FuzzGraphQLVariables(f *testing.F) {
	for _, v := range []string{
		`{"input":{"regionId":"berlin","productType":"ride","userId":"u-1"},"inputs":[{"regionId":"berlin","productType":"xl"},{"regionId":"nyc","productType":"ride"}],"region":"berlin","horizon":15}`,
		`{"input":{"regionId":"atlantis","productType":"ride"},"inputs":[{"regionId":"berlin","productType":"boat"}],"region":"atlantis"}`,
		`{"input":{"regionId":"","productType":"ride","userId":null},"inputs":[],"region":"ber lin","horizon":0}`,
		`{"input":{"regionId":"berlin","productType":"ride","extra":1},"inputs":{"regionId":"berlin","productType":"ride"},"region":7,"horizon":"15"}`,
		`{"input":{"regionId":["berlin"],"productType":{"a":1}},"inputs":[null],"region":null,"horizon":1e400}`,
		`{"input":null}`, `{}`, `null`, `[]`, `"x"`, `{"input":`, `{"horizon":-2147483649,"region":"berlin"}`,
		`{"input":{"regionId":"berlin","productType":"ride","userId":"` + strings.Repeat("u", 200) + `"}}`,
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, variables string) {
		q, _ := json.Marshal(fuzzPriceQuery)
		body := `{"query":` + string(q) + `,"variables":` + variables + `}`
		req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		checkGraphQLAnswer(t, body, serveFuzz(req))
	})
}

// FuzzGraphQLQuery sends fuzzed query documents, by POST or GET, as the
// anonymous caller or with the admin key; see checkGraphQLAnswer. (The
// full introspection queries of testdata are left out of the seeds: each
// run of them answers the whole schema, too slow an input to mutate.)
func FuzzGraphQLQuery(f *testing.F) {
	for _, q := range []string{
		`{ price(input: {regionId: "berlin", productType: "ride"}) { quoteId price surgeMultiplier factors { name contribution description } } }`,
		`query P($r: ID!) { prices(inputs: [{regionId: $r, productType: "ride"}, {regionId: "nyc", productType: "ride"}]) { price } }`,
		`{ regions { id name products } forecast(regionId: "nyc", horizonMinutes: 60) { demand source } }`,
		`{ a: price(input: {regionId: "berlin", productType: "xl"}) { ...Q } b: price(input: {regionId: "nope", productType: "ride"}) { ...Q } } fragment Q on PriceQuote { price currency }`,
		`{ factorBreakdown(quoteId: "01a21487-a3e8-7644-ab00-c7f01ac30b58") { name } quoteAudit(quoteId: "q") { price } }`,
		`{ pricingRules(regionId: "berlin", includeHistory: true) { version basePrice } }`,
		`mutation { setPricingRule(input: {regionId: "berlin", productType: "ride", basePrice: 9}) { version } }`,
		`{ __schema { queryType { name } types { name fields { name } } } }`,
		`{ __type(name: "PriceQuote") { fields { name type { name ofType { name } } } } }`,
		`subscription { surgeChanged(regionId: "berlin") { multiplier } }`,
		`query A { regions { id } } query B { __typename }`,
		`{ price(input: {regionId: "berlin", productType: "ride"}) { price price price } }`,
		`{ regions { id ` + strings.Repeat("... on Region { id ", 20) + strings.Repeat("} ", 20) + `} }`,
		`{`, ``, `}}}`, `query ($x: Int = "a") { __typename }`, `{ price }`,
	} {
		f.Add(q, false, false)
	}
	f.Add(`mutation { setPricingRule(input: {regionId: "berlin", productType: "ride", basePrice: 9}) { version } }`, false, true)
	f.Add(`{ models { version status } experiments { id } }`, true, true)
	f.Fuzz(func(t *testing.T, query string, get, admin bool) {
		var req *http.Request
		if get {
			req = httptest.NewRequest(http.MethodGet, "/graphql?query="+url.QueryEscape(query), nil)
		} else {
			body, _ := json.Marshal(map[string]string{"query": query})
			req = httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
		}
		if admin {
			req.Header.Set("X-Api-Key", "k") // testAuth's admin key
		}
		checkGraphQLAnswer(t, query, serveFuzz(req))
	})
}
