// Package ratelimit owns token buckets kept in Redis, so that a limit holds
// across every replica of the service: each bucket is one Redis hash, updated
// atomically by one Lua script, and many buckets are checked in one pipelined
// round trip.
//
// A bucket holds up to Burst tokens and gains Rate tokens per second; a
// request for n tokens is allowed when the bucket holds n. The key of a
// bucket is `ratelimit:<scope>:{<id>}` (the hash tag is the id, so the buckets
// of one scope spread over the slots of a Redis Cluster instead of crowding
// one), a hash with the fields `tokens` (a float) and `ts` (the time of the
// last refill in Unix milliseconds). A bucket idle long enough to be full
// again expires (after Burst/Rate seconds plus one): a missing bucket is a
// full one, so the expiry changes no decision.
//
// Time comes from Redis (TIME, inside the script) unless Options.Now is set:
// one clock for all replicas, so a replica with a skewed clock can neither
// mint tokens nor starve a bucket. With a caller's clock that goes backwards
// the bucket is not refilled until the clock passes its last refill again.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/redislua"
)

// script updates the token buckets KEYS[i] with ARGV[5i-4 .. 5i]: rate
// (tokens/s), burst, n (negative: give tokens back), now in ms (negative:
// Redis TIME; the first key's is used for all), partial (1: grant as many
// whole tokens as there are, up to n). It returns, per key, {granted,
// tokens left as a string, retry after in ms}. One call serves a whole
// batch, so every key of a call must be in one slot: on a Redis Cluster a
// call carries the buckets of one slot (redislua.Batch).
const script = `
local function bucket(key, rate, burst, n, now, partial)
  local h = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(h[1])
  local ts = tonumber(h[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  elseif now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
    ts = now
  end
  local granted = 0
  if n < 0 then
    tokens = math.min(burst, tokens - n)
  elseif n <= tokens then
    granted = n
  elseif partial then
    granted = math.floor(tokens)
  end
  tokens = tokens - granted
  local retry = 0
  if n > 0 and granted < n and (partial or n <= burst) then
    local need = math.min(n - granted, burst)
    if need > tokens then
      retry = math.ceil((need - tokens) * 1000 / rate)
    end
  end
  redis.call('HSET', key, 'tokens', tokens, 'ts', ts)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  return {granted, tostring(tokens), retry}
end
local now = tonumber(ARGV[4])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local out = {}
for i, key in ipairs(KEYS) do
  local a = (i - 1) * 5
  out[i] = bucket(key, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), now, ARGV[a + 5] == '1')
end
return out
`

var bucketScript = redis.NewScript(script)

// Options configures a Limiter. Zero values take the defaults.
type Options struct {
	// Now is the clock. Default nil: Redis TIME, one clock for every
	// replica. Tests set it to control time.
	Now func() time.Time
	// Registerer receives surge_ratelimit_checks_total (nil: none).
	Registerer prometheus.Registerer
}

// Limiter checks token buckets in Redis. It is safe for concurrent use, and
// any number of Limiters (replicas) may share the buckets. When Redis fails
// it returns the error, never a made-up decision: whether to fail open or
// closed is the caller's choice (the event intake fails open).
type Limiter struct {
	rdb    redis.UniversalClient
	opts   Options
	checks *prometheus.CounterVec
}

// NewLimiter returns a limiter on rdb.
func NewLimiter(rdb redis.UniversalClient, opts Options) *Limiter {
	l := &Limiter{
		rdb:  rdb,
		opts: opts,
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_ratelimit_checks_total",
			Help: "Token bucket checks by scope and result (allowed, limited, error).",
		}, []string{"scope", "result"}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(l.checks)
	}
	return l
}

// Key is the Redis key of a bucket.
func Key(scope, id string) string { return "ratelimit:" + scope + ":{" + id + "}" }

// Request asks one bucket for N tokens.
type Request struct {
	Scope string // kind of bucket, e.g. "user" or "client": letters, digits, '_', '-', '.'
	ID    string // the bucket within its scope; not empty
	N     int    // tokens wanted, ≥ 0
	// Rate is the refill in tokens per second (> 0), Burst the bucket size
	// (≥ 1). Every request to one bucket should carry the same values.
	Rate  float64
	Burst int
	// Partial grants as many whole tokens as the bucket holds, up to N,
	// instead of all or nothing. Without it, N > Burst is never allowed.
	Partial bool
}

// Decision is the answer for one bucket.
type Decision struct {
	// Allowed: all N tokens were granted.
	Allowed bool
	// Granted is the number of tokens taken: N when allowed, otherwise 0,
	// or with Partial the whole tokens the bucket held.
	Granted int
	// Remaining is what the bucket holds after the decision.
	Remaining float64
	// RetryAfter is, when not allowed, how long until the bucket holds the
	// tokens not granted (capped at Burst); 0 for a request that can never
	// be allowed (N > Burst without Partial).
	RetryAfter time.Duration
}

