package rules

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/pricing"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func migrated(t *testing.T) driver.Conn {
	t.Helper()
	addr, db := testenv.ClickHouse(t)
	return openMigrated(t, addr, db)
}

func openMigrated(t *testing.T, addr, db string) driver.Conn {
	t.Helper()
	conn := chtest.Open(t, addr, db)
	return conn
}

func rule(region, product string, base float64) pricing.Rule {
	return pricing.Rule{
		RegionID: region, RegionName: region + " city", ProductType: product, Currency: "EUR",
		BasePrice: base, MinMultiplier: 1, MaxMultiplier: 3, MaxStepPerMinute: 0.5,
		Threshold: 0.8, Sensitivity: 1, MultiplierStep: 0.05, PriceStep: 0.1,
	}
}

func versions(rs []pricing.Rule) []uint32 {
	var out []uint32
	for _, r := range rs {
		out = append(out, r.Version)
	}
	return out
}

func TestPutAssignsVersions(t *testing.T) {
	ctx := ctxT(t)
	s := NewStore(migrated(t))
	for i, want := range []uint32{1, 2, 3} {
		r := rule("berlin", "ride", 8+float64(i))
		r.Version = 42 // ignored
		got, err := s.Put(ctx, r, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != want {
			t.Fatalf("put %d got version %d, want %d", i, got.Version, want)
		}
		if got.EffectiveFrom.IsZero() || time.Since(got.EffectiveFrom) > time.Minute || got.EffectiveFrom.Nanosecond() != 0 {
			t.Fatalf("EffectiveFrom = %v, want now, to the second", got.EffectiveFrom)
		}
	}
	// Versions count per (region, product).
	if got, err := s.Put(ctx, rule("berlin", "xl", 12), "alice"); err != nil || got.Version != 1 {
		t.Fatalf("first xl version = %d, %v; want 1", got.Version, err)
	}
	if got, err := s.Put(ctx, rule("paris", "ride", 9), "bob"); err != nil || got.Version != 1 {
		t.Fatalf("first paris version = %d, %v; want 1", got.Version, err)
	}

	hist, err := s.History(ctx, "berlin")
	if err != nil {
		t.Fatal(err)
	}
	type pv struct {
		product string
		version uint32
		base    float64
	}
	var got []pv
	for _, r := range hist {
		got = append(got, pv{r.ProductType, r.Version, r.BasePrice})
	}
	want := []pv{{"ride", 1, 8}, {"ride", 2, 9}, {"ride", 3, 10}, {"xl", 1, 12}}
	if !slices.Equal(got, want) {
		t.Fatalf("History = %v, want %v", got, want)
	}
	// Every field round-trips.
	in := rule("rome", "ride", 7.5)
	in.Currency, in.MinMultiplier, in.MaxMultiplier, in.MaxStepPerMinute = "EUR", 0.8, 2.5, 0.25
	in.Threshold, in.Sensitivity, in.MultiplierStep, in.PriceStep = 0.7, 2, 0.1, 0.5
	in.EffectiveFrom = time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	stored, err := s.Put(ctx, in, "carol")
	if err != nil {
		t.Fatal(err)
	}
	hist, err = s.History(ctx, "rome")
	if err != nil {
		t.Fatal(err)
	}
	in.Version = 1
	if len(hist) != 1 || hist[0] != in || stored != in {
		t.Fatalf("round trip: stored %+v, read %+v, want %+v", stored, hist, in)
	}
}

func TestPutRejects(t *testing.T) {
	ctx := ctxT(t)
	s := NewStore(migrated(t))
	for _, tc := range []struct {
		name   string
		mutate func(*pricing.Rule)
		want   error
		field  string
	}{
		{"invalid rule", func(r *pricing.Rule) { r.MaxMultiplier = 0.5 }, nil, "maxMultiplier"},
		{"missing currency", func(r *pricing.Rule) { r.Currency = "" }, nil, "currency"},
		{"backdated", func(r *pricing.Rule) { r.EffectiveFrom = time.Now().Add(-time.Hour) }, ErrBackdated, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rule("berlin", "ride", 8)
			tc.mutate(&r)
			_, err := s.Put(ctx, r, "x")
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var fe *pricing.FieldError
			if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
				t.Fatalf("err = %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
	if hist, err := s.History(ctx, "berlin"); err != nil || len(hist) != 0 {
		t.Fatalf("rejected puts stored %v (%v)", hist, err)
	}
}

func TestCurrentAtTimes(t *testing.T) {
	ctx := ctxT(t)
	s := NewStore(migrated(t))
	now := time.Now().UTC().Truncate(time.Second)
	put := func(product string, base float64, from time.Time) pricing.Rule {
		t.Helper()
		r := rule("berlin", product, base)
		r.EffectiveFrom = from
		got, err := s.Put(ctx, r, "test")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	put("ride", 8, now)                          // v1 from now
	put("ride", 9, now.Add(time.Hour))           // v2 from +1h
	put("ride", 10, now.Add(3*time.Hour))        // v3 from +3h
	put("ride", 11, now.Add(2*time.Hour))        // v4 from +2h: overrides v3 too
	put("xl", 12, now.Add(30*time.Minute))       // xl v1 from +30m
	put("delivery", 3, now.Add(-30*time.Second)) // within MaxBackdate

	type pv struct {
		product string
		version uint32
	}
	for _, tc := range []struct {
		name string
		at   time.Time
		want []pv
	}{
		{"before everything", now.Add(-time.Minute), nil},
		{"now", now, []pv{{"delivery", 1}, {"ride", 1}}},
		{"just before v2", now.Add(time.Hour - time.Second), []pv{{"delivery", 1}, {"ride", 1}, {"xl", 1}}},
		{"at v2", now.Add(time.Hour), []pv{{"delivery", 1}, {"ride", 2}, {"xl", 1}}},
		{"at v4", now.Add(2 * time.Hour), []pv{{"delivery", 1}, {"ride", 4}, {"xl", 1}}},
		{"after v3's start: v4 is higher", now.Add(4 * time.Hour), []pv{{"delivery", 1}, {"ride", 4}, {"xl", 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur, err := s.Current(ctx, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			var got []pv
			for _, r := range cur {
				got = append(got, pv{r.ProductType, r.Version})
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Current(%s) = %v, want %v", tc.at, got, tc.want)
			}
		})
	}

	pending, err := s.Pending(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := versions(pending); !slices.Equal(got, []uint32{2, 3, 4, 1}) { // ride v2..v4, xl v1
		t.Fatalf("Pending(now) versions = %v", got)
	}
	pending, err = s.Pending(ctx, now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 0 { // v3 starts later but is older than v4: never in force
		t.Fatalf("Pending(+2h) = %v, want none", pending)
	}
}

func TestCacheGetAndPending(t *testing.T) {
	ctx := ctxT(t)
	s := NewStore(migrated(t))
	now := time.Now().UTC().Truncate(time.Second)
	mustPut := func(r pricing.Rule) {
		t.Helper()
		if _, err := s.Put(ctx, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(rule("berlin", "ride", 8))
	next := rule("berlin", "ride", 9)
	next.EffectiveFrom = now.Add(time.Hour)
	mustPut(next)
	mustPut(rule("berlin", "xl", 12))
	london := rule("london", "ride", 7)
	london.Currency, london.RegionName = "GBP", "London"
	mustPut(london)
	future := rule("oslo", "ride", 90)
	future.EffectiveFrom = now.Add(time.Hour)
	mustPut(future)

	c, err := NewCache(s, CacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("berlin", "ride", now); ok || c.Loaded() || c.Regions() != nil {
		t.Fatal("cache answers before its first load")
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Loaded() {
		t.Fatal("not Loaded after Refresh")
	}
	for _, tc := range []struct {
		region, product string
		at              time.Time
		version         uint32
		ok              bool
	}{
		{"berlin", "ride", now.Add(time.Second), 1, true},
		{"berlin", "ride", now.Add(time.Hour - time.Second), 1, true},
		{"berlin", "ride", now.Add(time.Hour), 2, true}, // the pending version takes over without a reload
		{"berlin", "xl", now.Add(time.Hour), 1, true},
		{"berlin", "delivery", now, 0, false},
		{"oslo", "ride", now, 0, false},
		{"oslo", "ride", now.Add(2 * time.Hour), 1, true},
		{"nowhere", "ride", now, 0, false},
	} {
		r, ok := c.Get(tc.region, tc.product, tc.at)
		if ok != tc.ok || r.Version != tc.version {
			t.Errorf("Get(%s, %s, %s) = v%d, %v; want v%d, %v", tc.region, tc.product, tc.at, r.Version, ok, tc.version, tc.ok)
		}
	}
	want := []Region{
		{ID: "berlin", Name: "berlin city", Currency: "EUR", Products: []string{"ride", "xl"}},
		{ID: "london", Name: "London", Currency: "GBP", Products: []string{"ride"}},
	}
	same := func(a, b Region) bool {
		return a.ID == b.ID && a.Name == b.Name && a.Currency == b.Currency && slices.Equal(a.Products, b.Products)
	}
	got := c.Regions()
	if len(got) != len(want) {
		t.Fatalf("Regions = %+v, want %+v", got, want)
	}
	for i := range got {
		if !same(got[i], want[i]) {
			t.Errorf("Regions[%d] = %+v, want %+v", i, got[i], want[i])
		}
		if one, ok := c.Region(want[i].ID); !ok || !same(one, want[i]) {
			t.Errorf("Region(%s) = %+v, %v; want %+v", want[i].ID, one, ok, want[i])
		}
	}
	for _, id := range []string{"oslo", "nowhere"} { // oslo has only a pending version
		if r, ok := c.Region(id); ok {
			t.Errorf("Region(%s) = %+v, want none", id, r)
		}
	}
}

func TestCacheRefreshAfterPut(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	s := NewStore(conn)
	c, err := NewCache(s, CacheOptions{Interval: time.Hour}) // only Puts trigger reloads here
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	waitFor(t, "first load", c.Loaded)
	loaded := c.LoadedAt()

	// A Put through the cache is visible at once...
	r, err := c.Put(ctx, rule("berlin", "ride", 8), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Get("berlin", "ride", time.Now()); !ok || got != r {
		t.Fatalf("Get right after Put = %+v, %v; want %+v", got, ok, r)
	}
	// ...and triggers a full reload, which also brings a version another
	// process stored meanwhile.
	other := NewStore(conn)
	if _, err := other.Put(ctx, rule("paris", "ride", 9), "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, rule("berlin", "ride", 8.5), "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload after Put", func() bool {
		_, ok := c.Get("paris", "ride", time.Now())
		return ok && c.LoadedAt().After(loaded)
	})
	if got, _ := c.Get("berlin", "ride", time.Now()); got.Version != 2 || got.BasePrice != 8.5 {
		t.Fatalf("Get after reload = %+v, want v2 at 8.5", got)
	}
}

func TestCachePeriodicRefresh(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	c, err := NewCache(NewStore(conn), CacheOptions{Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go c.Run(runCtx)
	waitFor(t, "first load", c.Loaded)
	if _, err := NewStore(conn).Put(ctx, rule("paris", "ride", 9), "bob"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "periodic reload", func() bool {
		_, ok := c.Get("paris", "ride", time.Now())
		return ok
	})
}

// TestCacheServesWhileDown stops the server under a running cache: Get keeps
// answering from the last good set, failures are counted, and once the
// server is back reloads pick up new versions.
func TestCacheServesWhileDown(t *testing.T) {
	ctx := ctxT(t)
	srv, err := devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	conn := openMigrated(t, srv.Addr, "surge")
	s := NewStore(conn)
	if _, err := SeedDefaults(ctx, s); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c, err := NewCache(s, CacheOptions{Interval: 50 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	waitFor(t, "first load", c.Loaded)
	before, ok := c.Get("london", "ride", time.Now())
	if !ok || before.Currency != "GBP" {
		t.Fatalf("Get(london, ride) = %+v, %v", before, ok)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	failures := c.refreshes.WithLabelValues("error")
	waitFor(t, "failed reloads", func() bool { return testutil.ToFloat64(failures) >= 3 })
	if got, ok := c.Get("london", "ride", time.Now()); !ok || got != before {
		t.Fatalf("Get during the outage = %+v, %v; want %+v", got, ok, before)
	}
	if len(c.Regions()) != 5 || !c.Loaded() {
		t.Fatalf("Regions during the outage = %v", c.Regions())
	}
	if _, err := c.Put(ctx, rule("london", "ride", 9), "alice"); err == nil {
		t.Fatal("Put succeeded with the server down")
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	r := rule("london", "ride", 9)
	r.Currency = "GBP"
	if _, err := s.Put(ctx, r, "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload after the restart", func() bool {
		got, _ := c.Get("london", "ride", time.Now())
		return got.Version == 2
	})
	okCount := testutil.ToFloat64(c.refreshes.WithLabelValues("ok"))
	if okCount < 2 {
		t.Fatalf("ok reloads = %v", okCount)
	}
	if n, err := testutil.GatherAndCount(reg, "surge_rules_cache_refreshes_total"); err != nil || n != 2 {
		t.Fatalf("registered refresh series = %d (%v), want ok and error", n, err)
	}
}

func TestSeedDefaults(t *testing.T) {
	ctx := ctxT(t)
	s := NewStore(migrated(t))
	// An operator already priced berlin rides: seeding leaves that alone.
	mine := rule("berlin", "ride", 5)
	if _, err := s.Put(ctx, mine, "operator"); err != nil {
		t.Fatal(err)
	}
	defaults := DefaultRules()
	seeded, err := SeedDefaults(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(seeded) != len(defaults)-1 {
		t.Fatalf("seeded %d rules, want %d", len(seeded), len(defaults)-1)
	}
	again, err := SeedDefaults(ctx, s)
	if err != nil || len(again) != 0 {
		t.Fatalf("second seed stored %d rules (%v), want none", len(again), err)
	}
	cur, err := s.Current(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) != len(defaults) {
		t.Fatalf("%d current rules, want %d", len(cur), len(defaults))
	}
	currencies := map[string]string{}
	for _, r := range cur {
		if r.Version != 1 {
			t.Errorf("%s/%s at version %d, want 1", r.RegionID, r.ProductType, r.Version)
		}
		if r.RegionID == "berlin" && r.ProductType == "ride" && r.BasePrice != 5 {
			t.Errorf("seeding replaced the operator's berlin ride rule: %+v", r)
		}
		currencies[r.RegionID] = r.Currency
	}
	for region, want := range map[string]string{"berlin": "EUR", "paris": "EUR", "london": "GBP", "nyc": "USD", "sf": "USD"} {
		if currencies[region] != want {
			t.Errorf("%s currency %q, want %q", region, currencies[region], want)
		}
	}
	for _, r := range defaults {
		if err := r.Validate(); err != nil {
			t.Errorf("default %s/%s invalid: %v", r.RegionID, r.ProductType, err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
