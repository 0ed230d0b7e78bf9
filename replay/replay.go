// Package replay feeds a recorded event history (CSV or JSON Lines) through
// the ingestion path, at the recorded pace, N times faster or as fast as
// possible. It owns the history file format (Reader, Writer), the pacing
// schedule and the backfill marking: events older than the accepted
// lateness are sent as backfill, so they skip the live features and land
// in ClickHouse only.
package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/surgeworks/surge/ingest"
)

// DefaultLateness is how old a live event the intake accepts by default
// (ingest.IntakeOptions.MaxLateness, 24 h); older events
// must be sent as backfill.
const DefaultLateness = 24 * time.Hour

// BackfillMode says which events a replay marks as backfill.
type BackfillMode int

const (
	// BackfillAuto marks events older than the lateness when they are sent
	// (and those recorded as backfill).
	BackfillAuto BackfillMode = iota
	// BackfillAlways marks every event.
	BackfillAlways
	// BackfillNever marks none: the intake rejects events older than its
	// lateness.
	BackfillNever
)

// ParseBackfill reads auto, true or false.
func ParseBackfill(s string) (BackfillMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auto", "":
		return BackfillAuto, nil
	case "true", "always", "yes":
		return BackfillAlways, nil
	case "false", "never", "no":
		return BackfillNever, nil
	}
	return 0, fmt.Errorf("backfill %q: want auto, true or false", s)
}

func (m BackfillMode) String() string {
	switch m {
	case BackfillAlways:
		return "true"
	case BackfillNever:
		return "false"
	}
	return "auto"
}

// IsBackfill decides whether an event recorded at ts and sent at now is
// backfill. In auto mode that is when it is older than lateness less a
// margin (a tenth of the lateness, at most a minute) that covers the time
// the event spends in batches and retries before the intake checks it.
func IsBackfill(mode BackfillMode, recorded bool, ts, now time.Time, lateness time.Duration) bool {
	switch mode {
	case BackfillAlways:
		return true
	case BackfillNever:
		return false
	}
	margin := min(time.Minute, lateness/10)
	return recorded || now.Sub(ts) > lateness-margin
}

// Pacer is the replay schedule: it says when, counted from the start of the
// replay, each event is due.
type Pacer struct {
	speed   float64
	first   time.Time
	started bool
	last    time.Duration
}

// NewPacer returns a schedule at speed times the recorded pace; speed ≤ 0
// or infinite means as fast as possible (every event due at once).
func NewPacer(speed float64) *Pacer { return &Pacer{speed: speed} }

// Due returns when the event recorded at ts is due: its event-time distance
// from the first event divided by the speed, never before the previous
// event's due time (events out of order go in file order, at once).
func (p *Pacer) Due(ts time.Time) time.Duration {
	if p.speed <= 0 || math.IsInf(p.speed, 1) || math.IsNaN(p.speed) {
		return 0
	}
	if !p.started {
		p.started, p.first = true, ts
		return 0
	}
	gap := float64(ts.Sub(p.first)) / p.speed
	due := time.Duration(min(gap, 1<<62)) // about 146 years: no overflow
	if due > p.last {
		p.last = due
	}
	return p.last
}

// Sender takes events to deliver; *intakeclient.Stream is one.
type Sender interface {
	Send(ctx context.Context, ev ingest.Event) error
}

// Options configures Run. A zero field takes the documented default.
type Options struct {
	// Speed replays at Speed times the recorded pace (event-time gaps
	// divided by Speed); default 1. Ignored when Max is set.
	Speed float64
	// Max sends as fast as the intake takes the events.
	Max bool
	// Backfill is the marking mode; default BackfillAuto.
	Backfill BackfillMode
	// Lateness is the intake's accepted lateness, for BackfillAuto; default
	// DefaultLateness (24 h).
	Lateness time.Duration
	// Strict stops at the first malformed line instead of counting it and
	// going on.
	Strict bool
	// KeepMalformed is how many malformed lines Summary keeps; default 10.
	// Each malformed line is also logged, the first 100 of them.
	KeepMalformed int
	// Now and Sleep are the clock; defaults time.Now and a timer that stops
	// when ctx ends.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives malformed lines; default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Speed == 0 {
		o.Speed = 1
	}
	if o.Lateness <= 0 {
		o.Lateness = DefaultLateness
	}
	if o.KeepMalformed <= 0 {
		o.KeepMalformed = 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Summary is what a replay read and handed on.
type Summary struct {
	Events    int64 // handed to the sender
	Backfill  int64 // of which marked backfill
	Malformed int64 // lines skipped
	// MalformedLines are the first malformed lines (Options.KeepMalformed).
	MalformedLines []*LineError
	// First and Last are the earliest and latest event times handed on.
	First, Last time.Time
}

// ErrMalformed is returned in strict mode for the first malformed line.
var ErrMalformed = errors.New("malformed line")

// Run reads events from r and hands them to s on the schedule of
// opts.Speed (or at once with opts.Max), marking backfill as opts.Backfill
// says. Fields the intake sets (receivedAt, userHash) are cleared. It stops
// at the end of the input, at the first malformed line in strict mode, when
// s fails or when ctx ends.
func Run(ctx context.Context, r *Reader, s Sender, opts Options) (Summary, error) {
	opts = opts.withDefaults()
	speed := opts.Speed
	if opts.Max {
		speed = 0
	}
	pacer := NewPacer(speed)
	var sum Summary
	start := opts.Now()
	for {
		ev, line, err := r.Next()
		if err == io.EOF {
			return sum, nil
		}
		if le, ok := errors.AsType[*LineError](err); ok {
			sum.Malformed++
			if len(sum.MalformedLines) < opts.KeepMalformed {
				sum.MalformedLines = append(sum.MalformedLines, le)
			}
			if opts.Strict {
				return sum, fmt.Errorf("%w: %w", ErrMalformed, le)
			}
			if sum.Malformed <= 100 {
				opts.Logger.Warn("replay: malformed line skipped", "line", le.Line, "err", le.Err)
			}
			continue
		}
		if err != nil {
			return sum, fmt.Errorf("read history after line %d: %w", line, err)
		}
		if wait := start.Add(pacer.Due(ev.Timestamp)).Sub(opts.Now()); wait > time.Millisecond {
			if err := opts.Sleep(ctx, wait); err != nil {
				return sum, err
			}
		}
		ev.ReceivedAt, ev.UserHash = time.Time{}, ""
		ev.Backfill = IsBackfill(opts.Backfill, ev.Backfill, ev.Timestamp, opts.Now(), opts.Lateness)
		if err := s.Send(ctx, ev); err != nil {
			return sum, fmt.Errorf("replay line %d: %w", line, err)
		}
		sum.Events++
		if ev.Backfill {
			sum.Backfill++
		}
		if sum.First.IsZero() || ev.Timestamp.Before(sum.First) {
			sum.First = ev.Timestamp
		}
		if ev.Timestamp.After(sum.Last) {
			sum.Last = ev.Timestamp
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
