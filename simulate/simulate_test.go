package simulate

import (
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/training"
)

var start = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC) // a Wednesday evening

// each runs a generator for secs seconds and passes every event to fn,
// checking that each second's events lie in it, in order.
func each(t testing.TB, opts Options, secs int, fn func(ingest.Event)) {
	t.Helper()
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var (
		evs  []ingest.Event
		at   time.Time
		prev time.Time
	)
	for range secs {
		evs, at = g.Next(evs[:0])
		for _, ev := range evs {
			if ev.Timestamp.Before(at) || !ev.Timestamp.Before(at.Add(time.Second)) {
				t.Fatalf("event %s at %v outside its second %v", ev.EventID, ev.Timestamp, at)
			}
			if ev.Timestamp.Before(prev) {
				t.Fatalf("event %s at %v before its predecessor at %v", ev.EventID, ev.Timestamp, prev)
			}
			prev = ev.Timestamp
			fn(ev)
		}
	}
}

// generate collects the events of each.
func generate(t testing.TB, opts Options, secs int) []ingest.Event {
	t.Helper()
	var all []ingest.Event
	each(t, opts, secs, func(ev ingest.Event) { all = append(all, ev) })
	return all
}

func TestRegions(t *testing.T) {
	rs := Regions(8)
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
		if r.BaseRate < 20 || r.BaseRate > 80 || r.UTCShift < -8 || r.UTCShift > 9 {
			t.Errorf("region %+v out of the documented ranges", r)
		}
	}
	if want := []string{"berlin", "paris", "london", "nyc", "sf", "region-6", "region-7", "region-8"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
	if !reflect.DeepEqual(Regions(8), rs) {
		t.Error("Regions is not deterministic")
	}
	if got := Regions(3); len(got) != 3 || got[2].ID != "london" {
		t.Errorf("Regions(3) = %v", got)
	}
}

