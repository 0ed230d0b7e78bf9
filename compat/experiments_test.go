package compat

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/rules"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

type discard struct{}

func (discard) Publish(topic, key string, value []byte) bool { return true }

// insert appends rows to one batch and sends it.
func insert(t *testing.T, conn driver.Conn, q string, rows [][]any) {
	t.Helper()
	b, err := conn.PrepareBatch(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if err := b.Append(r...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// TestExperiments: an experiment's lifecycle (store), its results snapshot
// computed in ClickHouse over exposures and events passed through the
// materialized views, and its roll-out into the pricing rules.
func TestExperiments(t *testing.T) {
	conn, _ := migrated(t)
	ctx := t.Context()
	store := rules.NewStore(conn)
	if _, err := rules.SeedDefaults(ctx, store); err != nil {
		t.Fatal(err)
	}
	rc, err := rules.NewCache(store, rules.CacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Hour).Add(2 * time.Hour)
	clk := &clock{t: start}
	svc, err := experiments.New(conn, experiments.Options{Rules: rc, Publisher: discard{}, Now: clk.now, DayLength: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e := experiments.Experiment{ID: "compat", Hypothesis: "cheaper converts", Regions: []string{"berlin"}, Products: []string{"ride"},
		Variants: []experiments.Variant{
			{Name: "control", Weight: 50},
			{Name: "cheaper", Weight: 50, Strategy: experiments.Strategy{BasePriceAdjustmentPercent: -5}},
		}, MinDays: 1, MaxDays: 4, MinSamplePerVariant: 10}
	if _, err := svc.Create(ctx, e, "compat"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Start(ctx, e.ID, "compat"); err != nil {
		t.Fatal(err)
	}
	if err := svc.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	// 200 users alternating variants; user i books i%4 times at 10 each in
	// the experiment (the control only even users), one pre-period booking
	// for every third user.
	var exp, evs [][]any
	want := map[string]struct{ users, conversions int64 }{}
	off := uint64(0)
	event := func(typ, user string, at time.Time, price float64, expID, variant string) {
		off++
		evs = append(evs, []any{fmt.Sprintf("e%d", off), typ, "berlin", at, at, user, "ride", &price, nil, "", nil, "", expID, variant, uint8(0), "user-events", uint32(0), off})
	}
	for i := range 200 {
		user, variant := fmt.Sprintf("user%03d", i), []string{"control", "cheaper"}[i%2]
		at := start.Add(time.Duration(i) * 10 * time.Second)
		exp = append(exp, []any{e.ID, variant, user, "berlin", "ride", "q", at, "experiments", uint32(0), uint64(i)})
		w := want[variant]
		w.users++
		for range i % 4 {
			event("booking", user, at.Add(time.Minute), 10, e.ID, variant)
			w.conversions++
		}
		want[variant] = w
		if i%3 == 0 {
			event("booking", user, start.Add(-2*time.Hour), 10, "", "")
		}
	}
	insert(t, conn, `INSERT INTO experiment_exposures (experiment_id, variant, user_hash, region_id, product_type, quote_id, at, kafka_topic, kafka_partition, kafka_offset)`, exp)
	insert(t, conn, `INSERT INTO events_raw (event_id, type, region_id, event_time, received_at, user_hash, product_type, price, available_supply, signal, value, quote_id, experiment_id, variant, backfill, kafka_topic, kafka_partition, kafka_offset)`, evs)

	clk.t = start.Add(2 * time.Hour)
	if err := svc.RefreshResults(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Results(ctx, []string{e.ID})
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if len(r.Variants) != 2 || !r.ComputedAt.Equal(clk.t) {
		t.Fatalf("results: %d variants computed at %s, want 2 at %s", len(r.Variants), r.ComputedAt, clk.t)
	}
	for _, v := range r.Variants {
		w := want[v.Name]
		if v.Users != w.users || v.Conversions != w.conversions || math.Abs(v.Revenue-10*float64(w.conversions)) > 1e-9 || v.PrePeriodUsers == 0 {
			t.Errorf("variant %s: users %d, bookings %d, revenue %g, pre-period users %d; want %d, %d, %g, > 0",
				v.Name, v.Users, v.Conversions, v.Revenue, v.PrePeriodUsers, w.users, w.conversions, 10*float64(w.conversions))
		}
	}
	var days int64
	for _, d := range r.Daily {
		days += d.Exposures
	}
	if days != int64(len(exp)) {
		t.Errorf("daily series: %d exposures, want %d", days, len(exp))
	}

	if _, err := svc.Stop(ctx, e.ID, "compat done", "compat"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RollOut(ctx, e.ID, "cheaper", "compat"); err != nil {
		t.Fatal(err)
	}
	hist, err := svc.History(ctx, e.ID)
	if err != nil || len(hist) < 4 {
		t.Fatalf("History: %d versions, %v; want created, started, stopped, rolled out", len(hist), err)
	}
	// A new service finds the experiment as stored.
	again, err := experiments.New(conn, experiments.Options{Rules: rc, Publisher: discard{}, Now: clk.now, DayLength: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, ok := again.Get(e.ID); !ok || got.Winner != "cheaper" {
		t.Fatalf("reloaded experiment: %+v, %v", got, ok)
	}
}
