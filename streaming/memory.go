package streaming

import (
	"context"
	"time"

	"github.com/surgeworks/surge/features"
)

// memory is the long history of one region: searches per event-time minute
// over the last features.MemoryMinutes, behind the V2 long-memory features.
// Minutes are set, never added to: from the backfill (ClickHouse
// demand_minute, at start) and from the window's buckets (when they leave
// the ring and at each flush), so a rebuild that re-reads the ring's minutes
// cannot count them twice. float32 counts and int32 minutes keep a region at
// 242 KB (21 days of minutes, V3's longest window).
type memory struct {
	counts  [features.MemoryMinutes]float32
	minutes [features.MemoryMinutes]int32 // the Unix minute each slot holds; other minutes count 0
	known   int64                         // the first minute with known history
	used    time.Time                     // wall time the region last had an event (sweep)
}

func newMemory() *memory { return &memory{known: 1<<63 - 1} }

func memSlot(minute int64) int {
	return int(((minute % features.MemoryMinutes) + features.MemoryMinutes) % features.MemoryMinutes)
}

// set records the searches of a closed (or settling) minute.
func (m *memory) set(minute int64, searches float64) {
	i := memSlot(minute)
	if int64(m.minutes[i]) > minute {
		return // a newer minute already holds the slot
	}
	m.minutes[i], m.counts[i] = int32(minute), float32(searches)
	m.known = min(m.known, minute)
}

// cover marks [from, …) as known history even where no minute was set (a
// backfill whose early minutes had no demand).
func (m *memory) cover(from int64) { m.known = min(m.known, from) }

// window is the features.WindowSum at origin minute head (the minutes before
// head are closed).
func (m *memory) window(head int64) features.WindowSum {
	return func(from, to int) (float64, bool) {
		a, b := head+int64(from), head+int64(to)
		if a < m.known || a > b || b > head {
			return 0, false
		}
		s := 0.0
		for minute := a; minute < b; minute++ {
			if i := memSlot(minute); int64(m.minutes[i]) == minute {
				s += float64(m.counts[i])
			}
		}
		return s, true
	}
}

// BackfillFunc loads the searches per minute of every region with demand in
// [from, to) (minute starts), for the long-memory features a consumer
// starts with; training.LoadHistory over ClickHouse demand_minute serves it.
type BackfillFunc func(ctx context.Context, from, to time.Time) (map[string][]features.Minute, error)

// backfill seeds the memories from opts.Backfill: the memory window before
// the rebuild point, which the rebuild re-reads from Kafka itself.
func (c *Consumer) backfill(ctx context.Context) {
	if c.opts.Backfill == nil {
		return
	}
	to := time.Now().Add(-c.opts.Rebuild).Truncate(time.Minute)
	from := to.Add(-features.MemoryMinutes * time.Minute)
	start := time.Now()
	hist, err := c.opts.Backfill(ctx, from, to)
	if err != nil {
		c.opts.Logger.Warn("streaming: long-memory backfill failed; the long-memory features fill from the events", "err", err)
		return
	}
	for id, mins := range hist {
		m := c.memoryOf(id)
		m.cover(from.Unix() / 60)
		for _, mm := range mins {
			m.set(mm.Start.Unix()/60, mm.Searches)
		}
	}
	c.opts.Logger.Info("streaming: long-memory backfill done", "regions", len(hist), "from", from, "to", to, "took", time.Since(start))
}

// memoryOf returns a region's memory, creating it.
func (c *Consumer) memoryOf(id string) *memory {
	m := c.memories[id]
	if m == nil {
		m = newMemory()
		c.memories[id] = m
	}
	return m
}
