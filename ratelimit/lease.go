package ratelimit

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2/expirable"
)

// LeaseOptions configures Leases. Zero values take the defaults.
type LeaseOptions struct {
	// Scope names the buckets in Redis (see Request.Scope).
	Scope string
	// Rate (tokens per second, > 0) and Burst (≥ 1) of every bucket.
	Rate  float64
	Burst int
	// MaxLease bounds the tokens one round trip takes for a bucket
	// (default Rate/20, 50 ms of its rate, at least 1 and at most Burst).
	MaxLease int
	// TTL: leased tokens not used within it are dropped, so a replica
	// never spends tokens older than that (default 1 s).
	TTL time.Duration
	// MaxBuckets bounds the buckets held in memory (default 100,000; the
	// least recently used go first).
	MaxBuckets int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o *LeaseOptions) defaults() error {
	if o.Rate <= 0 || o.Burst < 1 || math.IsInf(o.Rate, 0) {
		return fmt.Errorf("%w: lease rate %v, burst %d", ErrInvalid, o.Rate, o.Burst)
	}
	if o.MaxLease <= 0 {
		o.MaxLease = int(o.Rate / 20)
	}
	o.MaxLease = max(1, min(o.MaxLease, o.Burst))
	if o.TTL <= 0 {
		o.TTL = time.Second
	}
	if o.MaxBuckets <= 0 {
		o.MaxBuckets = 100_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Leases takes tokens one at a time from buckets shared in Redis, leasing
// them ahead of use: a bucket's first request takes one token, and each
// lease used up within TTL doubles the next one, up to MaxLease. A client
// at a few requests per second costs a round trip per request; a busy one,
// one per MaxLease requests. Limits only get stricter: a replica never
// spends a token the shared bucket did not grant, and tokens unused at the
// end of their TTL are lost (at most one lease per bucket and replica).
type Leases struct {
	l       *Limiter
	opts    LeaseOptions
	buckets *lru.LRU[string, *lease]
	mu      sync.Mutex // guards buckets' get-or-add
}

type lease struct {
	mu        sync.Mutex
	tokens    int       // leased, not spent
	size      int       // the next lease's size
	expires   time.Time // of tokens
	remaining float64   // the shared bucket after the last lease
}

// NewLeases returns leases over l.
func NewLeases(l *Limiter, opts LeaseOptions) (*Leases, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &Leases{l: l, opts: opts, buckets: lru.NewLRU[string, *lease](opts.MaxBuckets, nil, 10*time.Minute)}, nil
}

// Limits returns the rate and burst of the buckets.
func (ls *Leases) Limits() (rate float64, burst int) { return ls.opts.Rate, ls.opts.Burst }

// Take takes one token of bucket id. Decision.Remaining is the tokens left
// to the client as this replica knows them (its lease plus the shared
// bucket at the last lease). On a Redis error nothing is decided.
func (ls *Leases) Take(ctx context.Context, id string) (Decision, error) {
	ls.mu.Lock()
	b, ok := ls.buckets.Get(id)
	if !ok {
		b = &lease{size: 1}
		ls.buckets.Add(id, b)
	}
	ls.mu.Unlock()

	b.mu.Lock()
	defer b.mu.Unlock()
	now := ls.opts.Now()
	if b.tokens > 0 && now.Before(b.expires) {
		b.tokens--
		return Decision{Allowed: true, Granted: 1, Remaining: b.remaining + float64(b.tokens)}, nil
	}
	if b.tokens == 0 && now.Before(b.expires) {
		b.size = min(2*b.size, ls.opts.MaxLease) // the last lease ran out within its TTL
	} else if !now.Before(b.expires) {
		b.size = max(1, b.size/2)
	}
	ds, err := ls.l.AllowBatch(ctx, []Request{{Scope: ls.opts.Scope, ID: id, N: b.size, Rate: ls.opts.Rate, Burst: ls.opts.Burst, Partial: true}})
	if err != nil {
		return Decision{}, err
	}
	d := ds[0]
	b.remaining = d.Remaining
	if d.Granted == 0 {
		b.tokens, b.expires = 0, time.Time{}
		b.size = 1
		wait := max(0, 1-d.Remaining) / ls.opts.Rate // until the shared bucket holds a token
		return Decision{Remaining: d.Remaining, RetryAfter: max(time.Millisecond, time.Duration(wait*float64(time.Second)))}, nil
	}
	b.tokens, b.expires = d.Granted-1, now.Add(ls.opts.TTL)
	return Decision{Allowed: true, Granted: 1, Remaining: d.Remaining + float64(b.tokens)}, nil
}
