package analytics

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// migrated opens a fresh, migrated database on the shared test server.
func migrated(t *testing.T) driver.Conn {
	t.Helper()
	addr, db := testenv.ClickHouse(t)
	return openMigrated(t, addr, db)
}

func openMigrated(t *testing.T, addr, db string) driver.Conn {
	t.Helper()
	ctx := ctxT(t)
	conn, err := Open(ctx, Options{Addr: addr, Database: db, ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestOpenCreatesDatabase(t *testing.T) {
	ctx := ctxT(t)
	addr, db := testenv.ClickHouse(t)
	name := db + "_created"
	conn, err := Open(ctx, Options{Addr: addr, Database: name})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name)
		conn.Close()
	}()
	var current string
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&current); err != nil {
		t.Fatal(err)
	}
	if current != name {
		t.Fatalf("connected to %q, want %q", current, name)
	}
	// Opening again finds it.
	again, err := Open(ctx, Options{Addr: addr, Database: name})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()

	for _, bad := range []string{"a-b", "x; DROP DATABASE default", ""} {
		if bad == "" {
			continue // empty means the default
		}
		if c, err := Open(ctx, Options{Addr: addr, Database: bad}); err == nil {
			c.Close()
			t.Errorf("Open accepted database %q", bad)
		}
	}
	if _, err := Open(ctx, Options{Addr: "127.0.0.1:1", Database: "x", DialTimeout: time.Second}); err == nil {
		t.Error("Open of a closed port succeeded")
	}
}

