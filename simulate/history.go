package simulate

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/training"
)

// HistoryOptions configures NewHistory. A zero field takes the documented
// default.
type HistoryOptions struct {
	// Regions default to Regions(5), the demo regions.
	Regions []training.RegionSpec
	// Days of history; default 14.
	Days int
	// End is where the history stops, truncated to the hour; default now. It
	// starts Days earlier — as the bootstrap model's history does, so with
	// Seed 0 and 14 days the file holds the bootstrap history's events.
	End time.Time
	// Seed makes the history reproducible, event ids included.
	Seed uint64
	// Users is the size of the user pool; default a twentieth of the
	// history's user events (at least 1,000), so that even a fast replay
	// spreads over many users.
	Users int
	// IDPrefix starts every eventId; default derived from Seed and the
	// start, so writing the same history twice gives the same ids.
	IDPrefix string
	// Experiment, when set, is put on searches and bookings, with variant
	// control or treatment by user.
	Experiment string
}

// History is a generated recorded history: every minute of
// training.GenerateHistory turned into events. Per region and minute it
// holds exactly the minute's searches, bookings (each one of the minute's
// searches, by the same user, a little later) and cancellations (each of
// one of its bookings), one supply update carrying the minute's supply, and
// one external signal each for weather, traffic and local event, at random
// times within the minute. Counted per minute, the events give the
// generated history back.
type History struct {
	opts    HistoryOptions
	start   time.Time
	hist    []training.RegionHistory
	regions []*region
	events  int64
}

// NewHistory generates the per-minute history; Write turns it into events.
// It fails when a region id repeats.
func NewHistory(opts HistoryOptions) (*History, error) {
	if len(opts.Regions) == 0 {
		opts.Regions = Regions(5)
	}
	if opts.Days <= 0 {
		opts.Days = 14
	}
	if opts.End.IsZero() {
		opts.End = time.Now()
	}
	end := opts.End.UTC().Truncate(time.Hour)
	start := end.AddDate(0, 0, -opts.Days)
	if opts.IDPrefix == "" {
		opts.IDPrefix = "hist" + strconv.FormatUint(hash64(strconv.FormatUint(opts.Seed, 10), start.Format(time.RFC3339))%(1<<40), 36)
	}
	h := &History{opts: opts, start: start}
	h.hist = training.GenerateHistory(training.HistoryOptions{Regions: opts.Regions, Days: opts.Days, Start: start, Seed: opts.Seed})
	regions, err := newRegions(opts.Regions)
	if err != nil {
		return nil, err
	}
	h.regions = regions
	userEvents := 0.0
	for _, rh := range h.hist {
		for _, m := range rh.Minutes {
			userEvents += m.Searches + m.Bookings + m.Cancels
			h.events += int64(m.Searches+m.Bookings+m.Cancels) + 4
		}
	}
	if h.opts.Users <= 0 {
		h.opts.Users = max(1000, int(userEvents/20))
	}
	return h, nil
}

// Options returns the options in effect, defaults filled in.
func (h *History) Options() HistoryOptions { return h.opts }

// Start is the time of the first minute.
func (h *History) Start() time.Time { return h.start }

// Minutes returns the generated per-minute history the events come from.
func (h *History) Minutes() []training.RegionHistory { return h.hist }

// Events is how many events Write emits.
func (h *History) Events() int64 { return h.events }

// Write passes every event to emit in timestamp order, a minute at a time.
// It stops at emit's first error or when ctx ends.
func (h *History) Write(ctx context.Context, emit func(ingest.Event) error) error {
	rng := rand.New(rand.NewPCG(h.opts.Seed, 0x415_70f1))
	g := &Generator{opts: Options{IDPrefix: h.opts.IDPrefix, Experiment: h.opts.Experiment}}
	var (
		buf      []ingest.Event
		users    []int // user of each event in buf (-1: none)
		searches []int // indexes into buf of the region-minute's searches
		bookings []int
	)
	add := func(ev ingest.Event, user int) {
		buf = append(buf, ev)
		users = append(users, user)
	}
	minutes := h.opts.Days * 24 * 60
	for i := range minutes {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := h.start.Add(time.Duration(i) * time.Minute)
		t1 := t0.Add(time.Minute)
		buf, users = buf[:0], users[:0]
		within := func(after time.Time) time.Time { // a random ms in [after, t1)
			span := t1.Sub(after) / time.Millisecond
			if span <= 0 {
				return after
			}
			return after.Truncate(time.Millisecond).Add(time.Duration(rng.Int64N(int64(span))) * time.Millisecond)
		}
		for ri, rh := range h.hist {
			r, m := h.regions[ri], rh.Minutes[i]
			mul := g.multiplier(r, m.Searches, m.Supply)
			searches, bookings = searches[:0], bookings[:0]
			for range int(m.Searches) {
				searches = append(searches, len(buf))
				user := rng.IntN(h.opts.Users)
				add(g.event(ingest.TypeSearch, r, within(t0), user, pickProduct(rng.Float64())), user)
			}
			for _, si := range pick(rng, searches, int(m.Bookings)) {
				s, user := buf[si], users[si]
				b := g.event(ingest.TypeBooking, r, within(s.Timestamp), user, s.ProductType)
				price := math.Round(r.prices[s.ProductType]*mul*(0.85+0.4*rng.Float64())*100) / 100
				b.Price = &price
				bookings = append(bookings, len(buf))
				add(b, user)
			}
			for _, bi := range pick(rng, bookings, int(m.Cancels)) {
				b, user := buf[bi], users[bi]
				add(g.event(ingest.TypeCancel, r, within(b.Timestamp), user, b.ProductType), user)
			}
			supply := m.Supply
			ev := g.event(ingest.TypeSupplyUpdate, r, within(t0), -1, "")
			ev.AvailableSupply = &supply
			add(ev, -1)
			for _, sig := range [...]struct {
				name  string
				value float64
			}{{ingest.SignalWeather, m.Weather}, {ingest.SignalTraffic, m.Traffic}, {ingest.SignalEvent, m.Event}} {
				ev := g.event(ingest.TypeExternalSignal, r, within(t0), -1, "")
				v := sig.value
				ev.Signal, ev.Value = sig.name, &v
				add(ev, -1)
			}
		}
		slices.SortStableFunc(buf, func(a, b ingest.Event) int { return a.Timestamp.Compare(b.Timestamp) })
		for _, ev := range buf {
			if err := emit(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// pick returns n distinct elements of from (n ≤ len(from)), reordering it.
func pick(rng *rand.Rand, from []int, n int) []int {
	n = min(n, len(from))
	for i := range n {
		j := i + rng.IntN(len(from)-i)
		from[i], from[j] = from[j], from[i]
	}
	return from[:n]
}
