package replay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/ingest"
)

func TestPacer(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		name  string
		speed float64
		ts    []time.Time
		want  []time.Duration
	}{
		{"recorded pace", 1, []time.Time{at(0), at(1), at(1), at(61)},
			[]time.Duration{0, time.Second, time.Second, 61 * time.Second}},
		{"ten times faster", 10, []time.Time{at(100), at(101), at(160)},
			[]time.Duration{0, 100 * time.Millisecond, 6 * time.Second}},
		{"slower", 0.5, []time.Time{at(0), at(3)}, []time.Duration{0, 6 * time.Second}},
		{"an hour of history at 3600×", 3600, []time.Time{at(0), at(1800), at(3600)},
			[]time.Duration{0, 500 * time.Millisecond, time.Second}},
		{"out of order: never before the previous", 2, []time.Time{at(10), at(20), at(12), at(30), at(5)},
			[]time.Duration{0, 5 * time.Second, 5 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"first event earlier than later ones' origin", 1, []time.Time{at(10), at(0), at(11)},
			[]time.Duration{0, 0, time.Second}},
		{"max: speed 0", 0, []time.Time{at(0), at(100)}, []time.Duration{0, 0}},
		{"max: infinite speed", math.Inf(1), []time.Time{at(0), at(100)}, []time.Duration{0, 0}},
		{"years at a slow speed do not overflow", 1e-3, []time.Time{at(0), t0.AddDate(200, 0, 0)},
			[]time.Duration{0, 1 << 62}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPacer(tt.speed)
			for i, ts := range tt.ts {
				if got := p.Due(ts); got != tt.want[i] {
					t.Errorf("event %d due at %v, want %v", i, got, tt.want[i])
				}
			}
		})
	}
}

