package live

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/rules"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type catalog []rules.Region

func (c catalog) Regions() []rules.Region { return c }

var demo = catalog{
	{ID: "berlin", Products: []string{"ride", "xl"}},
	{ID: "paris", Products: []string{"ride"}},
}

// pricer quotes every pair at its multiplier in mult (1 by default) and
// records the pairs it was asked for.
type pricer struct {
	mu    sync.Mutex
	mult  map[pair]float64
	asked []quotes.Request
}

func (p *pricer) QuoteBatch(_ context.Context, reqs []quotes.Request) ([]quotes.Quote, []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, reqs...)
	out := make([]quotes.Quote, len(reqs))
	for i, r := range reqs {
		m, ok := p.mult[pair{r.RegionID, r.ProductType}]
		if !ok {
			m = 1
		}
		out[i] = quotes.Quote{RegionID: r.RegionID, ProductType: r.ProductType, Multiplier: m, CreatedAt: time.Now()}
	}
	return out, make([]error, len(reqs))
}

func (p *pricer) times(region string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.asked {
		if r.RegionID == region {
			n++
		}
	}
	return n
}

func change(region, product string, m float64) Update {
	return Update{RegionID: region, ProductType: product, Multiplier: m, At: time.Now()}
}

func next(t *testing.T, ch <-chan *Update) Update {
	t.Helper()
	u, ok := <-ch
	if !ok {
		t.Fatal("subscription closed")
	}
	return *u
}