func TestHourOfWeek(t *testing.T) {
	for _, tc := range []struct {
		at   string
		want int
	}{
		{"2024-01-01T00:00:00Z", 0},   // a Monday
		{"2024-01-01T00:59:59Z", 0},   //
		{"2024-01-01T01:00:00Z", 1},   //
		{"2024-01-02T05:30:00Z", 29},  // Tuesday
		{"2024-01-06T12:00:00Z", 132}, // Saturday
		{"2024-01-07T23:59:00Z", 167}, // Sunday
		{"2024-01-08T00:00:00Z", 0},   // next Monday
		{"2024-01-01T01:30:00+02:00", 167},
		{"1970-01-01T00:00:00Z", 72}, // a Thursday, as the SQL assumes
	} {
		at, err := time.Parse(time.RFC3339, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := HourOfWeek(at); got != tc.want {
			t.Errorf("HourOfWeek(%s) = %d, want %d", tc.at, got, tc.want)
		}
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestCoveredMinutes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		first, last string
		want        map[int]int64 // slots not listed must be 0, unless base
		base        int64         // value of every slot not in want
	}{
		{"one minute", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", map[int]int64{0: 1}, 0},
		{"across an hour", "2024-01-01T00:50:00Z", "2024-01-01T01:09:00Z", map[int]int64{0: 10, 1: 10}, 0},
		{"across the week end", "2024-01-07T23:58:00Z", "2024-01-08T00:01:00Z", map[int]int64{167: 2, 0: 2}, 0},
		{"one week and 11 minutes", "2024-01-01T00:00:00Z", "2024-01-08T00:10:00Z", map[int]int64{0: 71}, 60},
		{"three weeks exactly", "2024-01-01T00:00:00Z", "2024-01-21T23:59:00Z", nil, 180},
		{"three weeks from Wednesday noon", "2024-01-03T12:00:00Z", "2024-01-24T11:59:00Z", nil, 180},
		{"last before first", "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := coveredMinutes(mustTime(t, tc.first), mustTime(t, tc.last))
			for i := range HoursPerWeek {
				want, ok := tc.want[i]
				if !ok {
					want = tc.base
				}
				if got[i] != want {
					t.Errorf("slot %d: %d minutes, want %d", i, got[i], want)
				}
			}
		})
	}
}

func TestHourOfWeekAverages(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	h := NewHistory(conn, HistoryOptions{BatchSize: 2}) // several blocks
	mon := mustTime(t, "2024-01-01T00:00:00Z")          // a Monday
	m := func(offset time.Duration, searches float64) features.Minute {
		return features.Minute{Start: mon.Add(offset), Searches: searches, Bookings: 1}
	}
	// Region a spans Monday 00:00 to the next Monday 00:10: slot 0 covers
	// 60 + 11 = 71 minutes, every other slot 60.
	if err := h.InsertDemandMinutes(ctx, "a", []features.Minute{
		m(0, 10),
		m(30*time.Minute, 15),
		m(75*time.Minute, 30),                // slot 1
		m(7*24*time.Hour+10*time.Minute, 40), // slot 0 of the next week
	}); err != nil {
		t.Fatal(err)
	}
	// The same minute again adds up (SummingMergeTree): 15 + 5 = 20.
	if err := h.InsertDemandMinutes(ctx, "a", []features.Minute{m(30*time.Minute, 5)}); err != nil {
		t.Fatal(err)
	}
	// Region b: one minute on Sunday 23:59 UTC, given in another zone.
	sun := mustTime(t, "2024-01-08T00:59:00+01:00")
	if err := h.InsertDemandMinutes(ctx, "b", []features.Minute{{Start: sun, Searches: 6}}); err != nil {
		t.Fatal(err)
	}

	got, err := h.HourOfWeekAverages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("regions %v, want a and b", got)
	}
	wantA := map[int]float64{0: (10.0 + 20 + 40) / 71, 1: 30.0 / 60}
	for i := range HoursPerWeek {
		if w := wantA[i]; math.Abs(got["a"][i]-w) > 1e-12 {
			t.Errorf("a slot %d = %v, want %v", i, got["a"][i], w)
		}
		wantB := 0.0
		if i == 167 {
			wantB = 6
		}
		if got["b"][i] != wantB {
			t.Errorf("b slot %d = %v, want %v", i, got["b"][i], wantB)
		}
	}

	cache, err := NewHistoricalAverages(h, AveragesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cache.Lookup("a", mon); ok || cache.Loaded() {
		t.Fatal("Lookup answered before any refresh")
	}
	if err := cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	meanA := 100.0 / (7*24*60 + 11)
	for _, tc := range []struct {
		region    string
		at        time.Time
		perMinute float64
		index     float64
		ok        bool
	}{
		{"a", mon.Add(5 * time.Minute), 70.0 / 71, 70.0 / 71 / meanA, true},
		{"a", mon.Add(14*24*time.Hour + 90*time.Minute), 0.5, 0.5 / meanA, true}, // two weeks later, slot 1
		{"a", mon.Add(50 * time.Hour), 0, 0, true},                               // covered, no searches
		{"b", mustTime(t, "2030-06-02T23:00:00Z"), 6, 1, true},                   // a Sunday
		{"b", mon, 0, 0, false}, // slot not covered
		{"nowhere", mon, 0, 0, false},
	} {
		pm, ok := cache.Lookup(tc.region, tc.at)
		if ok != tc.ok || math.Abs(pm-tc.perMinute) > 1e-12 {
			t.Errorf("Lookup(%s, %s) = %v, %v; want %v, %v", tc.region, tc.at, pm, ok, tc.perMinute, tc.ok)
		}
		idx, ok := cache.Index(tc.region, tc.at)
		if ok != tc.ok || math.Abs(idx-tc.index) > 1e-9 {
			t.Errorf("Index(%s, %s) = %v, %v; want %v, %v", tc.region, tc.at, idx, ok, tc.index, tc.ok)
		}
	}
}

func TestHourOfWeekLookback(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	h := NewHistory(conn, HistoryOptions{Lookback: 2 * time.Hour})
	now := time.Now().UTC().Truncate(time.Minute)
	if err := h.InsertDemandMinutes(ctx, "r", []features.Minute{
		{Start: now.Add(-3 * time.Hour), Searches: 1000}, // outside the lookback
		{Start: now.Add(-time.Minute), Searches: 4},
		{Start: now, Searches: 6},
	}); err != nil {
		t.Fatal(err)
	}
	got, err := h.HourOfWeekProfiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := got["r"]
	if w == nil || math.Abs(w.Mean-5) > 1e-12 {
		t.Fatalf("profile %+v, want mean 5 over the last two minutes only", w)
	}
}

func TestDemandMinutes(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	h := NewHistory(conn, HistoryOptions{})
	t0 := mustTime(t, "2024-03-10T08:00:00Z")
	in := []features.Minute{
		{Start: t0, Searches: 10, Bookings: 3, Cancels: 1, Supply: 20, Weather: 0.5, Traffic: 0.25, Event: 1},
		{Start: t0.Add(time.Minute + 30*time.Second), Searches: 7.4, Bookings: 2, Supply: 18}, // truncated to 08:01, rounded
		{Start: t0.Add(5 * time.Minute), Searches: 1, Supply: 10},
	}
	if err := h.InsertDemandMinutes(ctx, "berlin", in); err != nil {
		t.Fatal(err)
	}
	// A second sample of 08:00 from another writer: counts add up, gauges average.
	if err := h.InsertDemandMinutes(ctx, "berlin", []features.Minute{{Start: t0, Searches: 2, Supply: 30, Weather: 1.5, Traffic: 0.75}}); err != nil {
		t.Fatal(err)
	}
	if err := h.InsertDemandMinutes(ctx, "paris", []features.Minute{{Start: t0, Searches: 99}}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     []features.Minute
	}{
		{"all", t0, t0.Add(time.Hour), []features.Minute{
			{Start: t0, Searches: 12, Bookings: 3, Cancels: 1, Supply: 25, Weather: 1, Traffic: 0.5, Event: 0.5},
			{Start: t0.Add(time.Minute), Searches: 7, Bookings: 2, Supply: 18},
			{Start: t0.Add(5 * time.Minute), Searches: 1, Supply: 10},
		}},
		{"to is exclusive", t0, t0.Add(5 * time.Minute), []features.Minute{
			{Start: t0, Searches: 12, Bookings: 3, Cancels: 1, Supply: 25, Weather: 1, Traffic: 0.5, Event: 0.5},
			{Start: t0.Add(time.Minute), Searches: 7, Bookings: 2, Supply: 18},
		}},
		{"from is inclusive", t0.Add(5 * time.Minute), t0.Add(time.Hour), []features.Minute{
			{Start: t0.Add(5 * time.Minute), Searches: 1, Supply: 10},
		}},
		{"empty", t0.Add(time.Hour), t0.Add(2 * time.Hour), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := h.DemandMinutes(ctx, "berlin", tc.from, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d minutes %+v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				if !got[i].Start.Equal(tc.want[i].Start) || got[i].Start.Location() != time.UTC {
					t.Errorf("minute %d starts %s, want %s UTC", i, got[i].Start, tc.want[i].Start)
				}
				g, w := got[i], tc.want[i]
				g.Start, w.Start = time.Time{}, time.Time{}
				if g != w {
					t.Errorf("minute %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestInsertDemandMinutesRejects(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	h := NewHistory(conn, HistoryOptions{})
	ok := features.Minute{Start: mustTime(t, "2024-03-10T08:00:00Z"), Searches: 1}
	for _, tc := range []struct {
		name   string
		region string
		m      features.Minute
	}{
		{"empty region", "", ok},
		{"negative", "r", features.Minute{Start: ok.Start, Searches: -1}},
		{"NaN", "r", features.Minute{Start: ok.Start, Bookings: math.NaN()}},
		{"infinite supply", "r", features.Minute{Start: ok.Start, Supply: math.Inf(1)}},
		{"zero time", "r", features.Minute{Searches: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.InsertDemandMinutes(ctx, tc.region, []features.Minute{ok, tc.m}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// Nothing of a rejected call was written.
	got, err := h.DemandMinutes(ctx, "r", ok.Start, ok.Start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("rejected calls wrote %v", got)
	}
}

// TestHistoricalAveragesSurviveOutage stops the server under a running
// cache: lookups keep answering from the last good data, failures are
// counted, and refreshes succeed again once the server is back.
func TestHistoricalAveragesSurviveOutage(t *testing.T) {
	ctx := ctxT(t)
	srv, err := devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	conn := openMigrated(t, srv.Addr, "surge")
	h := NewHistory(conn, HistoryOptions{})
	mon := mustTime(t, "2024-01-01T00:00:00Z")
	if err := h.InsertDemandMinutes(ctx, "a", []features.Minute{{Start: mon, Searches: 8}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cache, err := NewHistoricalAverages(h, AveragesOptions{
		Interval: 100 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cache.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}()

	waitFor(t, "first load", func() bool { return cache.Loaded() })
	if v, ok := cache.Lookup("a", mon); !ok || v != 8 {
		t.Fatalf("Lookup = %v, %v; want 8", v, ok)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	failures := cache.refreshes.WithLabelValues("error")
	waitFor(t, "three failed refreshes", func() bool { return testutil.ToFloat64(failures) >= 3 })
	if v, ok := cache.Lookup("a", mon); !ok || v != 8 {
		t.Fatalf("Lookup during the outage = %v, %v; want the last good 8", v, ok)
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.InsertDemandMinutes(ctx, "a", []features.Minute{{Start: mon, Searches: 4}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a refresh after the restart", func() bool {
		v, _ := cache.Lookup("a", mon)
		return v == 12
	})
	if n, err := testutil.GatherAndCount(reg); err != nil || n < 3 {
		t.Fatalf("registry holds %d metrics (%v), want the cache's 3+", n, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
