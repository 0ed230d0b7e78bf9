package experiments

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/rules"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// published collects what the service publishes.
type published struct {
	mu   sync.Mutex
	recs [][]byte
}

func (p *published) Publish(topic, key string, value []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if topic != Topic {
		panic("exposure on topic " + topic)
	}
	p.recs = append(p.recs, value)
	return true
}

func (p *published) n() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.recs) }

func setup(t *testing.T, clk *clock) (*Service, *rules.Cache, driver.Conn, *published) {
	t.Helper()
	conn, _, _ := chtest.Migrated(t)
	ctx := ctxT(t)
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
	pub := &published{}
	svc, err := New(conn, Options{Rules: rc, Publisher: pub, Now: clk.now, DayLength: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return svc, rc, conn, pub
}

func TestLifecycle(t *testing.T) {
	ctx := ctxT(t)
	clk := &clock{}
	svc, rc, conn, pub := setup(t, clk)
	// After the seeded rules took effect (stored at second precision).
	clk.set(time.Now().UTC().Add(2 * time.Second))

	e := valid()
	e.ID, e.Regions, e.Products = "price-cut", []string{"berlin"}, []string{"ride"}
	e.Variants[1].Strategy = Strategy{MaxMultiplier: ptr(2), BasePriceAdjustmentPercent: -10}
	created, err := svc.Create(ctx, e, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if created.Status != StatusDraft || created.Version != 1 || created.DayLength != time.Hour {
		t.Fatalf("created: %+v", created)
	}
	if _, err := svc.Create(ctx, e, "admin"); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if got := svc.Assign("berlin", "ride", "u1"); got != nil {
		t.Fatalf("a draft assigns: %+v", got)
	}
	if _, err := svc.Start(ctx, "nope", "admin"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("start unknown: %v", err)
	}
	if _, err := svc.Start(ctx, e.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Start(ctx, e.ID, "admin"); !errors.Is(err, ErrStatus) {
		t.Fatalf("start twice: %v, want ErrStatus", err)
	}

	// Assignment: only with a user, only on the targeted traffic.
	if got := svc.Assign("berlin", "ride", ""); got != nil {
		t.Fatalf("no user, assigned %+v", got)
	}
	if got := svc.Assign("paris", "ride", "u1"); got != nil {
		t.Fatalf("untargeted region, assigned %+v", got)
	}
	a := svc.Assign("berlin", "ride", "u1")
	if len(a) != 1 || a[0].ExperimentID != e.ID {
		t.Fatalf("assign: %+v", a)
	}
	for range 10 {
		if b := svc.Assign("berlin", "ride", "u1"); b[0].Variant != a[0].Variant {
			t.Fatal("assignment not stable")
		}
	}

	// Overlap: the same layer on shared traffic is refused, another layer is not.
	o := valid()
	o.ID, o.Products = "all-berlin", []string{"ride", "xl"}
	o.Regions = []string{"berlin"}
	if _, err := svc.Create(ctx, o, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Start(ctx, o.ID, "admin"); !errors.Is(err, ErrOverlap) {
		t.Fatalf("overlapping start: %v, want ErrOverlap", err)
	}
	if got, _ := svc.Get(o.ID); got.Status != StatusDraft {
		t.Fatalf("refused start changed the status: %s", got.Status)
	}
	l := valid()
	l.ID, l.Layer = "other-layer", "layer2"
	if _, err := svc.Create(ctx, l, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Start(ctx, l.ID, "admin"); err != nil {
		t.Fatalf("another layer: %v", err)
	}
	if got := svc.Assign("berlin", "ride", "u1"); len(got) != 2 {
		t.Fatalf("two layers: %+v", got)
	}

	// A strategy that breaks a targeted rule is refused at start.
	bad := valid()
	bad.ID, bad.Layer = "bad", "layer3"
	bad.Variants[1].Strategy = Strategy{MinMultiplier: ptr(1), MaxMultiplier: ptr(1), Threshold: ptr(1000)}
	bad.Variants[1].Strategy.MinMultiplier = ptr(0.5)
	bad.Variants[1].Strategy.MaxMultiplier = ptr(1)
	if _, err := svc.Create(ctx, bad, "admin"); err != nil {
		t.Fatal(err)
	}

	// Exposures: at most once per user, experiment and experiment day.
	x := Exposure{ExperimentID: e.ID, Variant: a[0].Variant, UserHash: "h1", RegionID: "berlin", ProductType: "ride", QuoteID: "q", At: clk.now()}
	svc.Expose(x)
	svc.Expose(x)
	x.At = x.At.Add(10 * time.Minute)
	svc.Expose(x)
	if pub.n() != 1 {
		t.Fatalf("%d exposures logged the same day, want 1", pub.n())
	}
	x.At = x.At.Add(time.Hour) // the next experiment day
	svc.Expose(x)
	if pub.n() != 2 {
		t.Fatalf("%d exposures after a new day, want 2", pub.n())
	}

	// Roll-out refuses without a winner, then writes the variant's rule.
	if _, err := svc.RollOut(ctx, e.ID, "", "admin"); !errors.Is(err, ErrNoWinner) {
		t.Fatalf("roll out without winner: %v", err)
	}
	before, _ := rc.Get("berlin", "ride", time.Now())
	if _, err := svc.RollOut(ctx, e.ID, "nope", "admin"); err == nil {
		t.Fatal("unknown variant rolled out")
	}
	done, err := svc.RollOut(ctx, e.ID, "cheaper", "admin")
	if err != nil {
		t.Fatal(err)
	}
	after, _ := rc.Get("berlin", "ride", time.Now())
	if done.Status != StatusRolledOut || done.Winner != "cheaper" || len(done.RuleVersions) != 1 ||
		after.Version != before.Version+1 || after.MaxMultiplier != 2 || math.Abs(after.BasePrice-before.BasePrice*0.9) > 1e-9 {
		t.Fatalf("rolled out: %+v; rule before %+v after %+v", done, before, after)
	}
	if other, _ := rc.Get("berlin", "xl", time.Now()); other.Version != 1 {
		t.Fatalf("untargeted product got a new version: %+v", other)
	}
	if got := svc.Assign("berlin", "ride", "u1"); len(got) != 1 || got[0].ExperimentID != l.ID {
		t.Fatalf("after roll-out: %+v", got)
	}

	// Another replica (a fresh service on the same database) sees it all,
	// and the history keeps every version.
	other, err := New(conn, Options{Rules: rc})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, ok := other.Get(e.ID); !ok || got.Status != StatusRolledOut || got.Version != 3 {
		t.Fatalf("other replica sees %+v", got)
	}
	hist, err := other.History(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	var statuses []Status
	for _, h := range hist {
		statuses = append(statuses, h.Status)
	}
	if !slices.Equal(statuses, []Status{StatusDraft, StatusRunning, StatusRolledOut}) {
		t.Fatalf("history: %v", statuses)
	}
	if _, err := svc.Stop(ctx, e.ID, "", "admin"); !errors.Is(err, ErrStatus) {
		t.Fatalf("stop a rolled-out experiment: %v", err)
	}
	if _, err := svc.Stop(ctx, l.ID, "done", "admin"); err != nil {
		t.Fatal(err)
	}
	if got := svc.Assign("berlin", "ride", "u1"); got != nil {
		t.Fatalf("after stop: %+v", got)
	}
	_ = pricing.Rule{}
}

// TestResultsMatchRawData writes exposures and bookings into ClickHouse
// (through the tables the sink writes, so the materialized views run) and
// checks every figure of Results against the same data summed in Go.
func TestResultsMatchRawData(t *testing.T) {
	ctx := ctxT(t)
	// After the seeded rules took effect (the start checks the strategies
	// against the rules in force).
	start := time.Now().UTC().Truncate(time.Hour).Add(2 * time.Hour)
	clk := &clock{t: start}
	svc, _, conn, _ := setup(t, clk)
	e := valid()
	e.ID, e.MinDays, e.MaxDays, e.MinSamplePerVariant = "res", 2, 8, 100
	e.Guardrails = []Metric{MetricCancellationRate}
	if _, err := svc.Create(ctx, e, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Start(ctx, e.ID, "t"); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	type user struct {
		hash, variant string
		pre, rev      float64
		preBooked     bool
		bookings      int
		cancels       int
	}
	var users []user
	var exp [][]any
	var evs [][]any
	off := uint64(0)
	event := func(typ, uh string, at time.Time, price *float64, expID, variant string) {
		off++
		evs = append(evs, []any{fmt.Sprintf("e%d", off), typ, "berlin", at, at, uh, "ride", price, nil, "", nil, "", expID, variant, uint8(0), "user-events", uint32(0), off})
	}
	for i := range 600 {
		u := user{hash: fmt.Sprintf("user%04d", i), variant: []string{"control", "cheaper"}[i%2]}
		first := start.Add(time.Duration(rng.IntN(2*3600)) * time.Second) // days 0-1 (1 h days); a second exposure on the next
		exp = append(exp, []any{e.ID, u.variant, u.hash, "berlin", "ride", "q", first, "experiments", uint32(0), uint64(i)})
		if rng.IntN(3) == 0 { // a second exposure, another day
			exp = append(exp, []any{e.ID, u.variant, u.hash, "berlin", "ride", "q", first.Add(time.Hour), "experiments", uint32(0), uint64(10000 + i)})
		}
		p := 0.2
		if u.variant == "cheaper" {
			p = 0.3
		}
		if rng.Float64() < 0.4 { // pre-period booking (within 14 days before)
			price := 5 + 10*rng.Float64()
			u.pre, u.preBooked = price, true
			event("booking", u.hash, start.Add(-time.Duration(1+rng.IntN(10))*time.Hour), &price, "", "")
			p += 0.2
		}
		// Bookings long before the pre-period do not count.
		old := 50.0
		event("booking", u.hash, start.Add(-30*time.Hour), &old, "", "")
		for rng.Float64() < p && u.bookings < 3 {
			price := 5 + 15*rng.Float64()
			if i == 7 {
				price = 5000 // one huge booking: winsorized
			}
			u.rev += price
			u.bookings++
			event("booking", u.hash, first.Add(time.Duration(rng.IntN(600))*time.Second), &price, e.ID, u.variant)
		}
		if u.bookings > 0 && rng.IntN(10) == 0 {
			u.cancels++
			event("cancel", u.hash, first.Add(20*time.Minute), nil, e.ID, u.variant)
		}
		users = append(users, u)
	}
	insert(t, conn, `INSERT INTO experiment_exposures (experiment_id, variant, user_hash, region_id, product_type, quote_id, at, kafka_topic, kafka_partition, kafka_offset)`, exp)
	insert(t, conn, `INSERT INTO events_raw (event_id, type, region_id, event_time, received_at, user_hash, product_type, price, available_supply, signal, value, quote_id, experiment_id, variant, backfill, kafka_topic, kafka_partition, kafka_offset)`, evs)

	// Before the minimum duration the verdict is KEEP_RUNNING whatever the
	// data. The first read computes the snapshot.
	clk.set(start.Add(90 * time.Minute))
	res, err := svc.Results(ctx, []string{e.ID})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Verdict != VerdictKeepRunning || !res[0].ComputedAt.Equal(start.Add(90*time.Minute)) {
		t.Errorf("verdict at 1.5 of 2 days: %s, computed at %s", res[0].Verdict, res[0].ComputedAt)
	}
	// Later reads serve that snapshot until the background refresh finds
	// it older than ResultsInterval (5 min by default).
	clk.set(start.Add(3 * time.Hour)) // 3 experiment days later
	if res, err = svc.Results(ctx, []string{e.ID}); err != nil {
		t.Fatal(err)
	}
	if !res[0].ComputedAt.Equal(start.Add(90 * time.Minute)) {
		t.Errorf("read recomputed the snapshot: computed at %s", res[0].ComputedAt)
	}
	svc.refreshDue(ctx)
	if res, err = svc.Results(ctx, []string{e.ID}); err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if !r.ComputedAt.Equal(start.Add(3 * time.Hour)) {
		t.Fatalf("after the refresh the snapshot is of %s, want %s", r.ComputedAt, start.Add(3*time.Hour))
	}
	// The cap lies at the 99th percentile of the converted users' revenue.
	var revs []float64
	for _, u := range users {
		if u.rev > 0 {
			revs = append(revs, u.rev)
		}
	}
	sort.Float64s(revs)
	lo, hi := revs[int(0.985*float64(len(revs)))], revs[int(0.995*float64(len(revs)))]
	if !(r.RevenueCap >= lo && r.RevenueCap <= hi) || r.RevenueCap >= 5000 {
		t.Fatalf("revenue cap %g, want within the 98.5-99.5th percentiles [%g, %g]", r.RevenueCap, lo, hi)
	}
	for _, v := range r.Variants {
		var n, conv, convs, canc, pre int64
		var raw, capped float64
		for _, u := range users {
			if u.variant != v.Name {
				continue
			}
			n++
			if u.bookings > 0 {
				conv++
			}
			convs += int64(u.bookings)
			if u.cancels > 0 {
				canc++
			}
			if u.preBooked {
				pre++
			}
			raw += u.rev
			capped += math.Min(u.rev, r.RevenueCap)
		}
		if v.Users != n || v.ConvertedUsers != conv || v.Conversions != convs || v.CancelledUsers != canc || v.PrePeriodUsers != pre ||
			math.Abs(v.Revenue-raw) > 1e-6 || math.Abs(v.CappedRevenue-capped) > 1e-6 {
			t.Errorf("variant %s: got users %d conv %d bookings %d cancels %d pre %d revenue %.4f capped %.4f; want %d %d %d %d %d %.4f %.4f",
				v.Name, v.Users, v.ConvertedUsers, v.Conversions, v.CancelledUsers, v.PrePeriodUsers, v.Revenue, v.CappedRevenue,
				n, conv, convs, canc, pre, raw, capped)
		}
		if math.Abs(v.ConversionRate.Value-float64(conv)/float64(n)) > 1e-12 {
			t.Errorf("conversion rate %g", v.ConversionRate.Value)
		}
		// Cancellation rate: cancellations per booking (every cancel here is
		// one per cancelling user).
		if v.Cancellations != canc || math.Abs(v.CancellationRate.Value-float64(canc)/float64(convs)) > 1e-12 || !(v.CancellationRate.StdErr > 0) {
			t.Errorf("variant %s: %d cancellations, rate %+v; want %d, %g", v.Name, v.Cancellations, v.CancellationRate, canc, float64(canc)/float64(convs))
		}
	}
	// Daily series: exposures per experiment day add up to the exposure rows.
	var dayExp, dayConv int64
	for _, d := range r.Daily {
		dayExp += d.Exposures
		dayConv += d.Conversions
		if d.Day < 0 || d.Day > 3 {
			t.Errorf("day %d out of range", d.Day)
		}
	}
	var wantConv int64
	for _, u := range users {
		wantConv += int64(u.bookings)
	}
	if dayExp != int64(len(exp)) || dayConv != wantConv {
		t.Errorf("daily: %d exposures, %d conversions; want %d, %d", dayExp, dayConv, len(exp), wantConv)
	}
	// The comparison: CUPED applies (pre-period data), the verdict waits
	// for nothing but evidence (3 of 2 minimum days, 300 of 100 users).
	c := r.Metrics[0].Comparisons[0]
	if r.Metrics[0].Metric != MetricConversionRate || c.Variant != "cheaper" || !c.CUPED || c.VarianceReduction <= 0 {
		t.Errorf("primary comparison: %+v", c)
	}
	if r.SRM.Mismatch {
		t.Errorf("SRM flagged on a 300/300 split: %+v", r.SRM)
	}
	// The true conversion rates differ a lot (about 0.27 against 0.4 with
	// the pre-period boost): after the minimum duration the winner is named.
	t.Logf("verdict %s: %s", r.Verdict, r.VerdictReason)
	if r.Verdict != VerdictWinner || r.Winner != "cheaper" || r.DaysElapsed != 3 {
		t.Errorf("verdict %s (winner %q) after %g days: %s", r.Verdict, r.Winner, r.DaysElapsed, r.VerdictReason)
	}

	// A snapshot is fresh: nothing is due until the interval passes again.
	svc.refreshDue(ctx)
	if res, err = svc.Results(ctx, []string{e.ID}); err != nil || !res[0].ComputedAt.Equal(r.ComputedAt) {
		t.Errorf("refresh of a fresh snapshot: %v, computed at %s", err, res[0].ComputedAt)
	}
}

func insert(t *testing.T, conn driver.Conn, q string, rows [][]any) {
	t.Helper()
	b, err := conn.PrepareBatch(context.Background(), q)
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
