// Package retry owns the project's one retry idiom, on failsafe-go's retry
// policy: a step that must eventually succeed (a produce, a fetch, an
// insert, a refresh) is retried with jittered exponential backoff until it
// succeeds or ctx ends.
package retry

import (
	"cmp"
	"context"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
)

// Options configure Forever. The zero value is usable.
type Options struct {
	// MinBackoff is the first delay. Default 100 ms.
	MinBackoff time.Duration
	// MaxBackoff bounds the delays, which double from MinBackoff. Default 10 s.
	MaxBackoff time.Duration
	// Jitter is the share of each delay drawn at random (0.2: ±20 %).
	// Default 0.2.
	Jitter float64
	// OnRetry, if set, is called with each failure before its delay.
	OnRetry func(err error, delay time.Duration)
}

// Forever returns an executor that retries until the step succeeds or ctx
// ends; it then returns ctx's error.
func Forever[R any](ctx context.Context, opts Options) failsafe.Executor[R] {
	b := retrypolicy.NewBuilder[R]().
		WithMaxRetries(-1).
		WithBackoff(cmp.Or(opts.MinBackoff, 100*time.Millisecond), cmp.Or(opts.MaxBackoff, 10*time.Second)).
		WithJitterFactor(cmp.Or(opts.Jitter, 0.2)).
		AbortIf(func(R, error) bool { return ctx.Err() != nil })
	if opts.OnRetry != nil {
		b = b.OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[R]) { opts.OnRetry(e.LastError(), e.Delay) })
	}
	return failsafe.With[R](b.Build()).WithContext(ctx)
}
