package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestForever(t *testing.T) {
	errStep := errors.New("step failed")
	tests := []struct {
		name     string
		failures int  // failures before the step succeeds; -1: never
		cancel   bool // cancel ctx at the third failure
		wantErr  error
		wantRuns int
	}{
		{name: "succeeds at once", failures: 0, wantRuns: 1},
		{name: "succeeds after failures", failures: 4, wantRuns: 5},
		{name: "gives up when ctx ends", failures: -1, cancel: true, wantErr: context.Canceled, wantRuns: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var runs, retries int
			var delays []time.Duration
			err := Forever[any](ctx, Options{
				MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
				OnRetry: func(err error, d time.Duration) {
					if !errors.Is(err, errStep) {
						t.Errorf("OnRetry got %v, want the step's error", err)
					}
					retries++
					delays = append(delays, d)
				},
			}).Run(func() error {
				runs++
				if tt.failures >= 0 && runs > tt.failures {
					return nil
				}
				if tt.cancel && runs == 3 {
					cancel()
				}
				return errStep
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if runs != tt.wantRuns {
				t.Errorf("runs = %d, want %d", runs, tt.wantRuns)
			}
			if tt.failures > 0 && retries != tt.failures {
				t.Errorf("OnRetry called %d times, want %d", retries, tt.failures)
			}
			for _, d := range delays {
				if d <= 0 || d > 5*time.Millisecond { // 4 ms + 20 % jitter
					t.Errorf("delay %s outside (0, 4.8 ms]", d)
				}
			}
		})
	}
}