func TestIsBackfill(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		mode     BackfillMode
		recorded bool
		age      time.Duration
		lateness time.Duration
		want     bool
	}{
		{BackfillAuto, false, 10 * time.Minute, time.Hour, false},
		{BackfillAuto, false, 58 * time.Minute, time.Hour, false},
		{BackfillAuto, false, 59*time.Minute + time.Second, time.Hour, true}, // within the one-minute margin
		{BackfillAuto, false, 3 * time.Hour, time.Hour, true},
		{BackfillAuto, false, 9 * time.Second, 100 * time.Second, false},
		{BackfillAuto, false, 91 * time.Second, 100 * time.Second, true}, // margin a tenth of the lateness
		{BackfillAuto, false, -time.Minute, time.Hour, false},            // from the future
		{BackfillAuto, true, time.Minute, time.Hour, true},               // recorded as backfill
		{BackfillAlways, false, 0, time.Hour, true},
		{BackfillNever, true, 48 * time.Hour, time.Hour, false},
	}
	for _, tt := range tests {
		if got := IsBackfill(tt.mode, tt.recorded, now.Add(-tt.age), now, tt.lateness); got != tt.want {
			t.Errorf("IsBackfill(%v, recorded %v, age %v, lateness %v) = %v, want %v", tt.mode, tt.recorded, tt.age, tt.lateness, got, tt.want)
		}
	}
	for in, want := range map[string]BackfillMode{"auto": BackfillAuto, "": BackfillAuto, "true": BackfillAlways, "FALSE": BackfillNever} {
		if got, err := ParseBackfill(in); err != nil || got != want {
			t.Errorf("ParseBackfill(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseBackfill("sometimes"); err == nil {
		t.Error("ParseBackfill(sometimes) accepted")
	}
}

// recorder is a Sender that keeps the events; failAt > 0 fails that send.
type recorder struct {
	events []ingest.Event
	at     []time.Time // fake clock at each send
	clock  *fakeClock
	failAt int
}

func (r *recorder) Send(_ context.Context, ev ingest.Event) error {
	if r.failAt > 0 && len(r.events)+1 == r.failAt {
		return errors.New("intake gone")
	}
	r.events = append(r.events, ev)
	if r.clock != nil {
		r.at = append(r.at, r.clock.now)
	}
	return nil
}

// fakeClock advances only when slept on.
type fakeClock struct {
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	return nil
}

// history builds a CSV of searches at the given offsets (seconds) from
// base; "bad" makes a malformed line.
func history(base time.Time, offsets ...any) string {
	var b strings.Builder
	b.WriteString("timestamp,regionId,type\n")
	for _, o := range offsets {
		switch o := o.(type) {
		case string:
			b.WriteString(o + "\n")
		case int:
			fmt.Fprintf(&b, "%s,berlin,search\n", base.Add(time.Duration(o)*time.Second).Format(time.RFC3339))
		}
	}
	return b.String()
}

func TestRunBackfillAndMax(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	// Two events three hours old, one 30 minutes old, one in a minute.
	in := history(now.Add(-3*time.Hour), 0, 1, 150*60, 181*60)
	for _, tt := range []struct {
		mode BackfillMode
		want []bool
	}{
		{BackfillAuto, []bool{true, true, false, false}},
		{BackfillAlways, []bool{true, true, true, true}},
		{BackfillNever, []bool{false, false, false, false}},
	} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			rd, err := NewReader(strings.NewReader(in), CSV)
			if err != nil {
				t.Fatal(err)
			}
			clock := &fakeClock{now: now}
			rec := &recorder{}
			sum, err := Run(t.Context(), rd, rec, Options{Max: true, Backfill: tt.mode, Lateness: time.Hour, Now: clock.Now, Sleep: clock.Sleep})
			if err != nil {
				t.Fatal(err)
			}
			if len(clock.waits) != 0 {
				t.Errorf("max replay waited %v", clock.waits)
			}
			var got []bool
			marked := 0
			for _, ev := range rec.events {
				got = append(got, ev.Backfill)
				if ev.Backfill {
					marked++
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("backfill %v, want %v", got, tt.want)
			}
			if sum.Events != 4 || sum.Backfill != int64(marked) || !sum.First.Equal(now.Add(-3*time.Hour)) || !sum.Last.Equal(now.Add(time.Minute)) {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}

func TestRunPacesAndClears(t *testing.T) {
	base := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)
	in := `{"type":"search","regionId":"berlin","timestamp":"2026-11-25T11:00:00Z","userHash":"h","receivedAt":"2026-11-25T11:00:01Z"}
{"type":"search","regionId":"berlin","timestamp":"2026-11-25T11:00:10Z"}
{"type":"search","regionId":"berlin","timestamp":"2026-11-25T11:00:10Z"}
{"type":"search","regionId":"berlin","timestamp":"2026-11-25T11:00:40Z"}
`
	rd, err := NewReader(strings.NewReader(in), JSONL)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: base.Add(time.Hour)}
	rec := &recorder{clock: clock}
	if _, err := Run(t.Context(), rd, rec, Options{Speed: 4, Lateness: time.Hour, Now: clock.Now, Sleep: clock.Sleep}); err != nil {
		t.Fatal(err)
	}
	// At 4×: 0, 2.5 s, 2.5 s, 10 s after the start.
	want := []time.Duration{0, 2500 * time.Millisecond, 2500 * time.Millisecond, 10 * time.Second}
	for i, at := range rec.at {
		if got := at.Sub(base.Add(time.Hour)); got != want[i] {
			t.Errorf("event %d sent at +%v, want +%v", i, got, want[i])
		}
	}
	if len(clock.waits) != 2 {
		t.Errorf("waits %v, want two (no wait for an event already due)", clock.waits)
	}
	first := rec.events[0]
	if first.UserHash != "" || !first.ReceivedAt.IsZero() {
		t.Errorf("intake fields not cleared: %+v", first)
	}
	// Sent one hour after the recording, at 4×: ages 1 h to 1 h − 30 s;
	// with a lateness of 1 h (margin 1 min) every event is backfill.
	for i, ev := range rec.events {
		if !ev.Backfill {
			t.Errorf("event %d not backfill", i)
		}
	}
}

func TestRunMalformed(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	in := history(now, 0, "garbage,berlin,search", 1, "x,y", 2, "2026-11-25T12:00:03Z,,search")
	t.Run("counted and skipped", func(t *testing.T) {
		rd, _ := NewReader(strings.NewReader(in), CSV)
		rec := &recorder{}
		sum, err := Run(t.Context(), rd, rec, Options{Max: true, KeepMalformed: 2})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Events != 3 || sum.Malformed != 3 || len(sum.MalformedLines) != 2 ||
			sum.MalformedLines[0].Line != 3 || sum.MalformedLines[1].Line != 5 {
			t.Errorf("summary %+v (lines %v)", sum, sum.MalformedLines)
		}
	})
	t.Run("strict stops", func(t *testing.T) {
		rd, _ := NewReader(strings.NewReader(in), CSV)
		rec := &recorder{}
		sum, err := Run(t.Context(), rd, rec, Options{Max: true, Strict: true})
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "line 3") || sum.Events != 1 {
			t.Errorf("err %v after %d events, want a malformed-line error at line 3 after 1", err, sum.Events)
		}
	})
	t.Run("sender failure stops", func(t *testing.T) {
		rd, _ := NewReader(strings.NewReader(in), CSV)
		rec := &recorder{failAt: 2}
		_, err := Run(t.Context(), rd, rec, Options{Max: true})
		if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "intake gone") {
			t.Errorf("err %v, want the sender's error at line 4", err)
		}
	})
}