func TestSnapshotThenChanges(t *testing.T) {
	p := &pricer{mult: map[pair]float64{{"berlin", "xl"}: 1.4}}
	h := New(nil, p, demo, Options{RepriceInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := h.Subscribe(ctx, Query{RegionIDs: []string{"berlin"}, MinChange: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Update{{RegionID: "berlin", ProductType: "ride", Multiplier: 1}, {RegionID: "berlin", ProductType: "xl", Multiplier: 1.4}} {
		u := next(t, ch)
		if !u.Snapshot || u.Previous != nil || u.RegionID != want.RegionID || u.ProductType != want.ProductType || u.Multiplier != want.Multiplier {
			t.Fatalf("snapshot %+v, want %+v", u, want)
		}
	}
	h.dispatch(change("paris", "ride", 2))     // not watched
	h.dispatch(change("berlin", "ride", 1.05)) // within minChange: dropped
	h.dispatch(change("berlin", "ride", 1.25)) // moved 0.25 from the 1.0 sent
	u := next(t, ch)
	if u.Snapshot || u.RegionID != "berlin" || u.ProductType != "ride" || u.Multiplier != 1.25 || u.Previous == nil || *u.Previous != 1 {
		t.Fatalf("update %+v (previous %v), want berlin/ride 1 → 1.25", u, u.Previous)
	}
	// Later changes arrive in order per pair, each with the value sent
	// before it as previous (some may be conflated away on the way).
	h.dispatch(change("berlin", "xl", 1.8))
	h.dispatch(change("berlin", "xl", 2.2))
	h.dispatch(change("berlin", "ride", 1.6))
	last := map[string]float64{"ride": 1.25, "xl": 1.4}
	for last["xl"] != 2.2 || last["ride"] != 1.6 {
		u := next(t, ch)
		if *u.Previous != last[u.ProductType] {
			t.Fatalf("update %+v with previous %v, want previous %v", u, *u.Previous, last[u.ProductType])
		}
		last[u.ProductType] = u.Multiplier
	}
	// A later subscriber's snapshot is the latest values, not new quotes.
	asked := p.times("berlin")
	ch2, err := h.Subscribe(ctx, Query{RegionIDs: []string{"berlin"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []float64{1.6, 2.2} { // ride, xl
		if u := next(t, ch2); !u.Snapshot || u.Multiplier != want {
			t.Fatalf("second snapshot %+v, want %v", u, want)
		}
	}
	if p.times("berlin") != asked {
		t.Fatalf("the second snapshot quoted again (%d quotes, want %d)", p.times("berlin"), asked)
	}
	cancel()
	for range ch { // closed once the context ends
	}
	for range ch2 {
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.total.Load() != 0 || len(h.subs) != 0 || len(h.watched) != 0 {
		t.Fatalf("after the end: %d held, %d subscriptions, %d watched", h.total.Load(), len(h.subs), len(h.watched))
	}
}

// TestConflation: updates not yet read keep one value per pair, the
// latest, in the order the pairs first arrived.
func TestConflation(t *testing.T) {
	s := &subscription{pending: map[pair]Update{}, notify: make(chan struct{}, 1)}
	m := newMetrics(nil)
	for _, u := range []Update{change("berlin", "xl", 1.8), change("berlin", "ride", 1.1), change("berlin", "xl", 2.2), change("berlin", "ride", 1.6)} {
		s.offer(pair{u.RegionID, u.ProductType}, u, m)
	}
	got := s.take()
	if len(got) != 2 || got[0].ProductType != "xl" || got[0].Multiplier != 2.2 || got[1].ProductType != "ride" || got[1].Multiplier != 1.6 {
		t.Fatalf("take() = %+v, want xl 2.2 then ride 1.6", got)
	}
	if len(s.take()) != 0 || len(s.notify) != 1 {
		t.Fatal("a second take is not empty, or the reader was not notified")
	}
}

func TestBadQueries(t *testing.T) {
	h := New(nil, &pricer{}, demo, Options{})
	for _, tc := range []struct {
		q     Query
		field string
	}{
		{Query{RegionIDs: []string{"berlin", "atlantis"}}, "regionIds"},
		{Query{ProductTypes: []string{"boat"}}, "productTypes"},
		{Query{MinChange: -0.1}, "minChange"},
	} {
		_, err := h.Subscribe(context.Background(), tc.q)
		var in *quotes.InputError
		if !errors.As(err, &in) || in.Field != tc.field {
			t.Errorf("Subscribe(%+v) = %v, want an input error on %s", tc.q, err, tc.field)
		}
	}
	if _, err := h.Subscribe(context.Background(), Query{RegionIDs: []string{"atlantis"}}); !errors.Is(err, quotes.ErrUnknownRegion) {
		t.Errorf("unknown region: %v, want ErrUnknownRegion", err)
	}
}

func TestLimits(t *testing.T) {
	h := New(nil, &pricer{}, demo, Options{MaxPerConnection: 2, MaxSubscriptions: 3, RepriceInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := WithConnection(ctx)
	var chans []<-chan *Update
	for range 2 {
		ch, err := h.Subscribe(conn, Query{RegionIDs: []string{"paris"}})
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	if _, err := h.Subscribe(conn, Query{}); !errors.Is(err, ErrTooMany) || err.Error() != "too many subscriptions: at most 2 per connection" {
		t.Fatalf("third on one connection: %v", err)
	}
	other, cancelOther := context.WithCancel(WithConnection(ctx))
	if _, err := h.Subscribe(other, Query{}); err != nil {
		t.Fatalf("on another connection: %v", err)
	}
	if _, err := h.Hold(WithConnection(ctx)); !errors.Is(err, ErrTooMany) || err.Error() != "too many subscriptions: at most 3 on this instance" {
		t.Fatalf("fourth on the instance: %v", err)
	}
	cancelOther()
	for h.total.Load() != 2 { // released once its stream ends
		time.Sleep(time.Millisecond)
	}
	release, err := h.Hold(ctx)
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	release()
	release() // idempotent
	if h.total.Load() != 2 {
		t.Fatalf("held %d, want 2", h.total.Load())
	}
}

// TestSlowSubscriber: a reader that leaves an update unread for SlowAfter is
// told (OnSlow) and its channel closes; another subscriber is not held up.
func TestSlowSubscriber(t *testing.T) {
	h := New(nil, &pricer{}, demo, Options{SlowAfter: 20 * time.Millisecond, RepriceInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := make(chan struct{})
	stuck, err := h.Subscribe(ctx, Query{RegionIDs: []string{"paris"}, OnSlow: func() { close(slow) }})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := h.Subscribe(ctx, Query{RegionIDs: []string{"paris"}})
	if err != nil {
		t.Fatal(err)
	}
	next(t, fast) // snapshot
	for i := range 1000 {
		h.dispatch(change("paris", "ride", 1+float64(i%2)))
	}
	if u := next(t, fast); u.Snapshot {
		t.Fatalf("fast reader got %+v, want a change", u)
	}
	<-slow
	for range stuck { // the snapshot it never read, then closed
	}
	h.mu.Lock()
	left := len(h.subs)
	h.mu.Unlock()
	if left != 1 {
		t.Fatalf("%d subscriptions left, want 1", left)
	}
}

// TestRedisFanOut: changes published on Redis by any replica reach the
// subscribers, and the watched pairs are repriced.
func TestRedisFanOut(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	p := &pricer{}
	h := New(rdb, p, demo, Options{RepriceInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	ch, err := h.Subscribe(ctx, Query{RegionIDs: []string{"paris"}})
	if err != nil {
		t.Fatal(err)
	}
	next(t, ch) // snapshot
	for n, _ := rdb.PubSubNumPat(ctx).Result(); n == 0; n, _ = rdb.PubSubNumPat(ctx).Result() {
		time.Sleep(5 * time.Millisecond) // until the hub's pattern subscription is on
	}
	demand, supply := 40.0, 3.0
	b, _ := json.Marshal(quotes.SurgeChange{RegionID: "paris", ProductType: "ride", Previous: 1, Multiplier: 1.75,
		Demand: &demand, Supply: &supply, Reason: "demand_supply: high", At: time.Now()})
	if err := rdb.Publish(ctx, quotes.SurgeChannel("paris"), b).Err(); err != nil {
		t.Fatal(err)
	}
	u := next(t, ch)
	if u.Multiplier != 1.75 || *u.Previous != 1 || *u.Demand != 40 || *u.Supply != 3 || u.Reason != "demand_supply: high" {
		t.Fatalf("update %+v", u)
	}
	for p.times("paris") < 2 {
		time.Sleep(5 * time.Millisecond) // repriced by the ticker, after the snapshot's quote
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
