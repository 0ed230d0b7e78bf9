package main

// End-to-end tests of the serving path: the app built by newApp and run by
// app.run against real Redis and ClickHouse servers and a kfake broker,
// driven over HTTP with GraphQL requests. Helpers are in e2e_helpers_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/auditrecord"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/training"
)

// snapshotTTL outlasts the quote service's in-process reuse of a region's
// Redis snapshot (quotes.Options.SnapshotTTL, 250 ms by default).
const snapshotTTL = 300 * time.Millisecond

// TestE2E runs the tests that leave the stack healthy on one shared stack.
func TestE2E(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.waitReady(t, http.StatusOK, 10*time.Second)

	t.Run("HappyPath", func(t *testing.T) { testHappyPath(t, s) })
	t.Run("Batching", func(t *testing.T) { testBatching(t, s) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, s) })
	t.Run("Admin", func(t *testing.T) { testAdmin(t, s) })
	t.Run("Audit", func(t *testing.T) { testAudit(t, s) })
	// Last: it leaves refused model versions active in the registry.
	t.Run("ModelRefused", func(t *testing.T) { testModelRefused(t, s) })
}

func testHappyPath(t *testing.T, s *stack) {
	rule := defaultRule(t, "berlin", "ride")
	q := s.price(t, "berlin", "ride")
	checkModelQuote(t, q, "berlin", "ride")
	checkArithmetic(t, q, rule)
	if q.RuleVersion != 1 {
		t.Errorf("ruleVersion %d, want 1", q.RuleVersion)
	}
	if len(q.TraceID) != 32 {
		t.Errorf("traceId %q, want 32 hex digits", q.TraceID)
	}
	if got := q.ValidUntil.Sub(q.CreatedAt); got != s.cfg.QuoteValidity {
		t.Errorf("validUntil - createdAt = %s, want %s", got, s.cfg.QuoteValidity)
	}

	t.Run("factorBreakdown", func(t *testing.T) {
		var d struct {
			FactorBreakdown []factorJSON `json:"factorBreakdown"`
		}
		s.mustData(t, `query($id: ID!) { factorBreakdown(quoteId: $id) { name contribution description } }`,
			map[string]any{"id": q.QuoteID}, &d)
		if !slices.Equal(d.FactorBreakdown, q.Factors) {
			t.Errorf("factorBreakdown = %+v, want the quote's %+v", d.FactorBreakdown, q.Factors)
		}
	})

	t.Run("forecast", func(t *testing.T) {
		var d struct {
			Forecast struct {
				RegionID       string   `json:"regionId"`
				Demand         float64  `json:"demand"`
				Lower          float64  `json:"lower"`
				Upper          float64  `json:"upper"`
				HorizonMinutes int      `json:"horizonMinutes"`
				ModelVersion   *string  `json:"modelVersion"`
				Source         string   `json:"source"`
				Degraded       bool     `json:"degraded"`
				Warnings       []string `json:"warnings"`
			} `json:"forecast"`
		}
		s.mustData(t, `{ forecast(regionId: "berlin", horizonMinutes: 60) {
			regionId demand lower upper horizonMinutes modelVersion source degraded warnings generatedAt } }`, nil, &d)
		f := d.Forecast
		if f.RegionID != "berlin" || f.HorizonMinutes != 60 || f.Source != "MODEL" || f.Degraded || len(f.Warnings) != 0 ||
			f.ModelVersion == nil || *f.ModelVersion != "v1" {
			t.Errorf("forecast = %+v; want berlin, 60 min, MODEL v1, not degraded", f)
		}
		if !(f.Demand > 0 && f.Lower <= f.Demand && f.Demand <= f.Upper) {
			t.Errorf("forecast demand %v not within [%v, %v] or not positive", f.Demand, f.Lower, f.Upper)
		}
		// An hour holds more demand than the quarter hour the price used.
		if f.Demand <= q.DemandForecast {
			t.Errorf("60-minute demand %v ≤ 15-minute demand %v", f.Demand, q.DemandForecast)
		}
	})

	t.Run("prices", func(t *testing.T) {
		inputs := [][2]string{{"paris", "xl"}, {"london", "delivery"}, {"nyc", "ride"}, {"paris", "ride"}}
		var vars []map[string]any
		for _, in := range inputs {
			vars = append(vars, map[string]any{"regionId": in[0], "productType": in[1]})
		}
		var d struct {
			Prices []quoteJSON `json:"prices"`
		}
		s.mustData(t, `query($in: [PriceInput!]!) { prices(inputs: $in) { `+quoteFields+` } }`, map[string]any{"in": vars}, &d)
		if len(d.Prices) != len(inputs) {
			t.Fatalf("prices gave %d quotes for %d inputs", len(d.Prices), len(inputs))
		}
		ids := map[string]bool{}
		for i, in := range inputs {
			checkModelQuote(t, d.Prices[i], in[0], in[1])
			checkArithmetic(t, d.Prices[i], defaultRule(t, in[0], in[1]))
			ids[d.Prices[i].QuoteID] = true
		}
		if len(ids) != len(inputs) {
			t.Errorf("quote ids not distinct: %v", ids)
		}
	})

	t.Run("regions", func(t *testing.T) {
		var d struct {
			Regions []struct {
				ID            string   `json:"id"`
				Name          string   `json:"name"`
				Currency      string   `json:"currency"`
				Products      []string `json:"products"`
				CurrentPrices []struct {
					ProductType string  `json:"productType"`
					Price       float64 `json:"price"`
				} `json:"currentPrices"`
			} `json:"regions"`
		}
		s.mustData(t, `{ regions { id name currency products currentPrices { productType price } } }`, nil, &d)
		var ids []string
		for _, r := range d.Regions {
			ids = append(ids, r.ID)
			if !slices.Equal(r.Products, []string{"delivery", "ride", "xl"}) {
				t.Errorf("region %s products %v", r.ID, r.Products)
			}
			if len(r.CurrentPrices) != len(r.Products) {
				t.Errorf("region %s: %d current prices for %d products", r.ID, len(r.CurrentPrices), len(r.Products))
				continue
			}
			for i, p := range r.CurrentPrices {
				if p.ProductType != r.Products[i] || !(p.Price > 0) {
					t.Errorf("region %s current price %d = %+v", r.ID, i, p)
				}
			}
		}
		if !slices.Equal(ids, demoRegions) {
			t.Errorf("regions %v, want %v", ids, demoRegions)
		}
		if d.Regions[0].Name != "Berlin" || d.Regions[0].Currency != "EUR" {
			t.Errorf("berlin = %q %q", d.Regions[0].Name, d.Regions[0].Currency)
		}
	})

	t.Run("pricingRules", func(t *testing.T) {
		var d struct {
			PricingRules []struct {
				ProductType string  `json:"productType"`
				Version     int     `json:"version"`
				BasePrice   float64 `json:"basePrice"`
				PriceStep   float64 `json:"priceStep"`
			} `json:"pricingRules"`
		}
		s.mustData(t, `{ pricingRules(regionId: "berlin") { productType version basePrice priceStep } }`, nil, &d)
		var got []string
		for _, r := range d.PricingRules {
			want := defaultRule(t, "berlin", r.ProductType)
			got = append(got, r.ProductType)
			if r.Version != 1 || r.BasePrice != want.BasePrice || r.PriceStep != want.PriceStep {
				t.Errorf("rule %+v, want v1 base %v step %v", r, want.BasePrice, want.PriceStep)
			}
		}
		if !slices.Equal(got, []string{"delivery", "ride", "xl"}) {
			t.Errorf("rules of berlin for %v", got)
		}
	})

	t.Run("GET", func(t *testing.T) {
		query := `{ price(input: {regionId: "berlin", productType: "xl"}) { regionId productType price forecastSource degraded } }`
		req, _ := http.NewRequest(http.MethodGet, s.base+"/graphql?query="+url.QueryEscape(query), nil)
		r := s.do(t, req)
		var d struct {
			Price struct {
				RegionID, ProductType, ForecastSource string
				Price                                 float64
				Degraded                              bool
			} `json:"price"`
		}
		if r.Status != http.StatusOK || len(r.Errors) != 0 {
			t.Fatalf("GET answered %d: %s", r.Status, r.Body)
		}
		if err := json.Unmarshal(r.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Price.RegionID != "berlin" || d.Price.ProductType != "xl" || d.Price.ForecastSource != "MODEL" || d.Price.Degraded || !(d.Price.Price > 0) {
			t.Errorf("GET price = %+v", d.Price)
		}
		if len(r.Header.Get("X-Trace-Id")) != 32 {
			t.Errorf("X-Trace-Id %q", r.Header.Get("X-Trace-Id"))
		}
	})

	t.Run("traceparent", func(t *testing.T) {
		const id = "4bf92f3577b34da6a3ce929d0e0e4736"
		body, _ := json.Marshal(map[string]any{"query": `{ price(input: {regionId: "berlin", productType: "ride"}) { traceId } }`})
		r := s.post(t, body, map[string]string{"traceparent": "00-" + id + "-00f067aa0ba902b7-01"})
		if !strings.Contains(string(r.Data), id) || r.Header.Get("X-Trace-Id") != id {
			t.Errorf("trace id not propagated: header %q data %s", r.Header.Get("X-Trace-Id"), r.Data)
		}
	})

	t.Run("health", func(t *testing.T) {
		if code, body := s.getPath(t, "/health"); code != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
			t.Errorf("/health = %d %s", code, body)
		}
		code, r := s.ready(t)
		if code != http.StatusOK || r.Status != "ready" || len(r.Failing) != 0 {
			t.Errorf("/ready = %d %+v", code, r)
		}
		for _, c := range []string{"redis", "clickhouse", "model", "rules"} {
			if r.Checks[c] != "ok" {
				t.Errorf("/ready check %s = %q, want ok", c, r.Checks[c])
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m := s.metrics(t)
		for _, name := range []string{
			"surge_graphql_request_duration_seconds", "surge_inference_duration_seconds", "surge_forecasts_total",
			"surge_inference_circuit_breaker_state", "surge_online_features_lookups_total",
		} {
			if !strings.Contains(m, "\n"+name) {
				t.Errorf("/metrics lacks %s", name)
			}
		}
		if v, ok := metricValue(m, "surge_forecasts_total", `source="MODEL"`); !ok || v < 1 {
			t.Errorf("surge_forecasts_total{source=MODEL} = %v (found %v)", v, ok)
		}
		if v, ok := metricValue(m, "surge_online_features_lookups_total", `result="hit"`); !ok || v < 1 {
			t.Errorf("surge_online_features_lookups_total{result=hit} = %v (found %v)", v, ok)
		}
		if v, ok := metricValue(m, "surge_inference_circuit_breaker_state", ""); !ok || v != 0 {
			t.Errorf("surge_inference_circuit_breaker_state = %v (found %v), want 0", v, ok)
		}
		if v, ok := metricValue(m, "surge_graphql_request_duration_seconds_count", `field="price",type="query"`); !ok || v < 1 {
			t.Errorf("surge_graphql_request_duration_seconds_count{price} = %v (found %v)", v, ok)
		}
	})
}

// testBatching: the current prices of every region and product are read
// from Redis in one pipelined round trip, not one per region.
func testBatching(t *testing.T, s *stack) {
	hook := &pipelineCounter{}
	s.a.rdb.AddHook(hook)
	var d struct {
		Regions []struct {
			ID            string `json:"id"`
			CurrentPrices []struct {
				RegionID       string `json:"regionId"`
				ProductType    string `json:"productType"`
				ForecastSource string `json:"forecastSource"`
			} `json:"currentPrices"`
		} `json:"regions"`
	}
	for attempt := 0; attempt < 3; attempt++ {
		time.Sleep(snapshotTTL) // the regions' snapshots are read from Redis again
		hook.reset()
		s.mustData(t, `{ regions { id currentPrices { regionId productType forecastSource } } }`, nil, &d)
		reads := hook.snapshot()
		n := 0
		for _, r := range d.Regions {
			for _, p := range r.CurrentPrices {
				n++
				if p.RegionID != r.ID || p.ForecastSource != "MODEL" {
					t.Errorf("current price %+v in region %s", p, r.ID)
				}
			}
		}
		if len(d.Regions) != len(demoRegions) || n != 15 {
			t.Fatalf("%d regions and %d prices, want 5 and 15", len(d.Regions), n)
		}
		if len(reads) != 1 {
			t.Fatalf("attempt %d: %d pipelined feature reads for 5 regions × 3 products, want 1: %v", attempt, len(reads), reads)
		}
		keys := slices.Sorted(slices.Values(reads[0]))
		var want []string
		for _, r := range demoRegions {
			want = append(want, features.Key(r))
		}
		if !slices.Equal(keys, want) {
			t.Fatalf("the pipeline read %v, want each region once: %v", keys, want)
		}
	}
	// Control: the hook sees every round trip, so two requests make two.
	time.Sleep(snapshotTTL)
	hook.reset()
	s.price(t, "berlin", "ride")
	s.price(t, "paris", "ride")
	if reads := hook.snapshot(); len(reads) != 2 {
		t.Errorf("two price requests made %d feature reads, want 2: %v", len(reads), reads)
	}
}

func testBadInput(t *testing.T, s *stack) {
	long := strings.Repeat("a", 65)
	price := func(region, product string) (string, map[string]any) {
		return `query($in: PriceInput!) { price(input: $in) { price } }`,
			map[string]any{"in": map[string]any{"regionId": region, "productType": product}}
	}
	pricesN := func(n int) (string, map[string]any) {
		in := make([]map[string]any, n)
		for i := range in {
			in[i] = map[string]any{"regionId": "berlin", "productType": "ride"}
		}
		return `query($in: [PriceInput!]!) { prices(inputs: $in) { price } }`, map[string]any{"in": in}
	}
	type tc struct {
		name  string
		query string
		vars  map[string]any
		code  string
		field string
	}
	var cases []tc
	add := func(name, code, field string, q string, v map[string]any) {
		cases = append(cases, tc{name, q, v, code, field})
	}
	q, v := price("atlantis", "ride")
	add("unknown region", "NOT_FOUND", "regionId", q, v)
	q, v = price("", "ride")
	add("empty regionId", "BAD_USER_INPUT", "regionId", q, v)
	q, v = price(long, "ride")
	add("65-char regionId", "BAD_USER_INPUT", "regionId", q, v)
	q, v = price("ber lin", "ride")
	add("regionId with a space", "BAD_USER_INPUT", "regionId", q, v)
	q, v = price("berlin", "rocket")
	add("unknown productType", "BAD_USER_INPUT", "productType", q, v)
	q, v = price("berlin", "")
	add("empty productType", "BAD_USER_INPUT", "productType", q, v)
	add("horizon 0", "BAD_USER_INPUT", "horizonMinutes", `{ forecast(regionId: "berlin", horizonMinutes: 0) { demand } }`, nil)
	add("horizon 1441", "BAD_USER_INPUT", "horizonMinutes", `{ forecast(regionId: "berlin", horizonMinutes: 1441) { demand } }`, nil)
	add("forecast unknown region", "NOT_FOUND", "regionId", `{ forecast(regionId: "atlantis") { demand } }`, nil)
	q, v = pricesN(0)
	add("prices with 0 inputs", "BAD_USER_INPUT", "inputs", q, v)
	q, v = pricesN(101)
	add("prices with 101 inputs", "BAD_USER_INPUT", "inputs", q, v)
	add("prices with one unknown region", "NOT_FOUND", "inputs[1].regionId",
		`{ prices(inputs: [{regionId: "berlin", productType: "ride"}, {regionId: "atlantis", productType: "ride"}]) { price } }`, nil)
	add("unknown quoteId", "NOT_FOUND", "quoteId", `{ factorBreakdown(quoteId: "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b") { name } }`, nil)
	add("empty quoteId", "BAD_USER_INPUT", "quoteId", `{ factorBreakdown(quoteId: "") { name } }`, nil)
	add("pricingRules of an unknown region", "NOT_FOUND", "regionId", `{ pricingRules(regionId: "atlantis") { version } }`, nil)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.gql(t, c.query, c.vars, nil)
			if r.Status != http.StatusOK {
				t.Errorf("status %d, want 200 (a resolver error in a valid request): %s", r.Status, r.Body)
			}
			if r.code() != c.code || r.field() != c.field {
				t.Errorf("error code %q field %q, want %q %q: %s", r.code(), r.field(), c.code, c.field, r.Body)
			}
			if len(r.Errors) > 0 && r.Errors[0].Message == "internal error" {
				t.Errorf("bad input reported as an internal error: %s", r.Body)
			}
			if string(r.Data) != "null" {
				t.Errorf("data %s, want null", r.Data)
			}
		})
	}

	// Requests refused before execution.
	deep := "{ __schema { types { " + strings.Repeat("fields { type { ", 6) + "name" + strings.Repeat(" } }", 6) + " } } }"
	for _, c := range []struct {
		name   string
		body   string
		status int
		code   string
		msg    string
	}{
		{"malformed GraphQL", `{"query": "{ price("}`, http.StatusUnprocessableEntity, "GRAPHQL_PARSE_FAILED", ""},
		{"unknown field", `{"query": "{ nope }"}`, http.StatusUnprocessableEntity, "GRAPHQL_VALIDATION_FAILED", "nope"},
		{"wrong argument type", `{"query": "{ forecast(regionId: \"berlin\", horizonMinutes: \"x\") { demand } }"}`, http.StatusUnprocessableEntity, "GRAPHQL_VALIDATION_FAILED", ""},
		{"missing variable", `{"query": "query($in: PriceInput!) { price(input: $in) { price } }"}`, http.StatusUnprocessableEntity, "GRAPHQL_VALIDATION_FAILED", ""},
		{"too deep", mustJSON(t, map[string]any{"query": deep}), http.StatusUnprocessableEntity, "GRAPHQL_VALIDATION_FAILED", "depth"},
		{"invalid JSON", `{"query": `, http.StatusBadRequest, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.post(t, []byte(c.body), nil)
			if r.Status != c.status {
				t.Errorf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			if len(r.Errors) == 0 {
				t.Fatalf("no errors: %s", r.Body)
			}
			if c.code != "" && r.code() != c.code {
				t.Errorf("code %q, want %q: %s", r.code(), c.code, r.Body)
			}
			if c.msg != "" && !strings.Contains(r.Errors[0].Message, c.msg) {
				t.Errorf("message %q lacks %q", r.Errors[0].Message, c.msg)
			}
			if len(r.Data) > 0 && string(r.Data) != "null" {
				t.Errorf("data %s, want none", r.Data)
			}
		})
	}

	// A type reference's ofType wrappers do not count against the depth
	// limit (the standard introspection query nests them 8 deep).
	t.Run("type references", func(t *testing.T) {
		ok := nestedIntrospection(9) // 14 levels, 9 of them ofType
		r := s.gql(t, ok, nil, nil)
		if r.Status != http.StatusOK || len(r.Errors) != 0 {
			t.Errorf("introspection of type references refused (%d): %.300s", r.Status, r.Body)
		}
	})

	big := `{"query": "{ regions { id } }", "variables": {"pad": "` + strings.Repeat("x", 1<<20) + `"}}`
	t.Run("body over 1 MiB", func(t *testing.T) {
		r := s.post(t, []byte(big), nil)
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413: %.300s", r.Status, r.Body)
		}
		if r.code() != "PAYLOAD_TOO_LARGE" {
			t.Errorf("code %q, want PAYLOAD_TOO_LARGE", r.code())
		}
	})
	t.Run("chunked body over 1 MiB", func(t *testing.T) {
		// No Content-Length: the limit is found while reading.
		req, _ := http.NewRequest(http.MethodPost, s.base+"/graphql", io.NopCloser(strings.NewReader(big)))
		req.Header.Set("Content-Type", "application/json")
		r := s.do(t, req)
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413: %.300s", r.Status, r.Body)
		}
	})
	t.Run("no 5xx under bad input", func(t *testing.T) {
		m := s.metrics(t)
		if v, ok := metricValue(m, "surge_graphql_errors_total", `code="INTERNAL_SERVER_ERROR",field="price",type="query"`); ok && v > 0 {
			t.Errorf("%v internal errors counted for price", v)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const setRuleMutation = `mutation($in: PricingRuleInput!) { setPricingRule(input: $in) {
	regionId regionName productType currency version effectiveFrom basePrice minMultiplier maxMultiplier priceStep } }`

func ruleInput(overrides map[string]any) map[string]any {
	in := map[string]any{
		"regionId": "sf", "productType": "delivery", "currency": "USD", "basePrice": 7.5,
		"minMultiplier": 0.9, "maxMultiplier": 2.0, "maxStepPerMinute": 0.25, "threshold": 0.8,
		"sensitivity": 1.5, "multiplierStep": 0.05, "priceStep": 0.05,
	}
	for k, v := range overrides {
		in[k] = v
	}
	return map[string]any{"in": in}
}

func testAdmin(t *testing.T, s *stack) {
	key := map[string]string{"X-Admin-Key": testAdminKey}
	for _, c := range []struct {
		name   string
		vars   map[string]any
		header map[string]string
		code   string
		field  string
	}{
		{"no key", ruleInput(nil), nil, "UNAUTHENTICATED", ""},
		{"wrong key", ruleInput(nil), map[string]string{"X-Admin-Key": "not-the-key"}, "UNAUTHENTICATED", ""},
		{"wrong bearer", ruleInput(nil), map[string]string{"Authorization": "Bearer nope"}, "UNAUTHENTICATED", ""},
		{"a key without the admin role", ruleInput(nil), ingestHeader, "FORBIDDEN", ""},
		{"negative basePrice", ruleInput(map[string]any{"basePrice": -1}), key, "BAD_USER_INPUT", "basePrice"},
		{"maxMultiplier below minMultiplier", ruleInput(map[string]any{"minMultiplier": 1.0, "maxMultiplier": 0.5}), key, "BAD_USER_INPUT", "maxMultiplier"},
		{"bad currency", ruleInput(map[string]any{"currency": "DOLLARS"}), key, "BAD_USER_INPUT", "currency"},
		{"bad regionId", ruleInput(map[string]any{"regionId": "s f"}), key, "BAD_USER_INPUT", "regionId"},
		{"backdated", ruleInput(map[string]any{"effectiveFrom": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}), key, "BAD_USER_INPUT", "effectiveFrom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.gql(t, setRuleMutation, c.vars, c.header)
			// A key that does not verify is refused before GraphQL runs.
			want := http.StatusOK
			if strings.HasPrefix(c.name, "wrong") {
				want = http.StatusUnauthorized
			}
			if r.Status != want {
				t.Errorf("status %d, want %d: %s", r.Status, want, r.Body)
			}
			if r.code() != c.code || r.field() != c.field {
				t.Errorf("code %q field %q, want %q %q: %s", r.code(), r.field(), c.code, c.field, r.Body)
			}
		})
	}
	t.Run("every invalid field named", func(t *testing.T) {
		r := s.gql(t, setRuleMutation, ruleInput(map[string]any{"basePrice": -1, "priceStep": 0}), key)
		fields, _ := r.Errors[0].Extensions["fields"].([]any)
		if !slices.Contains(fields, any("basePrice")) || !slices.Contains(fields, any("priceStep")) {
			t.Errorf("extensions.fields = %v, want basePrice and priceStep: %s", fields, r.Body)
		}
	})

	// Nothing was stored by the refused mutations.
	var d struct {
		PricingRules []struct {
			ProductType string  `json:"productType"`
			Version     int     `json:"version"`
			BasePrice   float64 `json:"basePrice"`
		} `json:"pricingRules"`
	}
	s.mustData(t, `{ pricingRules(regionId: "sf", includeHistory: true) { productType version basePrice } }`, nil, &d)
	if len(d.PricingRules) != 3 {
		t.Fatalf("sf has %d rule versions before the valid mutation, want 3: %+v", len(d.PricingRules), d.PricingRules)
	}

	before := s.price(t, "sf", "delivery")
	if before.BasePrice != 5.95 || before.RuleVersion != 1 {
		t.Fatalf("sf/delivery before: base %v rule v%d, want 5.95 v1", before.BasePrice, before.RuleVersion)
	}

	r := s.gql(t, setRuleMutation, ruleInput(nil), key)
	if r.Status != http.StatusOK || len(r.Errors) != 0 {
		t.Fatalf("valid setPricingRule failed (%d): %s", r.Status, r.Body)
	}
	var set struct {
		SetPricingRule struct {
			RegionID, RegionName, ProductType, Currency string
			Version                                     int
			BasePrice                                   float64
		} `json:"setPricingRule"`
	}
	if err := json.Unmarshal(r.Data, &set); err != nil {
		t.Fatal(err)
	}
	got := set.SetPricingRule
	if got.Version != 2 || got.BasePrice != 7.5 || got.RegionName != "San Francisco" || got.Currency != "USD" {
		t.Errorf("setPricingRule = %+v, want version 2, base 7.5, name San Francisco", got)
	}

	s.mustData(t, `{ pricingRules(regionId: "sf", includeHistory: true) { productType version basePrice } }`, nil, &d)
	var versions []int
	for _, r := range d.PricingRules {
		if r.ProductType == "delivery" {
			versions = append(versions, r.Version)
		}
	}
	slices.Sort(versions)
	if !slices.Equal(versions, []int{1, 2}) {
		t.Errorf("history of sf/delivery has versions %v, want [1 2]", versions)
	}
	s.mustData(t, `{ pricingRules(regionId: "sf") { productType version basePrice } }`, nil, &d)
	for _, r := range d.PricingRules {
		if r.ProductType == "delivery" && (r.Version != 2 || r.BasePrice != 7.5) {
			t.Errorf("current sf/delivery rule = %+v, want v2 at 7.5", r)
		}
	}

	// The next price uses the new version: no restart needed.
	q := s.price(t, "sf", "delivery")
	if q.RuleVersion != 2 || q.BasePrice != 7.5 {
		t.Errorf("price after the update: rule v%d base %v, want v2 at 7.5", q.RuleVersion, q.BasePrice)
	}
	newRule := defaultRule(t, "sf", "delivery")
	newRule.BasePrice, newRule.MaxMultiplier, newRule.PriceStep = 7.5, 2.0, 0.05
	checkArithmetic(t, q, newRule)
	// Other products keep their rule.
	if q := s.price(t, "sf", "ride"); q.RuleVersion != 1 || q.BasePrice != defaultRule(t, "sf", "ride").BasePrice {
		t.Errorf("sf/ride after the delivery update: rule v%d base %v", q.RuleVersion, q.BasePrice)
	}
}

// nestedIntrospection is an introspection query __schema { types { fields {
// type { ofType … { name } } } } } with n ofType levels: n+5 levels deep.
func nestedIntrospection(n int) string {
	return "{ __schema { types { fields { type { " + strings.Repeat("ofType { ", n) + "name" + strings.Repeat(" }", n+4) + " }"
}

// auditRecord is the part of quotes' decision record the test reads.
type auditRecord struct {
	QuoteID      string        `json:"quoteId"`
	TraceID      string        `json:"traceId"`
	RegionID     string        `json:"regionId"`
	ProductType  string        `json:"productType"`
	UserHash     string        `json:"userHash"`
	Input        pricing.Input `json:"input"`
	RuleVersion  uint32        `json:"ruleVersion"`
	ModelVersion string        `json:"modelVersion"`
	Multiplier   float64       `json:"surgeMultiplier"`
	Price        float64       `json:"price"`
}

// readAudit reads the topic's partitions from the start until the record of
// quoteID turns up (or within passes).
func readAudit(t *testing.T, brokers []string, partitions int, quoteID string, within time.Duration) (kafka.Message, auditRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	found := make(chan kafka.Message, 1)
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: brokers, Topic: quotes.AuditTopic, Partition: p,
				MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 50 * time.Millisecond,
			})
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				var rec auditRecord
				if auditrecord.Unmarshal(m.Value, &rec) == nil && rec.QuoteID == quoteID {
					select {
					case found <- m:
					default:
					}
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case m := <-found:
		var rec auditRecord
		if err := auditrecord.Unmarshal(m.Value, &rec); err != nil {
			t.Fatal(err)
		}
		return m, rec
	default:
		t.Fatalf("no audit record of quote %s on %q within %s", quoteID, quotes.AuditTopic, within)
		return kafka.Message{}, auditRecord{}
	}
}

