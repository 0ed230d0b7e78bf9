package features

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// UpdatedAtField is the hash field holding the Unix time (ms) of the last write.
const UpdatedAtField = "updated_at_ms"

// DefaultTTL is how long a region's features live without a refresh.
const DefaultTTL = 120 * time.Second

// Key is the Redis key of a region's online features. The hash tag keeps all
// of a region's keys in one Redis Cluster slot.
func Key(regionID string) string { return "features:{" + regionID + "}" }

// Values are the online features of one region as read from Redis.
type Values struct {
	Online    Online
	UpdatedAt time.Time // zero when the region has no features (expired or never written)
	// Invalid names, sorted, the fields whose value is not a finite number
	// (NaN, ±Inf, not a number at all): they are left out of Online, so
	// that they never reach a model, the pricing engine or an audit record.
	Invalid []string
}

// Found reports whether the region had features in Redis.
func (v Values) Found() bool { return !v.UpdatedAt.IsZero() }

// Store is the Redis online feature store.
type Store struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// NewStore returns a store; ttl ≤ 0 means DefaultTTL.
func NewStore(rdb redis.UniversalClient, ttl time.Duration) *Store {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Store{rdb: rdb, ttl: ttl}
}

// Write replaces a region's features and their update time, and renews
// the TTL, atomically (MULTI/EXEC).
func (s *Store) Write(ctx context.Context, regionID string, online Online, at time.Time) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.QueueWrite(ctx, p, regionID, online, at)
		return nil
	})
	if err != nil {
		return fmt.Errorf("write features of %s: %w", regionID, err)
	}
	return nil
}

// Get reads one region's features.
func (s *Store) Get(ctx context.Context, regionID string) (Values, error) {
	p := s.rdb.Pipeline()
	read := Queue(ctx, p, regionID)
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Values{}, fmt.Errorf("read features of %s: %w", regionID, err)
	}
	return read()
}

// Queue adds the read of a region's features to a pipeline, so that callers
// can batch it with other reads in one round trip. The returned function gives
// the result after the pipeline ran.
func Queue(ctx context.Context, p redis.Pipeliner, regionID string) func() (Values, error) {
	cmd := p.HGetAll(ctx, Key(regionID))
	return func() (Values, error) {
		m, err := cmd.Result()
		if err != nil {
			return Values{}, fmt.Errorf("read features of %s: %w", regionID, err)
		}
		return parse(m), nil
	}
}

func parse(m map[string]string) Values {
	v := Values{Online: make(Online, len(m))}
	for k, s := range m {
		if k == UpdatedAtField {
			if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
				v.UpdatedAt = time.UnixMilli(ms).UTC()
			}
			continue
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			v.Online[k] = f
		} else {
			v.Invalid = append(v.Invalid, k)
		}
	}
	slices.Sort(v.Invalid)
	return v
}
