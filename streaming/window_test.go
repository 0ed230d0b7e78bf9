package streaming

import (
	"math"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
)

// t0 is the start of minute 0 of the hand-made sequences.
var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// at is minute m, second s after t0.
func at(m int, s float64) time.Time {
	return t0.Add(time.Duration(m)*time.Minute + time.Duration(s*float64(time.Second)))
}

type step struct {
	stream int // 0 user-events, 1 supply-events, 2 external-events
	kind   kind
	at     time.Time
	value  float64
	want   verdict
}

func search(m int, s float64) step  { return step{kind: kindSearch, at: at(m, s)} }
func booking(m int, s float64) step { return step{kind: kindBooking, at: at(m, s)} }
func cancel(m int, s float64) step  { return step{kind: kindCancel, at: at(m, s)} }
func supply(m int, s float64, v float64) step {
	return step{stream: 1, kind: kindSupply, at: at(m, s), value: v}
}
func (s step) late() step { s.want = late; return s }

func run(t *testing.T, steps []step) *window {
	t.Helper()
	w := newWindow(3)
	for i, s := range steps {
		e := event{region: "r", kind: s.kind, at: s.at.UnixNano(), received: s.at.UnixMilli(), value: s.value}
		if got := w.apply(s.stream, &e, int64(30*time.Second)); got != s.want {
			t.Fatalf("step %d (%v at %v): verdict %d, want %d", i, s.kind, s.at.Sub(t0), got, s.want)
		}
	}
	return w
}

func TestWindow(t *testing.T) {
	// minutes builds the expected closed minutes from per-minute counts.
	type m = features.Minute
	tests := []struct {
		name    string
		steps   []step
		want    []m // the closed minutes FromMinutes must see
		current map[string]float64
		absent  []string
	}{
		{
			name: "counts per minute, gap minute is zero, minute under way apart",
			steps: []step{
				search(0, 1), search(0, 59), booking(0, 30), cancel(0, 40),
				search(2, 0), supply(2, 10, 7),
				search(3, 5), search(3, 6), // minute under way
			},
			want: []m{
				{Start: at(0, 0), Searches: 2, Bookings: 1, Cancels: 1},
				{Start: at(1, 0)},
				{Start: at(2, 0), Searches: 1, Supply: 7},
			},
			current: map[string]float64{features.SearchesCurrent: 2, features.SupplyCurrent: 7},
		},
		{
			name: "out of order within grace lands in its (closed) minute",
			steps: []step{
				search(1, 20), search(2, 10),
				search(1, 45),        // 25 s behind: in minute 1
				search(1, 39).late(), // 31 s behind the newest (2:10): late
				search(2, 15),
			},
			want: []m{
				{Start: at(1, 0), Searches: 2},
			},
			current: map[string]float64{features.SearchesCurrent: 2},
			absent:  []string{features.Supply, features.SupplyDemand, features.SupplyCurrent},
		},
		{
			name: "the watermark is per topic: an older supply report is not late",
			steps: []step{
				search(5, 0), search(6, 0),
				supply(2, 0, 9),         // first supply-events of the region
				supply(1, 20, 3).late(), // 40 s behind the supply watermark
				supply(4, 30, 4),        // newest supply before minute 5
				supply(4, 10, 100),      // within grace but older than 4:30 in the same minute: not the latest
				step{stream: 2, kind: kindWeather, at: at(3, 0), value: 0.5},
			},
			want: []m{
				{Start: at(2, 0), Supply: 9},
				{Start: at(3, 0), Supply: 9, Weather: 0.5},
				{Start: at(4, 0), Supply: 4, Weather: 0.5},
				{Start: at(5, 0), Searches: 1, Supply: 4, Weather: 0.5},
			},
			current: map[string]float64{features.SearchesCurrent: 1, features.SupplyCurrent: 4},
		},
		{
			name: "the window is the last 15 closed minutes; levels outlive the ring",
			steps: func() []step {
				s := []step{supply(0, 0, 42)}
				for i := 1; i <= 60; i++ {
					for range i % 7 {
						s = append(s, search(i, 1))
					}
				}
				return append(s, search(3, 0).late()) // older than the ring
			}(),
			want: func() []m {
				var w []m
				for i := 45; i < 60; i++ {
					w = append(w, m{Start: at(i, 0), Searches: float64(i % 7), Supply: 42})
				}
				return w
			}(),
			current: map[string]float64{features.SearchesCurrent: 60 % 7, features.SupplyCurrent: 42},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := run(t, tt.steps)
			got, _ := w.features(1.25, nil)
			want := features.FromMinutes(tt.want, 1.25)
			for _, name := range tt.absent {
				if _, ok := got[name]; ok {
					t.Errorf("%s present (%v), want absent", name, got[name])
				}
				delete(want, name)
			}
			for k, v := range want {
				if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-12 {
					t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
				}
			}
			for k, v := range tt.current {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			if wantEnd := tt.want[len(tt.want)-1].Start.Add(time.Minute); !w.windowEnd().Equal(wantEnd) ||
				got[features.WindowEndField] != float64(wantEnd.UnixMilli()) {
				t.Errorf("window end %v (%v), want %v", w.windowEnd(), got[features.WindowEndField], wantEnd)
			}
		})
	}
}

// TestWindowFigures checks FromMinutes' figures on a stream the way an
// operator would read them: 16 minutes of 1..16 searches per minute.
func TestWindowFigures(t *testing.T) {
	var steps []step
	for i := 0; i <= 16; i++ {
		for range i + 1 {
			steps = append(steps, search(i, 30))
		}
		steps = append(steps, supply(i, 0, 28))
	}
	got, _ := run(t, steps).features(1, nil)
	// Closed minutes 1..15 hold 2..16 searches.
	want := map[string]float64{
		features.Searches1m:      16,
		features.Searches5m:      14,        // 12..16
		features.Searches15m:     9,         // 2..16
		features.DemandTrend:     14 / 6.5,  // against 2..11
		features.SupplyDemand:    28.0 / 14, // supply over searches per minute (5 min)
		features.Supply:          28,
		features.SearchesCurrent: 17,
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-12 {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestEventOf(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		e     ingest.Event
		kind  kind
		value float64
	}{
		{ingest.Event{Type: ingest.TypeSearch}, kindSearch, 0},
		{ingest.Event{Type: ingest.TypeBooking, Price: f(12)}, kindBooking, 0},
		{ingest.Event{Type: ingest.TypeCancel}, kindCancel, 0},
		{ingest.Event{Type: ingest.TypeSupplyUpdate, AvailableSupply: f(31)}, kindSupply, 31},
		{ingest.Event{Type: ingest.TypeSupplyUpdate}, kindIgnored, 0},
		{ingest.Event{Type: ingest.TypeExternalSignal, Signal: ingest.SignalTraffic, Value: f(0.7)}, kindTraffic, 0.7},
		{ingest.Event{Type: ingest.TypeExternalSignal, Signal: ingest.SignalEvent, Value: f(1)}, kindLocalEvent, 1},
		{ingest.Event{Type: ingest.TypeExternalSignal, Signal: "pollen", Value: f(1)}, kindIgnored, 1},
		{ingest.Event{Type: "page_view"}, kindIgnored, 0},
	}
	for _, tt := range tests {
		got := eventOf(&tt.e)
		if got.kind != tt.kind || got.value != tt.value {
			t.Errorf("%s/%s: kind %d value %v, want %d %v", tt.e.Type, tt.e.Signal, got.kind, got.value, tt.kind, tt.value)
		}
	}
}