func TestDeterministic(t *testing.T) {
	a := generate(t, Options{Start: start, Seed: 7, Rate: 300}, 90)
	b := generate(t, Options{Start: start, Seed: 7, Rate: 300}, 90)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed and start gave different events")
	}
	c := generate(t, Options{Start: start, Seed: 8, Rate: 300}, 90)
	if reflect.DeepEqual(a[:100], c[:100]) {
		t.Error("another seed gave the same events")
	}
	// Another start (another run) never reuses event ids.
	d := generate(t, Options{Start: start.Add(time.Hour), Seed: 7, Rate: 300}, 5)
	if a[0].EventID == d[0].EventID || strings.Split(a[0].EventID, "-")[0] == strings.Split(d[0].EventID, "-")[0] {
		t.Errorf("runs at different starts share id prefixes: %s, %s", a[0].EventID, d[0].EventID)
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		secs int
		tol  float64
	}{
		{"200/s over 20 minutes", Options{Start: start, Seed: 1, Rate: 200}, 1200, 0.02},
		{"1,000/s, 12 regions, over 10 minutes", Options{Start: start, Seed: 2, Rate: 1000, Regions: Regions(12)}, 600, 0.02},
		{"50,000/s over 20 s", Options{Start: start, Seed: 3, Rate: 50_000}, 20, 0.03},
		{"bursts often", Options{Start: start, Seed: 4, Rate: 500, BurstEvery: time.Minute}, 900, 0.02},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			each(t, tt.opts, tt.secs, func(ingest.Event) { n++ })
			want := tt.opts.Rate * float64(tt.secs)
			if math.Abs(float64(n)-want) > tt.tol*want {
				t.Errorf("%d events in %d s, want %.0f ± %.0f %%", n, tt.secs, want, 100*tt.tol)
			}
		})
	}
	t.Run("the history's own rate", func(t *testing.T) {
		g, err := New(Options{Start: start, Seed: 5})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		expected := 0.0
		var evs []ingest.Event
		for range 1800 {
			expected += g.ExpectedRate() // of the second before; the rate changes slowly
			evs, _ = g.Next(evs[:0])
			n += len(evs)
		}
		if math.Abs(float64(n)-expected) > 0.05*expected || expected < 1800*2 || expected > 1800*20 {
			t.Errorf("%d events in 30 min, expected %.0f (natural scale: 2-20/s)", n, expected)
		}
	})
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// TestEventsValid checks every generated event against the intake's own
// validation, and the traffic's shape: all types, users from the pool,
// bookings following searches, gauges on schedule.
func TestEventsValid(t *testing.T) {
	regions := Regions(7)
	opts := Options{Start: start, Seed: 11, Rate: 400, Regions: regions, Experiment: "exp-cap"}
	evs := generate(t, opts, 600)

	types := map[string]int{}
	ids := map[string]bool{}
	known := map[string]bool{}
	for _, r := range regions {
		known[r.ID] = true
	}
	supplies := map[string]int{}
	signals := map[string]int{}
	perUser := map[string]int{}
	lastSearch := map[string]ingest.Event{} // by user
	followed := 0
	for _, ev := range evs {
		if errs := ingest.Validate(&ev, ev.Timestamp, 30*time.Second, 24*time.Hour); len(errs) > 0 {
			t.Fatalf("event %+v invalid: %v", ev, errs)
		}
		if !idPattern.MatchString(ev.EventID) || ids[ev.EventID] {
			t.Fatalf("event id %q malformed or repeated", ev.EventID)
		}
		ids[ev.EventID] = true
		if !known[ev.RegionID] {
			t.Fatalf("unknown region %q", ev.RegionID)
		}
		types[ev.Type]++
		switch ev.Type {
		case ingest.TypeSearch, ingest.TypeBooking, ingest.TypeCancel:
			if !strings.HasPrefix(ev.UserID, "user-") || ev.ProductType == "" {
				t.Fatalf("user event without user or product: %+v", ev)
			}
			perUser[ev.UserID]++
			if ev.Type != ingest.TypeCancel && (ev.Experiment == nil || ev.Experiment.ID != "exp-cap") {
				t.Fatalf("no experiment on %+v", ev)
			}
		default:
			if ev.UserID != "" {
				t.Fatalf("gauge with a user: %+v", ev)
			}
		}
		switch ev.Type {
		case ingest.TypeSearch:
			lastSearch[ev.UserID+ev.RegionID+ev.ProductType] = ev
		case ingest.TypeBooking:
			if *ev.Price <= 0 {
				t.Fatalf("booking price %v", *ev.Price)
			}
			if s, ok := lastSearch[ev.UserID+ev.RegionID+ev.ProductType]; ok && ev.Timestamp.Sub(s.Timestamp) <= bookingDelayMax {
				followed++
			}
		case ingest.TypeSupplyUpdate:
			supplies[ev.RegionID]++
		case ingest.TypeExternalSignal:
			signals[ev.RegionID+"/"+ev.Signal]++
		}
	}
	for _, typ := range []string{ingest.TypeSearch, ingest.TypeBooking, ingest.TypeCancel, ingest.TypeSupplyUpdate, ingest.TypeExternalSignal} {
		if types[typ] == 0 {
			t.Errorf("no %s in %d events: %v", typ, len(evs), types)
		}
	}
	if share := float64(types[ingest.TypeBooking]) / float64(types[ingest.TypeSearch]); share < 0.1 || share > 0.6 {
		t.Errorf("bookings per search %.2f", share)
	}
	// Bookings found their search (those from before the warm-up excepted).
	if followed < types[ingest.TypeBooking]*9/10 {
		t.Errorf("%d of %d bookings follow a search by the same user", followed, types[ingest.TypeBooking])
	}
	for _, r := range regions {
		if supplies[r.ID] != 120 { // 600 s every 5 s
			t.Errorf("%s: %d supply updates, want 120", r.ID, supplies[r.ID])
		}
		for _, s := range []string{ingest.SignalWeather, ingest.SignalTraffic, ingest.SignalEvent} {
			if signals[r.ID+"/"+s] != 10 {
				t.Errorf("%s: %d %s signals, want 10", r.ID, signals[r.ID+"/"+s], s)
			}
		}
	}
	// The pool keeps each user far below the intake's default per-user
	// token bucket (20/s, burst 100): not even a bucket five times smaller
	// (4/s, burst 20) would hold back one event.
	type bucket struct {
		tokens float64
		at     time.Time
	}
	buckets := map[string]*bucket{}
	for _, ev := range evs {
		if ev.UserID == "" {
			continue
		}
		b := buckets[ev.UserID]
		if b == nil {
			b = &bucket{tokens: 20, at: ev.Timestamp}
			buckets[ev.UserID] = b
		}
		b.tokens = min(20, b.tokens+4*ev.Timestamp.Sub(b.at).Seconds())
		b.at = ev.Timestamp
		if b.tokens < 1 {
			t.Fatalf("user %s over a bucket of 4/s, burst 20, at %v (%d events in 10 min)", ev.UserID, ev.Timestamp, perUser[ev.UserID])
		}
		b.tokens--
	}
}

