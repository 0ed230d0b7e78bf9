package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/pricing"
)

// TestE2EAuditTrail: thousands of quotes land in pricing_decisions; a quote
// whose cache entry has expired is still explained by quoteAudit, from
// ClickHouse, and recomputed bit for bit; `surge reprice` recomputes every
// one of them.
func TestE2EAuditTrail(t *testing.T) {
	s := newStack(t, stackOptions{consumers: true, quoteValidity: time.Second})
	var inputs []map[string]any
	for _, r := range demoRegions {
		for _, p := range []string{"ride", "xl"} {
			inputs = append(inputs, map[string]any{"regionId": r, "productType": p})
		}
	}
	for len(inputs) < 100 {
		inputs = append(inputs, inputs[:min(len(inputs), 100-len(inputs))]...)
	}
	var first string
	const rounds = 20
	for range rounds {
		var d struct {
			Prices []quoteJSON `json:"prices"`
		}
		s.mustData(t, `query($in: [PriceInput!]!) { prices(inputs: $in) { `+quoteFields+` } }`, map[string]any{"in": inputs}, &d)
		if first == "" {
			first = d.Prices[0].QuoteID
		}
	}
	want := uint64(rounds * len(inputs))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitCond(t, "every decision in ClickHouse", func() bool {
		var n uint64
		return s.a.ch.QueryRow(ctx, "SELECT count() FROM pricing_decisions").Scan(&n) == nil && n >= want
	})
	waitCond(t, "the first quote gone from the cache", func() bool {
		return s.a.rdb.Exists(ctx, "quote:{"+first+"}").Val() == 0
	})

	var a struct {
		QuoteAudit struct {
			QuoteID, Source, EngineVersion, CurrentEngineVersion, Record  string
			SurgeMultiplier, Price, RecomputedMultiplier, RecomputedPrice float64
			Identical                                                     bool
		} `json:"quoteAudit"`
	}
	s.mustData(t, `query($id: ID!) { quoteAudit(quoteId: $id) { quoteId source engineVersion currentEngineVersion record surgeMultiplier price recomputedMultiplier recomputedPrice identical } }`,
		map[string]any{"id": first}, &a)
	qa := a.QuoteAudit
	if qa.QuoteID != first || qa.Source != "CLICKHOUSE" || !qa.Identical || qa.EngineVersion != pricing.EngineVersion ||
		qa.RecomputedPrice != qa.Price || !strings.Contains(qa.Record, first) {
		t.Fatalf("quoteAudit of an expired quote: %+v", qa)
	}
	if r := s.gql(t, `{ quoteAudit(quoteId: "no-such-quote") { quoteId } }`, nil, nil); len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "NOT_FOUND" {
		t.Fatalf("quoteAudit of an unknown quote: %+v", r.Errors)
	}

	cmd := newRoot()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"reprice", "--since", "1h", "--log-format", "text",
		"--clickhouse-addr", s.cfg.ClickHouseAddr, "--clickhouse-database", s.cfg.ClickHouseDatabase})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("surge reprice --since 1h: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "differing: 0") || strings.Contains(out.String(), "quotes: 0,") {
		t.Fatalf("surge reprice: %s", out.String())
	}
	t.Log(strings.TrimSpace(out.String()))
}
