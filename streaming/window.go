package streaming

import (
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
)

const (
	// ringMinutes is how many 1-minute buckets a region keeps: the 15
	// closed minutes of the window, the minute under way, and slack for
	// topics whose event-time clocks run apart (during a rebuild replay the
	// partitions of the three topics are read at different speeds; the
	// slack must exceed Options.Rebuild, which is capped accordingly).
	ringMinutes = 40
	// windowMinutes is the number of closed minutes FromMinutes receives.
	windowMinutes = 15
)

// maxRebuild bounds Options.Rebuild so that the replay of a rebuild fits
// the ring whatever the order in which the topics are read.
const maxRebuild = (ringMinutes - windowMinutes - 1) * time.Minute

// kind is what an event does to a region's buckets.
type kind uint8

const (
	kindIgnored kind = iota // a type the features do not use (extensible types)
	kindSearch
	kindBooking
	kindCancel
	kindSupply // gauges from here on, in the order of gaugeSupply…
	kindWeather
	kindTraffic
	kindLocalEvent
)

// Gauges are levels (latest value wins), not counts.
const (
	gaugeSupply = iota
	gaugeWeather
	gaugeTraffic
	gaugeLocalEvent
	numGauges
)

// event is the part of an ingest.Event the windows use, decoded by the
// partition readers.
type event struct {
	region   string
	kind     kind
	backfill bool
	at       int64 // event time, Unix ns
	received int64 // intake time, Unix ms (the Kafka record time when missing)
	value    float64
}

// eventOf classifies a decoded event. Unknown signals and types are
// kindIgnored; a supply update or signal without a value is too.
func eventOf(e *ingest.Event) event {
	ev := event{region: e.RegionID, backfill: e.Backfill, at: e.Timestamp.UnixNano(), received: e.ReceivedAt.UnixMilli()}
	if e.ReceivedAt.IsZero() {
		ev.received = 0
	}
	switch e.Type {
	case ingest.TypeSearch:
		ev.kind = kindSearch
	case ingest.TypeBooking:
		ev.kind = kindBooking
	case ingest.TypeCancel:
		ev.kind = kindCancel
	case ingest.TypeSupplyUpdate:
		if e.AvailableSupply != nil {
			ev.kind, ev.value = kindSupply, *e.AvailableSupply
		}
	case ingest.TypeExternalSignal:
		if e.Value == nil {
			break
		}
		ev.value = *e.Value
		switch e.Signal {
		case ingest.SignalWeather:
			ev.kind = kindWeather
		case ingest.SignalTraffic:
			ev.kind = kindTraffic
		case ingest.SignalEvent:
			ev.kind = kindLocalEvent
		}
	}
	return ev
}

// gauge is the latest value of a level, by event time.
type gauge struct {
	v   float64
	at  int64 // event time, Unix ns
	set bool
}

// newer reports whether g should replace cur: it is set and not older
// (equal event times: the later arrival wins).
func (g gauge) newer(cur gauge) bool { return g.set && (!cur.set || g.at >= cur.at) }

// bucket is one event-time minute of a region.
type bucket struct {
	minute                     int64 // Unix minutes
	valid                      bool
	searches, bookings, cancel float64
	g                          [numGauges]gauge
}

// window is the event-time state of one region: a ring of 1-minute
// tumbling buckets ending at head, the minute of the newest event time
// seen, and one watermark per topic.
//
// A region's events of one topic are totally ordered on one partition, so
// the per-topic watermark makes the same late/not-late decision for every
// event whenever the topic is replayed, whatever the interleaving with the
// other topics.
type window struct {
	ring    [ringMinutes]bucket
	started bool
	head    int64 // newest minute (Unix minutes)
	first   int64 // oldest minute since the state started
	base    [numGauges]gauge
	// streamMax is the newest event time per topic (Unix ns, 0 = none):
	// the topic's watermark is streamMax − grace.
	streamMax []int64
	maxEvent  int64 // newest event time of any topic (Unix ns)
	received  int64 // newest ReceivedAt applied (Unix ms)
	// mem is the region's long history: buckets leaving the ring are
	// recorded in it (nil: no long-memory features).
	mem *memory
}

func newWindow(topics int) *window { return &window{streamMax: make([]int64, topics)} }

// verdict is the fate of one event.
type verdict uint8

const (
	applied verdict = iota
	late            // behind its topic's watermark, or older than the ring
	ignored         // a kind the windows do not use
)

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func slot(minute int64) int { return int(((minute % ringMinutes) + ringMinutes) % ringMinutes) }