func TestBurst(t *testing.T) {
	g, err := New(Options{Start: start, Seed: 3, BurstEvery: time.Nanosecond}) // one starts at once
	if err != nil {
		t.Fatal(err)
	}
	r := &region{}
	peak, secs := 0.0, 0
	for f := g.burst(r); r.burstLeft > 0; f = g.burst(r) {
		peak = max(peak, f)
		secs++
		if f < 1 {
			t.Fatalf("burst factor %v below 1", f)
		}
	}
	secs++
	if secs < 60 || secs > 240 || peak < 1.45 || peak > 3 || math.Abs(peak-r.burstPeak) > 0.01 {
		t.Errorf("burst of %d s peaking at %.2f (drawn %.2f), want 60-240 s at 1.5-3", secs, peak, r.burstPeak)
	}
	none, _ := New(Options{Start: start, Seed: 3, BurstEvery: -1})
	for range 1000 {
		if f := none.burst(r); f != 1 && r.burstLeft == 0 {
			t.Fatalf("burst with bursts off: %v", f)
		}
	}
}

func TestSupplyFollowsHistory(t *testing.T) {
	// At the history's own scale the supply updates carry the generated
	// supply of their minute (interpolated towards the next).
	opts := Options{Start: start, Seed: 21, Regions: Regions(2), BurstEvery: -1}
	evs := generate(t, opts, 300)
	hist := training.GenerateHistory(training.HistoryOptions{
		Regions: opts.Regions, Days: 2, Seed: opts.Seed, Start: start.Add(-warmUp).Truncate(time.Minute).Add(-24 * time.Hour),
	})
	checked := 0
	for _, ev := range evs {
		if ev.Type != ingest.TypeSupplyUpdate {
			continue
		}
		for _, h := range hist {
			if h.Region.ID != ev.RegionID {
				continue
			}
			i := int(ev.Timestamp.Sub(h.Minutes[0].Start) / time.Minute)
			lo, hi := min(h.Minutes[i].Supply, h.Minutes[i+1].Supply), max(h.Minutes[i].Supply, h.Minutes[i+1].Supply)
			if *ev.AvailableSupply < lo-0.5 || *ev.AvailableSupply > hi+0.5 {
				t.Errorf("%s supply %v at %v, history %v → %v", ev.RegionID, *ev.AvailableSupply, ev.Timestamp, h.Minutes[i].Supply, h.Minutes[i+1].Supply)
			}
			checked++
		}
	}
	if checked != 2*60 {
		t.Errorf("%d supply updates checked, want 120", checked)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{Rate: 1},  // below 5 regions' supply updates and signals (1.25/s)
		{Rate: -5}, // negative
		{Rate: math.Inf(1)},
		{Regions: []training.RegionSpec{{ID: "a", BaseRate: 10}, {ID: "a", BaseRate: 10}}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// BenchmarkGenerator measures generated events per second at 50,000
// events/s of traffic over the five demo regions.
func BenchmarkGenerator(b *testing.B) {
	g, err := New(Options{Start: start, Seed: 1, Rate: 50_000})
	if err != nil {
		b.Fatal(err)
	}
	var evs []ingest.Event
	n := 0
	for b.Loop() {
		evs, _ = g.Next(evs[:0])
		n += len(evs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
}
