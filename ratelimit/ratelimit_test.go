package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// clock is a controllable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// pipelineCounter counts pipelined round trips that run scripts (not the
// connection handshakes, also pipelines).
type pipelineCounter struct{ n atomic.Int64 }

func (*pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (*pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (p *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if name := cmds[0].Name(); name == "evalsha" || name == "eval" {
			p.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

func newRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	return rdb, srv.Addr
}

// TestRefillMath walks one bucket through a scripted sequence on a
// controlled clock and checks every decision exactly.
func TestRefillMath(t *testing.T) {
	rdb, _ := newRedis(t)
	clk := &clock{t: time.UnixMilli(1_800_000_000_000)}
	l := NewLimiter(rdb, Options{Now: clk.Now})
	ctx := context.Background()

	// rate 10/s, burst 5.
	steps := []struct {
		name      string
		advance   time.Duration
		n         int
		partial   bool
		allowed   bool
		granted   int
		remaining float64
		retry     time.Duration
	}{
		{"a new bucket is full", 0, 5, false, true, 5, 0, 0},
		{"empty: denied, one token in 100ms", 0, 1, false, false, 0, 0, 100 * time.Millisecond},
		{"100ms refill one token", 100 * time.Millisecond, 1, false, true, 1, 0, 0},
		{"250ms refill 2.5 tokens: 3 denied", 250 * time.Millisecond, 3, false, false, 0, 2.5, 50 * time.Millisecond},
		{"denial takes nothing: 2 allowed", 0, 2, false, true, 2, 0.5, 0},
		{"refill is capped at burst", time.Hour, 0, false, true, 0, 5, 0},
		{"n above burst is never allowed whole", 0, 6, false, false, 0, 5, 0},
		{"partial grants what is there", 0, 7, true, false, 5, 0, 200 * time.Millisecond},
		{"partial retry is capped at burst", 25 * time.Millisecond, 20, true, false, 0, 0.25, 475 * time.Millisecond},
		{"a clock going back refills nothing", -time.Second, 1, false, false, 0, 0.25, 75 * time.Millisecond},
		{"and the bucket waits for its last refill", time.Second + 75*time.Millisecond, 1, false, true, 1, 0, 0},
		{"zero tokens are always allowed", 0, 0, false, true, 0, 0, 0},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		ds, err := l.AllowBatch(ctx, []Request{{Scope: "test", ID: "b", N: s.n, Rate: 10, Burst: 5, Partial: s.partial}})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		d := ds[0]
		if d.Allowed != s.allowed || d.Granted != s.granted || !near(d.Remaining, s.remaining) || d.RetryAfter != s.retry {
			t.Fatalf("%s: got %+v, want allowed=%v granted=%d remaining=%v retry=%v",
				s.name, d, s.allowed, s.granted, s.remaining, s.retry)
		}
	}

	// The state is a hash with tokens and the last refill time in ms, and
	// it expires once it would be full again (burst/rate s + 1 s).
	h, err := rdb.HGetAll(ctx, Key("test", "b")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if h["tokens"] != "0" || h["ts"] != "1800003600450" {
		t.Fatalf("bucket hash = %v", h)
	}
	ttl, err := rdb.PTTL(ctx, Key("test", "b")).Result()
	if err != nil || ttl <= 0 || ttl > 1500*time.Millisecond {
		t.Fatalf("PTTL = %v, %v; want (0, 1.5s]", ttl, err)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// TestRedisClock uses Redis TIME (no Options.Now): with a refill far slower
// than the test, the decisions do not depend on how fast it runs.
func TestRedisClock(t *testing.T) {
	rdb, _ := newRedis(t)
	l := NewLimiter(rdb, Options{})
	ctx := context.Background()
	const rate = 0.001 // one token per 1000 s
	d, err := l.AllowN(ctx, "client", "c1", 3, rate, 3)
	if err != nil || !d.Allowed {
		t.Fatalf("first AllowN = %+v, %v", d, err)
	}
	d, err = l.AllowN(ctx, "client", "c1", 1, rate, 3)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.RetryAfter <= 990*time.Second || d.RetryAfter > 1000*time.Second {
		t.Fatalf("second AllowN = %+v; want denied, retry in (990s, 1000s]", d)
	}
	// Another id is another bucket.
	if d, err := l.AllowN(ctx, "client", "c2", 3, rate, 3); err != nil || !d.Allowed {
		t.Fatalf("other bucket = %+v, %v", d, err)
	}
	ts, err := rdb.HGet(ctx, Key("client", "c1"), "ts").Int64()
	if err != nil {
		t.Fatal(err)
	}
	if now := time.Now().UnixMilli(); ts < now-60_000 || ts > now+60_000 {
		t.Fatalf("ts %d is not Redis's current time in ms (local %d)", ts, now)
	}
}

// TestReplicasShareBucket hammers one bucket from two limiters with their own
// connections (two replicas): exactly burst requests pass in total.
func TestReplicasShareBucket(t *testing.T) {
	_, addr := newRedis(t)
	var limiters []*Limiter
	for range 2 {
		rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 20})
		t.Cleanup(func() { rdb.Close() })
		limiters = append(limiters, NewLimiter(rdb, Options{}))
	}
	const burst, workers, each = 500, 20, 50 // 1,000 requests for 500 tokens
	var allowed, denied atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			l := limiters[w%2]
			for range each {
				// A refill of one token per ~11.6 days: none during the test.
				d, err := l.AllowN(context.Background(), "user", "shared", 1, 1e-6, burst)
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					allowed.Add(1)
				} else {
					denied.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if allowed.Load() != burst || denied.Load() != workers*each-burst {
		t.Fatalf("allowed %d, denied %d; want %d and %d", allowed.Load(), denied.Load(), burst, workers*each-burst)
	}
}

// TestBatchOneRoundTrip checks many buckets in one pipeline; a server
// without the cached script (first use, SCRIPT FLUSH, restart) costs one
// more, and no bucket is charged twice.
func TestBatchOneRoundTrip(t *testing.T) {
	rdb, _ := newRedis(t)
	counter := &pipelineCounter{}
	rdb.AddHook(counter)
	clk := &clock{t: time.UnixMilli(1_800_000_000_000)}
	l := NewLimiter(rdb, Options{Now: clk.Now})
	ctx := context.Background()

	reqs := []Request{
		{Scope: "client", ID: "k", N: 8, Rate: 100, Burst: 10},
		{Scope: "user", ID: "u1", N: 3, Rate: 1, Burst: 2, Partial: true},
		{Scope: "user", ID: "u2", N: 2, Rate: 1, Burst: 2, Partial: true},
		{Scope: "user", ID: "u3", N: 3, Rate: 1, Burst: 5},
	}
	check := func(round string, want []Decision, pipelines int64) {
		t.Helper()
		counter.n.Store(0)
		ds, err := l.AllowBatch(ctx, reqs)
		if err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		for i := range want {
			if ds[i].Allowed != want[i].Allowed || ds[i].Granted != want[i].Granted || !near(ds[i].Remaining, want[i].Remaining) {
				t.Errorf("%s: decision %d = %+v, want %+v", round, i, ds[i], want[i])
			}
		}
		if got := counter.n.Load(); got != pipelines {
			t.Errorf("%s: %d pipelines, want %d", round, got, pipelines)
		}
	}
	// The script is not loaded yet: EVALSHA fails, EVAL follows.
	check("first", []Decision{
		{Allowed: true, Granted: 8, Remaining: 2},
		{Allowed: false, Granted: 2, Remaining: 0},
		{Allowed: true, Granted: 2, Remaining: 0},
		{Allowed: true, Granted: 3, Remaining: 2},
	}, 2)
	check("cached", []Decision{
		{Allowed: false, Granted: 0, Remaining: 2},
		{Allowed: false, Granted: 0, Remaining: 0},
		{Allowed: false, Granted: 0, Remaining: 0},
		{Allowed: false, Granted: 0, Remaining: 2},
	}, 1)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	check("flushed", []Decision{
		{Allowed: true, Granted: 8, Remaining: 2}, // 2 + 100 → capped at 10
		{Allowed: false, Granted: 1, Remaining: 0},
		{Allowed: false, Granted: 1, Remaining: 0},
		{Allowed: true, Granted: 3, Remaining: 0},
	}, 2)

	// Refund gives tokens back, capped at the burst.
	if err := l.Refund(ctx, []Request{reqs[0], {Scope: "user", ID: "u3", N: 100, Rate: 1, Burst: 5}}); err != nil {
		t.Fatal(err)
	}
	check("refunded", []Decision{
		{Allowed: true, Granted: 8, Remaining: 2}, // 2 + 8 = 10, minus 8
		{Allowed: false, Granted: 0, Remaining: 0},
		{Allowed: false, Granted: 0, Remaining: 0},
		{Allowed: true, Granted: 3, Remaining: 2}, // refund capped at 5
	}, 1)
}

func TestInvalidRequests(t *testing.T) {
	rdb, _ := newRedis(t)
	l := NewLimiter(rdb, Options{})
	for _, r := range []Request{
		{Scope: "", ID: "a", N: 1, Rate: 1, Burst: 1},
		{Scope: "us er", ID: "a", N: 1, Rate: 1, Burst: 1},
		{Scope: "user", ID: "", N: 1, Rate: 1, Burst: 1},
		{Scope: "user", ID: "a", N: -1, Rate: 1, Burst: 1},
		{Scope: "user", ID: "a", N: 1, Rate: 0, Burst: 1},
		{Scope: "user", ID: "a", N: 1, Rate: -5, Burst: 1},
		{Scope: "user", ID: "a", N: 1, Rate: 1, Burst: 0},
	} {
		if _, err := l.AllowBatch(context.Background(), []Request{r}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err = %v, want ErrInvalid", r, err)
		}
	}
}

// TestRedisDown: an unreachable Redis is an error, never a decision; the
// caller chooses to fail open or closed. It works again after a restart.
func TestRedisDown(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	reg := newRegistry()
	l := NewLimiter(rdb, Options{Registerer: reg})
	ctx := context.Background()
	if _, err := l.AllowN(ctx, "user", "u", 1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if d, err := l.AllowN(ctx, "user", "u", 1, 1, 1); err == nil {
		t.Fatalf("Redis down: got %+v and no error", d)
	}
	if got := reg.counter(t, "surge_ratelimit_checks_total", "error"); got != 1 {
		t.Fatalf("error checks = %v, want 1", got)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The restarted server has neither the script nor the bucket.
	if d, err := l.AllowN(ctx, "user", "u", 1, 1, 1); err != nil || !d.Allowed {
		t.Fatalf("after restart: %+v, %v", d, err)
	}
}

type registry struct{ *prometheus.Registry }

func newRegistry() registry { return registry{prometheus.NewRegistry()} }

// counter sums the counter name over the series that have a label with the
// given value.
func (r registry) counter(t *testing.T, name, labelValue string) float64 {
	t.Helper()
	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == labelValue {
					sum += m.GetCounter().GetValue()
					break
				}
			}
		}
	}
	return sum
}

// BenchmarkAllowBatchUsers is the intake's check of a 1,000-event request:
// the client's bucket and 200 users' (partial), in one round trip. It
// reports the Redis server's CPU time per bucket (INFO cpu), the cost the
// intake's throughput pays on a shared machine.
func BenchmarkAllowBatchUsers(b *testing.B) {
	srv := testenv.Redis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	l := NewLimiter(rdb, Options{})
	ctx := context.Background()
	reqs := []Request{{Scope: "client", ID: "bench", N: 1000, Rate: 1e9, Burst: 1e9}}
	for u := range 200 {
		reqs = append(reqs, Request{Scope: "user", ID: "u" + strconv.Itoa(u), N: 5, Rate: 50, Burst: 100, Partial: true})
	}
	cpu := func() float64 {
		info, err := rdb.Info(ctx, "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		s := 0.0
		for _, line := range strings.Split(info, "\r\n") {
			k, v, _ := strings.Cut(line, ":")
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				f, _ := strconv.ParseFloat(v, 64)
				s += f
			}
		}
		return s
	}
	if _, err := l.AllowBatch(ctx, reqs); err != nil {
		b.Fatal(err)
	}
	before := cpu()
	b.ResetTimer()
	for range b.N {
		if _, err := l.AllowBatch(ctx, reqs); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric((cpu()-before)*1e6/float64(b.N*len(reqs)), "redis-µs/bucket")
}