func testAudit(t *testing.T, s *stack) {
	var d struct {
		Price quoteJSON `json:"price"`
	}
	s.mustData(t, priceQuery, map[string]any{"in": map[string]any{"regionId": "london", "productType": "xl", "userId": "alice@example.com"}}, &d)
	q := d.Price
	checkModelQuote(t, q, "london", "xl")

	m, rec := readAudit(t, s.kafka.Brokers, s.cfg.KafkaPartitions, q.QuoteID, 10*time.Second)
	if string(m.Key) != "london" {
		t.Errorf("record key %q, want the region", m.Key)
	}
	if rec.TraceID != q.TraceID || rec.RegionID != "london" || rec.ProductType != "xl" || rec.RuleVersion != 1 || rec.ModelVersion != "v1" {
		t.Errorf("record %+v does not match the quote %+v", rec, q)
	}
	if rec.Multiplier != q.SurgeMultiplier || rec.Price != q.Price {
		t.Errorf("record multiplier %v price %v, quote %v %v", rec.Multiplier, rec.Price, q.SurgeMultiplier, q.Price)
	}
	if rec.UserHash == "" || strings.Contains(string(m.Value), "alice") {
		t.Errorf("user id not replaced by a hash: userHash %q", rec.UserHash)
	}
	if rec.Input.DemandForecast != q.DemandForecast || rec.Input.Rule.BasePrice != q.BasePrice {
		t.Errorf("record input forecast %v base %v, quote %v %v", rec.Input.DemandForecast, rec.Input.Rule.BasePrice, q.DemandForecast, q.BasePrice)
	}

	// The audit record alone reproduces the price.
	re, err := pricing.Compute(rec.Input)
	if err != nil {
		t.Fatalf("recompute from the audit record: %v", err)
	}
	if re.Multiplier != q.SurgeMultiplier || re.Price != q.Price {
		t.Errorf("recomputed multiplier %v price %v, quoted %v %v", re.Multiplier, re.Price, q.SurgeMultiplier, q.Price)
	}
	for i, f := range re.Factors {
		if i >= len(q.Factors) || f.Name != q.Factors[i].Name || f.Contribution != q.Factors[i].Contribution {
			t.Errorf("recomputed factors %+v, quoted %+v", re.Factors, q.Factors)
			break
		}
	}
}

