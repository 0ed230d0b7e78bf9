package ratelimit

import (
	"context"
	"testing"
	"time"
)

// TestLeases: two replicas share one bucket through leases: together they
// never admit more than the bucket grants, a busy client costs far fewer
// round trips than requests, and a refused request says when to retry.
func TestLeases(t *testing.T) {
	rdb, _ := newRedis(t)
	var rounds pipelineCounter
	rdb.AddHook(&rounds)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	l := NewLimiter(rdb, Options{Now: clk.Now})
	opts := LeaseOptions{Scope: "api", Rate: 100, Burst: 200, MaxLease: 20, Now: clk.Now}
	a, err := NewLeases(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewLeases(l, opts)
	ctx := context.Background()

	// With the clock still, the bucket's 200 tokens are all there is.
	admitted, refused := 0, 0
	var last Decision
	for i := range 1000 {
		r := a
		if i%2 == 1 {
			r = b
		}
		d, err := r.Take(ctx, "client-1")
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		} else {
			refused++
			last = d
		}
	}
	if admitted != 200 || refused != 800 {
		t.Errorf("admitted %d, refused %d; want the bucket's 200", admitted, refused)
	}
	if last.RetryAfter <= 0 || last.RetryAfter > 20*time.Millisecond {
		t.Errorf("retry after %v, want about 1/rate", last.RetryAfter)
	}
	if n := rounds.n.Load(); n > 900 {
		t.Errorf("%d round trips for 1000 requests", n)
	}

	// A busy client, refilled: round trips per request fall towards
	// 1/MaxLease.
	rounds.n.Store(0)
	for range 100 {
		clk.Add(10 * time.Millisecond) // one token per 10 ms
		if d, err := a.Take(ctx, "client-2"); err != nil || !d.Allowed {
			t.Fatalf("client-2: %+v %v", d, err)
		}
	}
	if n := rounds.n.Load(); n > 15 {
		t.Errorf("%d round trips for 100 requests of a busy client, want ≤ 15 (leases of up to 20)", n)
	}
	// Leased tokens expire with their TTL: a quiet client starts again
	// with a lease of one.
	clk.Add(2 * time.Second)
	rounds.n.Store(0)
	if d, _ := a.Take(ctx, "client-2"); !d.Allowed || rounds.n.Load() != 1 {
		t.Errorf("after the TTL: %+v, %d round trips", d, rounds.n.Load())
	}
	if _, err := NewLeases(l, LeaseOptions{Scope: "api"}); err == nil {
		t.Error("NewLeases without a rate accepted")
	}
}