// apply adds one event of topic stream to the window. grace is in ns.
func (w *window) apply(stream int, e *event, grace int64) verdict {
	if e.kind == kindIgnored {
		return ignored
	}
	if m := w.streamMax[stream]; m != 0 && e.at < m-grace {
		return late
	}
	minute := floorDiv(e.at, int64(time.Minute))
	switch {
	case !w.started:
		w.started, w.head, w.first = true, minute, minute
	case minute > w.head:
		w.advance(minute)
	case minute <= w.head-ringMinutes:
		return late
	}
	w.streamMax[stream] = max(w.streamMax[stream], e.at)
	w.maxEvent = max(w.maxEvent, e.at)
	w.received = max(w.received, e.received)
	w.first = min(w.first, minute)

	b := &w.ring[slot(minute)]
	if !b.valid || b.minute != minute {
		w.evict(b)
		*b = bucket{minute: minute, valid: true}
	}
	switch e.kind {
	case kindSearch:
		b.searches++
	case kindBooking:
		b.bookings++
	case kindCancel:
		b.cancel++
	default:
		g := gauge{v: e.value, at: e.at, set: true}
		i := int(e.kind - kindSupply)
		if g.newer(b.g[i]) {
			b.g[i] = g
		}
	}
	return applied
}

// advance moves head to minute, evicting the buckets that fall out of the
// ring.
func (w *window) advance(minute int64) {
	for i := range w.ring {
		if b := &w.ring[i]; b.valid && b.minute <= minute-ringMinutes {
			w.evict(b)
		}
	}
	w.head = minute
}

// evict keeps the gauges of a bucket leaving the ring in base, so that a
// level set long ago (supply reported half an hour back) still holds.
func (w *window) evict(b *bucket) {
	if !b.valid {
		return
	}
	if w.mem != nil {
		w.mem.set(b.minute, b.searches)
	}
	for i := range b.g {
		if b.g[i].newer(w.base[i]) {
			w.base[i] = b.g[i]
		}
	}
	b.valid = false
}

// features computes the region's online features: the V1 features from
// the closed minutes before head (at most 15, none before the state
// started) through features.FromMinutes, the V2 long-memory features of
// every horizon in features.Horizons (features.Memory over mem, after the
// ring's closed minutes are recorded in it), plus the minute under way in
// the *_current fields and the bookkeeping fields of features/online.go.
// buf is scratch space, returned for reuse.
func (w *window) features(seasonality float64, buf []features.Minute) (features.Online, []features.Minute) {
	lo := max(w.first, w.head-ringMinutes+1)
	from := max(lo, w.head-windowMinutes)
	carry := w.base
	buf = buf[:0]
	for m := lo; m < w.head; m++ {
		mm := features.Minute{Start: time.Unix(m*60, 0).UTC()}
		b := &w.ring[slot(m)]
		valid := b.valid && b.minute == m
		if w.mem != nil && m >= w.first {
			if valid {
				w.mem.set(m, b.searches)
			} else {
				w.mem.set(m, 0) // no event in a minute the ring covers
			}
		}
		if valid {
			mm.Searches, mm.Bookings, mm.Cancels = b.searches, b.bookings, b.cancel
			for i := range b.g {
				if b.g[i].set {
					carry[i] = b.g[i]
				}
			}
		}
		if m < from {
			continue
		}
		mm.Supply = carry[gaugeSupply].v
		mm.Weather = carry[gaugeWeather].v
		mm.Traffic = carry[gaugeTraffic].v
		mm.Event = carry[gaugeLocalEvent].v
		buf = append(buf, mm)
	}
	supplyKnown := carry[gaugeSupply].set
	on := features.FromMinutes(buf, seasonality)
	if len(buf) > 0 && !supplyKnown {
		// No supply report yet: a 0 would read as "no supply at all".
		delete(on, features.Supply)
		delete(on, features.SupplyDemand)
	}

	var cur bucket
	if b := &w.ring[slot(w.head)]; b.valid && b.minute == w.head {
		cur = *b
	}
	on[features.SearchesCurrent] = cur.searches
	on[features.BookingsCurrent] = cur.bookings
	on[features.CancelsCurrent] = cur.cancel
	if cur.g[gaugeSupply].set {
		carry[gaugeSupply] = cur.g[gaugeSupply]
	}
	if carry[gaugeSupply].set {
		on[features.SupplyCurrent] = carry[gaugeSupply].v
	}
	if w.mem != nil {
		features.Memory(on, w.mem.window(w.head), features.Horizons)
	}
	on[features.EventTimeField] = float64(w.maxEvent / int64(time.Millisecond))
	on[features.WindowEndField] = float64(w.head * 60_000)
	if w.received > 0 {
		on[features.LastEventReceivedField] = float64(w.received)
	}
	return on, buf
}

// windowEnd is the event time at which the closed-minute window ends (the
// start of the minute under way): the time of the seasonality index.
func (w *window) windowEnd() time.Time { return time.Unix(w.head*60, 0).UTC() }
