package server

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/ratelimit"
)

// requestLimits are the per-caller token buckets of /graphql, shared by
// every replica through Redis (leased, see ratelimit.Leases): one per key
// or token subject, and one per address for anonymous callers. Each HTTP
// request takes a token, and so does each operation sent over a websocket.
// When Redis fails the request passes (fail open: the limits protect
// capacity; prices must keep flowing), counted and logged.
type requestLimits struct {
	keys, anonymous *ratelimit.Leases
	limited         prometheus.Counter
	failOpen        prometheus.Counter
	logger          *slog.Logger
	lastWarn        atomic.Int64
}

// newRequestLimits builds the limits of o, whose rates and bursts
// Options.defaults made valid.
func newRequestLimits(l *ratelimit.Limiter, o Options, m *httpMetrics) *requestLimits {
	keys, err := ratelimit.NewLeases(l, ratelimit.LeaseOptions{Scope: "api-key", Rate: o.RatePerClient, Burst: o.RateBurst})
	if err != nil {
		panic(err)
	}
	anon, err := ratelimit.NewLeases(l, ratelimit.LeaseOptions{Scope: "api-addr", Rate: o.AnonymousRate, Burst: o.AnonymousBurst})
	if err != nil {
		panic(err)
	}
	return &requestLimits{keys: keys, anonymous: anon, limited: m.rateLimited, failOpen: m.rateLimitFailOpen, logger: o.Logger}
}

// take takes the caller's token: ok false when it is over its limit.
func (rl *requestLimits) take(ctx context.Context) (d ratelimit.Decision, leases *ratelimit.Leases, ok bool) {
	p := auth.FromContext(ctx)
	leases = rl.keys
	if p.Anonymous {
		leases = rl.anonymous
	}
	d, err := leases.Take(ctx, p.ID)
	if err != nil {
		rl.failOpen.Inc()
		if last := rl.lastWarn.Load(); time.Since(time.Unix(0, last)) > 10*time.Second && rl.lastWarn.CompareAndSwap(last, time.Now().UnixNano()) {
			rl.logger.Warn("rate limiter unavailable; admitting requests unlimited (fail open)", "err", err)
		}
		return d, nil, true
	}
	if !d.Allowed {
		rl.limited.Inc()
	}
	return d, leases, d.Allowed
}

// middleware answers 429 with Retry-After past the caller's limit, and
// tells every caller where it stands (RateLimit-Limit, -Remaining, -Reset:
// seconds until the bucket is full again).
func (rl *requestLimits) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, leases, ok := rl.take(r.Context())
		if leases != nil {
			rate, burst := leases.Limits()
			h := w.Header()
			h.Set("RateLimit-Limit", strconv.Itoa(burst))
			h.Set("RateLimit-Remaining", strconv.Itoa(int(max(0, d.Remaining))))
			h.Set("RateLimit-Reset", strconv.Itoa(int(math.Ceil((float64(burst)-max(0, d.Remaining))/rate))))
		}
		if !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.RetryAfter.Seconds()))))
			writeError(w, http.StatusTooManyRequests, "RATE_LIMITED", fmt.Sprintf("too many requests; retry in %s", d.RetryAfter.Round(time.Millisecond)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// operationRate takes a token per operation sent over a websocket (HTTP
// requests took theirs in the middleware).
type operationRate struct{ rl *requestLimits }

func (operationRate) ExtensionName() string                   { return "OperationRateLimit" }
func (operationRate) Validate(graphql.ExecutableSchema) error { return nil }
func (o operationRate) MutateOperationContext(ctx context.Context, _ *graphql.OperationContext) *gqlerror.Error {
	if !overWebsocket(ctx) {
		return nil
	}
	if d, _, ok := o.rl.take(ctx); !ok {
		return &gqlerror.Error{Message: fmt.Sprintf("too many operations; retry in %s", d.RetryAfter.Round(time.Millisecond)),
			Extensions: map[string]any{"code": "RATE_LIMITED"}}
	}
	return nil
}

type wsKey struct{}

// overWebsocket tells whether ctx is a websocket connection's.
func overWebsocket(ctx context.Context) bool { return ctx.Value(wsKey{}) != nil }