// ErrInvalid marks a malformed request (bad scope, id, N, rate or burst).
var ErrInvalid = errors.New("ratelimit: invalid request")

// AllowN asks the bucket (scope, id) for n tokens, all or nothing.
func (l *Limiter) AllowN(ctx context.Context, scope, id string, n int, rate float64, burst int) (Decision, error) {
	ds, err := l.AllowBatch(ctx, []Request{{Scope: scope, ID: id, N: n, Rate: rate, Burst: burst}})
	if err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}

// AllowBatch checks many buckets in one pipelined round trip (two when
// Redis has not cached the script yet). Each bucket is updated atomically;
// the batch as a whole is not a transaction. Decisions are in the order of
// reqs. On an error no decision is returned; the buckets that were reached
// may have been charged.
func (l *Limiter) AllowBatch(ctx context.Context, reqs []Request) ([]Decision, error) {
	for i, r := range reqs {
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("ratelimit: request %d: %w", i, err)
		}
	}
	res, err := l.run(ctx, reqs, false)
	if err != nil {
		for _, r := range reqs {
			l.checks.WithLabelValues(r.Scope, "error").Inc()
		}
		return nil, err
	}
	ds := make([]Decision, len(reqs))
	for i, r := range reqs {
		d, err := decode(res[i])
		if err != nil {
			return nil, fmt.Errorf("ratelimit: bucket %s: %w", Key(r.Scope, r.ID), err)
		}
		d.Allowed = d.Granted == r.N
		ds[i] = d
		if d.Allowed {
			l.checks.WithLabelValues(r.Scope, "allowed").Inc()
		} else {
			l.checks.WithLabelValues(r.Scope, "limited").Inc()
		}
	}
	return ds, nil
}

// Refund gives the N tokens of each request back (up to the bucket size),
// for a caller that took tokens and then did not use them. One round trip.
func (l *Limiter) Refund(ctx context.Context, reqs []Request) error {
	for i, r := range reqs {
		if err := r.check(); err != nil {
			return fmt.Errorf("ratelimit: refund %d: %w", i, err)
		}
	}
	_, err := l.run(ctx, reqs, true)
	return err
}

func (r Request) check() error {
	switch {
	case !validScope(r.Scope):
		return fmt.Errorf("%w: scope %q", ErrInvalid, r.Scope)
	case r.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalid)
	case r.N < 0:
		return fmt.Errorf("%w: n %d < 0", ErrInvalid, r.N)
	case !(r.Rate > 0) || math.IsInf(r.Rate, 0):
		return fmt.Errorf("%w: rate %v", ErrInvalid, r.Rate)
	case r.Burst < 1:
		return fmt.Errorf("%w: burst %d < 1", ErrInvalid, r.Burst)
	}
	return nil
}

func validScope(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// run evaluates the script for every request, pipelined in one round trip
// (redislua: a request answered NOSCRIPT is run again, and only those, so no
// bucket is charged twice).
func (l *Limiter) run(ctx context.Context, reqs []Request, refund bool) ([]any, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	now := int64(-1)
	if l.opts.Now != nil {
		now = l.opts.Now().UnixMilli()
	}
	args := func(r Request) []any {
		n, partial := r.N, "0"
		if refund {
			n = -n
		}
		if r.Partial {
			partial = "1"
		}
		return []any{strconv.FormatFloat(r.Rate, 'g', -1, 64), r.Burst, n, now, partial}
	}
	// Calls of up to maxKeysPerCall buckets (of one slot on a cluster),
	// pipelined in one round trip.
	items := make([]redislua.Item, len(reqs))
	for i, r := range reqs {
		items[i] = redislua.Item{Keys: []string{Key(r.Scope, r.ID)}, Args: args(r)}
	}
	res, err := redislua.Batch(ctx, l.rdb, bucketScript, nil, items, maxKeysPerCall)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	return res, nil
}

// maxKeysPerCall bounds the buckets of one script call.
const maxKeysPerCall = 500

func decode(v any) (Decision, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 3 {
		return Decision{}, fmt.Errorf("unexpected script reply %v", v)
	}
	granted, ok1 := arr[0].(int64)
	left, ok2 := arr[1].(string)
	retry, ok3 := arr[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return Decision{}, fmt.Errorf("unexpected script reply %v", v)
	}
	remaining, err := strconv.ParseFloat(left, 64)
	if err != nil {
		return Decision{}, fmt.Errorf("unexpected tokens %q: %w", left, err)
	}
	return Decision{Granted: int(granted), Remaining: remaining, RetryAfter: time.Duration(retry) * time.Millisecond}, nil
}