// testModelRefused: a corrupt artifact and one trained on another feature
// schema are refused; v1 keeps serving.
func testModelRefused(t *testing.T, s *stack) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	artifacts, err := registry.NewLocalStore(s.cfg.ModelDir)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(s.a.ch, artifacts)

	t.Run("corrupt artifact", func(t *testing.T) {
		e, _, err := training.RegisterBootstrap(ctx, s.a.ch, reg, training.BootstrapJob{Name: s.cfg.ModelName, Days: 3, Status: registry.StatusActive}, s.logger)
		if err != nil {
			t.Fatal(err)
		}
		if e.Version != "v2" {
			t.Fatalf("registered %s, want v2", e.Version)
		}
		path := filepath.Join(artifacts.Dir(), filepath.FromSlash(strings.TrimPrefix(e.ArtifactURI, "local:")))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(data) / 2; i < len(data)/2+16; i++ {
			data[i] ^= 0xff
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		err = s.a.watcher.Sync(ctx)
		if err == nil || !errors.Is(err, registry.ErrCorruptArtifact) {
			t.Errorf("Sync with a corrupt v2 = %v, want an error wrapping ErrCorruptArtifact", err)
		}
		if v := s.a.forecaster.Model().Version; v != "v1" {
			t.Errorf("serving %s, want v1", v)
		}
		q := s.price(t, "berlin", "ride")
		checkModelQuote(t, q, "berlin", "ride")
	})

	t.Run("other feature schema", func(t *testing.T) {
		end := time.Now().UTC().Truncate(time.Hour)
		ens, _, err := training.Bootstrap(ctx, training.BootstrapOptions{
			Version: "v3", History: training.HistoryOptions{Days: 3, Start: end.AddDate(0, 0, -3)}, Logger: s.logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		ens.Meta.Name = s.cfg.ModelName
		ens.Meta.SchemaHash = "0123456789abcdef" // trained on another schema
		if ens.Meta.SchemaHash == features.V1.Hash() {
			t.Fatal("test hash collides with V1")
		}
		artifact, err := ens.MarshalONNX()
		if err != nil {
			t.Fatal(err)
		}
		e, err := reg.Register(ctx, registry.Entry{Name: s.cfg.ModelName, SchemaHash: ens.Meta.SchemaHash, Status: registry.StatusActive}, artifact)
		if err != nil {
			t.Fatal(err)
		}
		if e.Version != "v3" {
			t.Fatalf("registered %s, want v3", e.Version)
		}
		err = s.a.watcher.Sync(ctx)
		if !errors.Is(err, features.ErrSchemaMismatch) {
			t.Errorf("Sync with v3 on another schema = %v, want an error wrapping features.ErrSchemaMismatch", err)
		}
		if v := s.a.forecaster.Model().Version; v != "v1" {
			t.Errorf("serving %s, want v1", v)
		}
		q := s.price(t, "berlin", "ride")
		checkModelQuote(t, q, "berlin", "ride")
		if code, r := s.ready(t); code != http.StatusOK {
			t.Errorf("/ready = %d %+v after a refused model", code, r)
		}
		m := s.metrics(t)
		if v, _ := metricValue(m, "surge_model_load_errors_total", `reason="invalid"`); v != 1 {
			t.Errorf("surge_model_load_errors_total{invalid} = %v, want 1", v)
		}
		if v, _ := metricValue(m, "surge_model_info", `name="demand",version="v1"`); v != 1 {
			t.Errorf("surge_model_info{v1} = %v, want 1", v)
		}
	})
}

// TestE2ERedisDown: with Redis stopped prices are still served, degraded,
// from the in-process last good forecast; they recover when it is back.
func TestE2ERedisDown(t *testing.T) {
	s := newStack(t, stackOptions{})
	q := s.price(t, "berlin", "ride")
	checkModelQuote(t, q, "berlin", "ride")

	if err := s.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(snapshotTTL) // the snapshot read before the stop has expired
	down := s.price(t, "berlin", "ride")
	if down.ForecastSource != "CACHED" || !down.Degraded || down.modelVersion() != "v1" {
		t.Errorf("with Redis down: source %s degraded %v model %q; want CACHED, degraded, v1", down.ForecastSource, down.Degraded, down.modelVersion())
	}
	if !containsAny(down.Warnings, "online store") {
		t.Errorf("warnings %q do not name the online store", down.Warnings)
	}
	if down.DemandForecast != q.DemandForecast {
		t.Errorf("cached demand %v, want the last model forecast %v", down.DemandForecast, q.DemandForecast)
	}
	checkArithmetic(t, down, defaultRule(t, "berlin", "ride"))

	// A region never priced has no cached forecast: still an answer.
	other := s.price(t, "sf", "ride")
	if other.ForecastSource == "MODEL" || !other.Degraded || !containsAny(other.Warnings, "online store") {
		t.Errorf("sf with Redis down: %s degraded %v warnings %q", other.ForecastSource, other.Degraded, other.Warnings)
	}
	// A quote given while Redis is down can still be explained.
	var fb struct {
		FactorBreakdown []factorJSON `json:"factorBreakdown"`
	}
	s.mustData(t, `query($id: ID!) { factorBreakdown(quoteId: $id) { name contribution description } }`, map[string]any{"id": down.QuoteID}, &fb)
	if !slices.Equal(fb.FactorBreakdown, down.Factors) {
		t.Errorf("factorBreakdown with Redis down = %+v", fb.FactorBreakdown)
	}

	code, r := s.ready(t)
	if code != http.StatusServiceUnavailable || !slices.Contains(r.Failing, "redis") || slices.Contains(r.Failing, "clickhouse") {
		t.Errorf("/ready with Redis down = %d %+v, want 503 failing redis only", code, r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.redis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The restarted server is empty (no persistence): the feature pipeline
	// writes again.
	waitCond(t, "the features written again after the restart", func() bool { return s.tryWriteFeatures(demoRegions...) == nil })
	var back quoteJSON
	attempts := 0
	waitCond(t, "a price from the model again after the restart", func() bool {
		attempts++
		back = s.price(t, "berlin", "ride")
		return back.ForecastSource == "MODEL" && !back.Degraded
	})
	if attempts > 2 {
		t.Errorf("took %d attempts to price from the model again", attempts)
	}
	checkModelQuote(t, back, "berlin", "ride")
	s.waitReady(t, http.StatusOK, 5*time.Second)
}

// TestE2EClickHouseDown: with ClickHouse stopped prices come from the cached
// rules; /ready names ClickHouse until it is back.
func TestE2EClickHouseDown(t *testing.T) {
	chp := testenv.ClickHouseServer(t)
	s := newStack(t, stackOptions{clickhouse: chp})
	q := s.price(t, "paris", "ride")
	checkModelQuote(t, q, "paris", "ride")

	if err := chp.Stop(); err != nil {
		t.Fatal(err)
	}
	down := s.price(t, "paris", "ride")
	checkModelQuote(t, down, "paris", "ride")
	checkArithmetic(t, down, defaultRule(t, "paris", "ride"))
	if down.RuleVersion != 1 {
		t.Errorf("ruleVersion %d with ClickHouse down", down.RuleVersion)
	}
	var d struct {
		Regions []struct {
			ID string `json:"id"`
		} `json:"regions"`
	}
	s.mustData(t, `{ regions { id } }`, nil, &d)
	if len(d.Regions) != 5 {
		t.Errorf("%d regions with ClickHouse down", len(d.Regions))
	}
	// Reading the rule history needs ClickHouse: an error, never a 5xx
	// (s.gql fails the test on one) and no internals leaked.
	r := s.gql(t, `{ pricingRules(regionId: "paris", includeHistory: true) { version } }`, nil, nil)
	if r.code() != "INTERNAL_SERVER_ERROR" || r.Errors[0].Message != "internal error" {
		t.Errorf("rule history with ClickHouse down: %d %s", r.Status, r.Body)
	}

	code, ready := s.ready(t)
	if code != http.StatusServiceUnavailable || !slices.Equal(ready.Failing, []string{"clickhouse"}) {
		t.Errorf("/ready with ClickHouse down = %d %+v, want 503 failing [clickhouse]", code, ready)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := chp.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, http.StatusOK, 15*time.Second)
	s.mustData(t, `{ pricingRules(regionId: "paris", includeHistory: true) { version } }`, nil, &struct{}{})
	checkModelQuote(t, s.price(t, "paris", "ride"), "paris", "ride")
}

// TestE2EInferenceHang: a model runtime that hangs costs one inference
// timeout per request, then the circuit breaker opens; prices are served
// from the last good forecast throughout.
func TestE2EInferenceHang(t *testing.T) {
	s := newStack(t, stackOptions{})
	q := s.price(t, "nyc", "ride")
	checkModelQuote(t, q, "nyc", "ride")

	hang := &hangingPredictor{}
	old := s.a.forecaster.SetModel(&inference.Model{Name: "demand", Version: "v1", Predictor: hang})
	if old != nil {
		old.Close() // no request in flight
	}
	for i := 1; i <= 5; i++ {
		// An answer at all: the model never returns by itself.
		got := s.price(t, "nyc", "ride")
		if got.ForecastSource != "CACHED" || !got.Degraded || !containsAny(got.Warnings, "timed out") {
			t.Errorf("call %d: source %s degraded %v warnings %q; want CACHED, degraded, timed out", i, got.ForecastSource, got.Degraded, got.Warnings)
		}
		if got.DemandForecast != q.DemandForecast {
			t.Errorf("call %d: demand %v, want the last good %v", i, got.DemandForecast, q.DemandForecast)
		}
		checkArithmetic(t, got, defaultRule(t, "nyc", "ride"))
	}
	if st := s.a.forecaster.BreakerState(); st != circuitbreaker.OpenState {
		t.Fatalf("breaker %v after 5 timeouts, want open", st)
	}
	calls := hang.calls.Load()
	got := s.price(t, "nyc", "ride")
	if got.ForecastSource != "CACHED" || !got.Degraded || !containsAny(got.Warnings, "circuit breaker open") {
		t.Errorf("with the breaker open: source %s warnings %q", got.ForecastSource, got.Warnings)
	}
	if n := hang.calls.Load(); n != calls {
		t.Errorf("with the breaker open the model was called %d times (it must not be)", n-calls)
	}
	m := s.metrics(t)
	if v, ok := metricValue(m, "surge_inference_circuit_breaker_state", ""); !ok || v != 1 {
		t.Errorf("surge_inference_circuit_breaker_state = %v (found %v), want 1", v, ok)
	}
	if v, _ := metricValue(m, "surge_inference_errors_total", `kind="timeout"`); v != 5 {
		t.Errorf("surge_inference_errors_total{timeout} = %v, want 5", v)
	}
	if v, _ := metricValue(m, "surge_inference_errors_total", `kind="breaker_open"`); v < 1 {
		t.Errorf("surge_inference_errors_total{breaker_open} = %v, want ≥ 1", v)
	}
}

// TestE2EFallbacks: without online features and cached forecasts the
// historical average serves, and without history the static base price;
// quotes expire after their validity.
func TestE2EFallbacks(t *testing.T) {
	s := newStack(t, stackOptions{days: 8, loadHistory: true, noFeatures: true, quoteValidity: time.Second})
	if !s.a.averages.Loaded() {
		t.Fatal("historical averages not loaded")
	}

	t.Run("historical average", func(t *testing.T) {
		q := s.price(t, "berlin", "ride")
		if q.ForecastSource != "HISTORICAL_AVERAGE" || !q.Degraded || q.ModelVersion != nil || !containsAny(q.Warnings, "historical average") {
			t.Errorf("source %s degraded %v model %v warnings %q; want HISTORICAL_AVERAGE, degraded", q.ForecastSource, q.Degraded, q.ModelVersion, q.Warnings)
		}
		perMinute, ok := s.a.averages.Lookup("berlin", q.CreatedAt)
		if !ok || q.DemandForecast != perMinute*15 || !(q.DemandForecast > 0) {
			t.Errorf("demand %v, want 15 × the hour-of-week mean %v (found %v)", q.DemandForecast, perMinute, ok)
		}
		checkArithmetic(t, q, defaultRule(t, "berlin", "ride"))
		// Supply is unknown without online features: no surge from demand.
		if q.SurgeMultiplier != 1 || q.Price != q.BasePrice {
			t.Errorf("multiplier %v price %v, want 1 and the base price", q.SurgeMultiplier, q.Price)
		}
	})

	t.Run("static", func(t *testing.T) {
		// A new region has rules but no history.
		r := s.gql(t, setRuleMutation, ruleInput(map[string]any{
			"regionId": "oslo", "regionName": "Oslo", "productType": "ride", "currency": "NOK", "basePrice": 95, "priceStep": 1,
		}), map[string]string{"X-Admin-Key": testAdminKey})
		if len(r.Errors) != 0 {
			t.Fatalf("add oslo: %s", r.Body)
		}
		q := s.price(t, "oslo", "ride")
		if q.ForecastSource != "STATIC" || !q.Degraded || !containsAny(q.Warnings, "static") {
			t.Errorf("source %s degraded %v warnings %q; want STATIC, degraded", q.ForecastSource, q.Degraded, q.Warnings)
		}
		if q.SurgeMultiplier != 1 || q.Price != 95 || q.BasePrice != 95 || q.Currency != "NOK" || q.DemandForecast != 0 {
			t.Errorf("static quote: multiplier %v price %v base %v %s demand %v; want 1, 95, 95 NOK, 0",
				q.SurgeMultiplier, q.Price, q.BasePrice, q.Currency, q.DemandForecast)
		}
		rule := pricing.Rule{BasePrice: 95, MinMultiplier: 0.9, MaxMultiplier: 2, PriceStep: 1, Currency: "NOK"}
		checkArithmetic(t, q, rule)
	})

	t.Run("quote expiry", func(t *testing.T) {
		q := s.price(t, "london", "ride")
		query := `query($id: ID!) { factorBreakdown(quoteId: $id) { name } }`
		if r := s.gql(t, query, map[string]any{"id": q.QuoteID}, nil); len(r.Errors) != 0 {
			t.Fatalf("fresh quote not found: %s", r.Body)
		}
		time.Sleep(time.Until(q.ValidUntil) + 200*time.Millisecond)
		r := s.gql(t, query, map[string]any{"id": q.QuoteID}, nil)
		if r.Status != http.StatusOK || r.code() != "NOT_FOUND" || r.field() != "quoteId" {
			t.Errorf("expired quote: %d %s, want NOT_FOUND on quoteId", r.Status, r.Body)
		}
	})
}

// TestE2EShutdown: cancelling the app's context stops every component:
// run returns nil (stop waits for it) and the port is closed.
func TestE2EShutdown(t *testing.T) {
	s := newStack(t, stackOptions{})
	checkModelQuote(t, s.price(t, "berlin", "delivery"), "berlin", "delivery")
	addr := s.a.server.Addr()
	took, err := s.stop()
	if err != nil {
		t.Fatalf("run returned %v", err)
	}
	if !dialRefused(addr) {
		t.Errorf("%s still accepts connections after shutdown", addr)
	}
	t.Logf("run returned nil %s after cancel", took.Round(time.Millisecond))
}
