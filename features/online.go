package features

import (
	"context"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fields the streaming consumer (package streaming) writes into a region's
// features hash next to the V1 online features. They are not model inputs:
// Schema.Vector ignores them. The V1 window features (searches_1m …
// supply_demand_ratio) describe the closed minutes only, exactly as
// FromMinutes computes them for training; the minute under way shows in the
// *_current fields, so the hash changes within a second of an event even
// though the closed-minute features change once a minute.
const (
	// SearchesCurrent, BookingsCurrent and CancelsCurrent count the events
	// of the minute under way (event time) so far.
	SearchesCurrent = "searches_current"
	BookingsCurrent = "bookings_current"
	CancelsCurrent  = "cancels_current"
	// SupplyCurrent is the latest available supply including the minute
	// under way; Supply is the latest of the last closed minute.
	SupplyCurrent = "supply_current"

	// LastEventReceivedField is the Unix time (ms) at which the intake
	// received the newest event reflected in the hash (the maximum
	// Event.ReceivedAt applied). An event received at r is reflected once
	// this field is ≥ r in milliseconds; the freshness benchmark polls it.
	LastEventReceivedField = "last_event_received_ms"
	// EventTimeField is the Unix time (ms) of the newest event time seen
	// for the region (its event-time clock).
	EventTimeField = "event_time_ms"
	// WindowEndField is the Unix time (ms) at which the closed-minute window
	// ends, i.e. the start of the minute under way: the *_1m features are
	// the minute before it.
	WindowEndField = "window_end_ms"
)

// QueueWrite adds the write of a region's features to a pipeline: DEL, HSET of
// the values and of UpdatedAtField = at, then EXPIRE with the store's TTL,
// as Write does in a round trip of its own. Callers batch the writes of many
// regions in one pipeline (a TxPipeline keeps each HSET with its EXPIRE).
// Integral values are written as integers, so the *_ms fields parse with
// strconv.ParseInt as well as ParseFloat.
func (s *Store) QueueWrite(ctx context.Context, p redis.Pipeliner, regionID string, online Online, at time.Time) {
	args := make([]any, 0, 2*len(online)+2)
	for k, v := range online {
		args = append(args, k, formatValue(v))
	}
	args = append(args, UpdatedAtField, strconv.FormatInt(at.UnixMilli(), 10))
	key := Key(regionID)
	p.Del(ctx, key) // the write replaces the whole set: no field of an older writer survives
	p.HSet(ctx, key, args...)
	p.Expire(ctx, key, s.ttl)
}

// TTL is how long the store's features live without a refresh.
func (s *Store) TTL() time.Duration { return s.ttl }

// LastEventReceived reads LastEventReceivedField from values read back from
// the store; ok is false when the hash does not carry it (features written by
// something other than the streaming consumer, or none at all).
func (v Values) LastEventReceived() (t time.Time, ok bool) {
	ms, ok := v.Online[LastEventReceivedField]
	if !ok {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)).UTC(), true
}

func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
