package simulate

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/replay"
)

// aggregate counts events per region and minute the way the analytics
// views do: searches, bookings, cancels; latest supply and signals.
func aggregate(evs []ingest.Event) map[string]map[time.Time]features.Minute {
	out := map[string]map[time.Time]features.Minute{}
	for _, ev := range evs {
		if out[ev.RegionID] == nil {
			out[ev.RegionID] = map[time.Time]features.Minute{}
		}
		start := ev.Timestamp.Truncate(time.Minute)
		m := out[ev.RegionID][start]
		m.Start = start
		switch ev.Type {
		case ingest.TypeSearch:
			m.Searches++
		case ingest.TypeBooking:
			m.Bookings++
		case ingest.TypeCancel:
			m.Cancels++
		case ingest.TypeSupplyUpdate:
			m.Supply = *ev.AvailableSupply
		case ingest.TypeExternalSignal:
			switch ev.Signal {
			case ingest.SignalWeather:
				m.Weather = *ev.Value
			case ingest.SignalTraffic:
				m.Traffic = *ev.Value
			case ingest.SignalEvent:
				m.Event = *ev.Value
			}
		}
		out[ev.RegionID][start] = m
	}
	return out
}

func TestHistory(t *testing.T) {
	end := time.Date(2026, 11, 25, 21, 37, 0, 0, time.UTC)
	opts := HistoryOptions{Regions: Regions(2), Days: 1, End: end, Seed: 5}
	h, err := NewHistory(opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 24, 21, 0, 0, 0, time.UTC); !h.Start().Equal(want) {
		t.Errorf("starts %v, want %v (a day before the end's hour)", h.Start(), want)
	}
	var evs []ingest.Event
	if err := h.Write(t.Context(), func(ev ingest.Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	if int64(len(evs)) != h.Events() {
		t.Errorf("wrote %d events, Events() said %d", len(evs), h.Events())
	}
	ids := map[string]bool{}
	for i, ev := range evs {
		if i > 0 && ev.Timestamp.Before(evs[i-1].Timestamp) {
			t.Fatalf("event %d out of order", i)
		}
		if ev.Timestamp.Before(h.Start()) || !ev.Timestamp.Before(end.Truncate(time.Hour)) {
			t.Fatalf("event at %v outside the history", ev.Timestamp)
		}
		ev.Backfill = true // as a replay sends it
		if errs := ingest.Validate(&ev, end, 30*time.Second, time.Hour); len(errs) > 0 {
			t.Fatalf("event %+v invalid: %v", ev, errs)
		}
		if ids[ev.EventID] {
			t.Fatalf("id %s twice", ev.EventID)
		}
		ids[ev.EventID] = true
	}

	// Counted per minute, the events are the generated history again.
	agg := aggregate(evs)
	for _, rh := range h.Minutes() {
		if len(rh.Minutes) != 24*60 {
			t.Fatalf("%s: %d minutes", rh.Region.ID, len(rh.Minutes))
		}
		for _, m := range rh.Minutes {
			if got := agg[rh.Region.ID][m.Start]; got != m {
				t.Fatalf("%s at %v: events give %+v, history %+v", rh.Region.ID, m.Start, got, m)
			}
		}
	}

	// Reproducible, ids included; another seed gives another history.
	again, _ := NewHistory(opts)
	var first []ingest.Event
	stop := errors.New("enough")
	again.Write(t.Context(), func(ev ingest.Event) error {
		if first = append(first, ev); len(first) == 1000 {
			return stop
		}
		return nil
	})
	if !reflect.DeepEqual(first, evs[:1000]) {
		t.Error("the same options gave another history")
	}
	opts.Seed = 6
	other, _ := NewHistory(opts)
	if reflect.DeepEqual(other.Minutes()[0].Minutes[:60], h.Minutes()[0].Minutes[:60]) {
		t.Error("another seed gave the same history")
	}
}

// TestHistoryThroughFile writes a history as CSV and JSON Lines and reads
// it back as a replay does: nothing lost, nothing changed.
func TestHistoryThroughFile(t *testing.T) {
	h, err := NewHistory(HistoryOptions{Regions: Regions(1), Days: 1, End: start, Seed: 9, Experiment: "exp-1"})
	if err != nil {
		t.Fatal(err)
	}
	var want []ingest.Event
	h.Write(t.Context(), func(ev ingest.Event) error { want = append(want, ev); return nil })
	for _, f := range []replay.Format{replay.CSV, replay.JSONL} {
		t.Run(f.String(), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := replay.NewWriter(&buf, f)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Write(t.Context(), w.Write); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			rd, err := replay.NewReader(&buf, f)
			if err != nil {
				t.Fatal(err)
			}
			var got []ingest.Event
			for {
				ev, line, err := rd.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("line %d: %v", line, err)
				}
				got = append(got, ev)
			}
			if len(got) != len(want) {
				t.Fatalf("read %d events, wrote %d", len(got), len(want))
			}
			for i := range got {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("event %d read back as %+v, written %+v", i, got[i], want[i])
				}
			}
		})
	}
}

func BenchmarkHistory(b *testing.B) {
	h, err := NewHistory(HistoryOptions{Days: 1, End: start, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		h.Write(b.Context(), func(ingest.Event) error { n++; return nil })
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
