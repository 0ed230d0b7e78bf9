// Package live owns the live updates of the API. A Hub follows the surge
// changes that every replica's quote service publishes on Redis
// (surge:{region}), keeps the multipliers of watched regions fresh by
// repricing them, and fans the changes out to this replica's subscribers:
// each subscription keeps only the latest value per region and product while
// its reader is busy (conflation), and is ended when it stays behind, so a
// slow subscriber never blocks the others, the fan-out or the price path.
package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/rules"
)

// ErrTooMany refuses a subscription over a limit; the error names the limit.
var ErrTooMany = errors.New("too many subscriptions")

// Pricer quotes region/product pairs in one batch; quotes.Service implements it.
type Pricer interface {
	QuoteBatch(ctx context.Context, reqs []quotes.Request) ([]quotes.Quote, []error)
}

// Catalog lists the priced regions and their products; rules.Cache implements it.
type Catalog interface {
	Regions() []rules.Region
}

// Options configures a Hub. Zero values take the defaults.
type Options struct {
	// RepriceInterval is how often the watched pairs are quoted, so that
	// their multipliers follow demand and supply even when no client asks
	// for prices (default 1 s; negative: never).
	RepriceInterval time.Duration
	// MaxSubscriptions bounds the live subscriptions of this instance
	// (default 20,000), MaxPerConnection those of one websocket connection
	// (default 50).
	MaxSubscriptions int
	MaxPerConnection int
	// SlowAfter is how long a subscriber may leave an update unread before
	// its subscription is ended (default 10 s).
	SlowAfter  time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (o *Options) defaults() {
	if o.RepriceInterval == 0 {
		o.RepriceInterval = time.Second
	}
	if o.MaxSubscriptions <= 0 {
		o.MaxSubscriptions = 20_000
	}
	if o.MaxPerConnection <= 0 {
		o.MaxPerConnection = 50
	}
	if o.SlowAfter <= 0 {
		o.SlowAfter = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Update is one multiplier of one product in one region.
type Update struct {
	RegionID    string
	ProductType string
	Multiplier  float64
	// Previous is the multiplier the subscription was sent last for the
	// pair; nil in the snapshot.
	Previous *float64
	Demand   *float64
	Supply   *float64
	Reason   string
	At       time.Time
	Snapshot bool
}

// Query chooses what a subscription receives.
type Query struct {
	// RegionIDs and ProductTypes filter the pairs (empty: all).
	RegionIDs    []string
	ProductTypes []string
	// MinChange: an update is sent when the multiplier moved by more than
	// this since the last one sent (default 0: any move).
	MinChange float64
	// OnSlow is called when the subscription is ended because its reader
	// stayed behind for SlowAfter, just before the channel closes.
	OnSlow func()
}

type pair struct{ region, product string }

// Hub fans surge changes out to subscribers. Run must run for changes to
// arrive; Subscribe works without it (snapshots only).
type Hub struct {
	rdb     redis.UniversalClient
	pricer  Pricer
	catalog Catalog
	opts    Options
	m       *metrics

	total   atomic.Int64
	mu      sync.Mutex
	subs    map[*subscription]struct{}
	watched map[pair]int    // subscriptions per pair, for repricing
	latest  map[pair]Update // the last value seen per pair, for snapshots
}

// New returns a hub reading changes from rdb and quoting with pricer.
func New(rdb redis.UniversalClient, pricer Pricer, catalog Catalog, opts Options) *Hub {
	opts.defaults()
	return &Hub{rdb: rdb, pricer: pricer, catalog: catalog, opts: opts, m: newMetrics(opts.Registerer),
		subs: map[*subscription]struct{}{}, watched: map[pair]int{}, latest: map[pair]Update{}}
}

// Run follows the surge channels of every region and reprices the watched
// pairs until ctx ends. go-redis resubscribes by itself after a lost
// connection; changes published meanwhile are not replayed, but the next
// reprice publishes the multipliers that moved. Repricing runs beside the
// fan-out, so a slow quote batch never delays the delivery of changes.
func (h *Hub) Run(ctx context.Context) error {
	ps := h.rdb.PSubscribe(ctx, quotes.SurgeChannel("*"))
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelSize(4096))
	var repricing sync.WaitGroup
	defer repricing.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before the Wait: ends the repricing however Run returns
	if h.opts.RepriceInterval > 0 {
		repricing.Go(func() {
			t := time.NewTicker(h.opts.RepriceInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					h.reprice(ctx)
				}
			}
		})
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			var c quotes.SurgeChange
			if err := json.Unmarshal([]byte(msg.Payload), &c); err != nil {
				h.opts.Logger.Warn("undecodable surge change", "channel", msg.Channel, "err", err)
				continue
			}
			h.m.received.Inc()
			h.dispatch(fromChange(c))
		}
	}
}

// reprice quotes every watched pair in one batch; the quote service
// publishes those whose multiplier moved.
func (h *Hub) reprice(ctx context.Context) {
	h.mu.Lock()
	reqs := make([]quotes.Request, 0, len(h.watched))
	for p := range h.watched {
		reqs = append(reqs, quotes.Request{RegionID: p.region, ProductType: p.product})
	}
	h.mu.Unlock()
	if len(reqs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.RepriceInterval)
	defer cancel()
	h.quote(ctx, reqs)
}

// quote prices pairs and remembers their multipliers for snapshots.
func (h *Hub) quote(ctx context.Context, reqs []quotes.Request) []Update {
	qs, errs := h.pricer.QuoteBatch(ctx, reqs)
	out := make([]Update, 0, len(qs))
	for i, q := range qs {
		if errs[i] != nil {
			h.opts.Logger.Debug("quote for live updates failed", "region", reqs[i].RegionID, "product", reqs[i].ProductType, "err", errs[i])
			continue
		}
		out = append(out, fromChange(quotes.Change(q, q.Multiplier)))
	}
	h.mu.Lock()
	for _, u := range out {
		h.remember(u)
	}
	h.mu.Unlock()
	return out
}

// remember keeps u as its pair's latest value unless a newer one is known;
// h.mu is held.
func (h *Hub) remember(u Update) {
	p := pair{u.RegionID, u.ProductType}
	if l, ok := h.latest[p]; !ok || !u.At.Before(l.At) {
		h.latest[p] = u
	}
}

// dispatch hands an update to every subscription that wants it; it never
// blocks on a subscriber.
func (h *Hub) dispatch(u Update) {
	p := pair{u.RegionID, u.ProductType}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.remember(u)
	for s := range h.subs {
		if s.wants(p) {
			s.offer(p, u, h.m)
		}
	}
}

type connKey struct{}

// connection is one client connection's share of the hub.
type connection struct {
	subs  atomic.Int64
	close context.CancelFunc
}

// WithConnection marks a context as one client connection's: the
// subscriptions started under it count against MaxPerConnection, and a slow
// subscriber closes the connection by cancelling the returned context (the
// websocket transport closes the socket when it ends).
func WithConnection(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	return context.WithValue(ctx, connKey{}, &connection{close: cancel})
}

// Hold counts a subscription against the limits until release is called:
// ErrTooMany (wrapped, naming the limit) when over one.
func (h *Hub) Hold(ctx context.Context) (release func(), err error) {
	conn, _ := ctx.Value(connKey{}).(*connection)
	if conn != nil && conn.subs.Add(1) > int64(h.opts.MaxPerConnection) {
		conn.subs.Add(-1)
		h.m.refused.WithLabelValues("connection").Inc()
		return nil, fmt.Errorf("%w: at most %d per connection", ErrTooMany, h.opts.MaxPerConnection)
	}
	if h.total.Add(1) > int64(h.opts.MaxSubscriptions) {
		h.total.Add(-1)
		if conn != nil {
			conn.subs.Add(-1)
		}
		h.m.refused.WithLabelValues("instance").Inc()
		return nil, fmt.Errorf("%w: at most %d on this instance", ErrTooMany, h.opts.MaxSubscriptions)
	}
	h.m.active.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.total.Add(-1)
			if conn != nil {
				conn.subs.Add(-1)
			}
			h.m.active.Dec()
		})
	}, nil
}

// Subscribe sends a snapshot of every pair the query selects, then their
// changes, until ctx ends or the reader stays behind: then q.OnSlow is
// called, the channel closes and so does the connection (WithConnection).
// Unknown regions or products are refused as quotes.InputError.
func (h *Hub) Subscribe(ctx context.Context, q Query) (<-chan *Update, error) {
	pairs, err := h.pairs(q)
	if err != nil {
		return nil, err
	}
	release, err := h.Hold(ctx)
	if err != nil {
		return nil, err
	}
	// The snapshot: the latest value of each pair, quoted now when the hub
	// has none yet.
	snapshot := make([]*Update, 0, len(pairs))
	var missing []quotes.Request
	h.mu.Lock()
	for _, p := range pairs {
		if u, ok := h.latest[p]; ok {
			snapshot = append(snapshot, &u)
		} else {
			missing = append(missing, quotes.Request{RegionID: p.region, ProductType: p.product})
		}
	}
	h.mu.Unlock()
	if len(missing) > 0 {
		for _, u := range h.quote(ctx, missing) {
			snapshot = append(snapshot, &u)
		}
		slices.SortFunc(snapshot, func(a, b *Update) int {
			return comparePairs(pair{a.RegionID, a.ProductType}, pair{b.RegionID, b.ProductType})
		})
	}
	for _, u := range snapshot {
		u.Snapshot = true
	}

	s := &subscription{want: map[pair]bool{}, pending: map[pair]Update{}, last: map[pair]float64{},
		notify: make(chan struct{}, 1), minChange: q.MinChange, snapshot: snapshot}
	for _, p := range pairs {
		s.want[p] = true
	}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	for _, p := range pairs {
		h.watched[p]++
	}
	h.mu.Unlock()

	out := make(chan *Update)
	go func() {
		defer func() {
			h.mu.Lock()
			delete(h.subs, s)
			for _, p := range pairs {
				if h.watched[p]--; h.watched[p] <= 0 {
					delete(h.watched, p)
				}
			}
			h.mu.Unlock()
			release()
			close(out)
		}()
		if !s.run(ctx, out, h.opts.SlowAfter, h.m) && ctx.Err() == nil {
			h.m.slow.Inc()
			if q.OnSlow != nil {
				q.OnSlow()
			}
			if conn, _ := ctx.Value(connKey{}).(*connection); conn != nil {
				conn.close()
			}
		}
	}()
	return out, nil
}

// pairs resolves a query against the catalog, sorted by region then product.
func (h *Hub) pairs(q Query) ([]pair, error) {
	if q.MinChange < 0 || math.IsNaN(q.MinChange) {
		return nil, &quotes.InputError{Field: "minChange", Msg: "minChange must be 0 or more"}
	}
	regions := h.catalog.Regions()
	byID := make(map[string]rules.Region, len(regions))
	products := map[string]bool{}
	for _, r := range regions {
		byID[r.ID] = r
		for _, p := range r.Products {
			products[p] = true
		}
	}
	for _, id := range q.RegionIDs {
		if _, ok := byID[id]; !ok {
			return nil, &quotes.InputError{Field: "regionIds", Msg: fmt.Sprintf("region %q is not priced here", id), Err: quotes.ErrUnknownRegion}
		}
	}
	for _, p := range q.ProductTypes {
		if !products[p] {
			return nil, &quotes.InputError{Field: "productTypes", Msg: fmt.Sprintf("product type %q is not priced here", p)}
		}
	}
	var out []pair
	for _, r := range regions {
		if len(q.RegionIDs) > 0 && !slices.Contains(q.RegionIDs, r.ID) {
			continue
		}
		for _, p := range r.Products {
			if len(q.ProductTypes) == 0 || slices.Contains(q.ProductTypes, p) {
				out = append(out, pair{r.ID, p})
			}
		}
	}
	slices.SortFunc(out, comparePairs)
	return out, nil
}

func comparePairs(a, b pair) int {
	if c := strings.Compare(a.region, b.region); c != 0 {
		return c
	}
	return strings.Compare(a.product, b.product)
}

func fromChange(c quotes.SurgeChange) Update {
	return Update{RegionID: c.RegionID, ProductType: c.ProductType, Multiplier: c.Multiplier,
		Demand: c.Demand, Supply: c.Supply, Reason: c.Reason, At: c.At}
}

// subscription is one subscriber's state: the pairs it wants, the updates
// not yet read (one per pair: conflated) and the multipliers last sent.
type subscription struct {
	want      map[pair]bool
	minChange float64
	notify    chan struct{}
	snapshot  []*Update // until sent

	mu      sync.Mutex
	pending map[pair]Update
	order   []pair // pending pairs in arrival order

	last map[pair]float64 // owned by run
}

func (s *subscription) wants(p pair) bool { return s.want[p] }

// offer queues an update, replacing one not yet read for the same pair.
func (s *subscription) offer(p pair, u Update, m *metrics) {
	s.mu.Lock()
	if _, ok := s.pending[p]; ok {
		m.conflated.Inc()
	} else {
		s.order = append(s.order, p)
	}
	s.pending[p] = u
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *subscription) take() []Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Update, 0, len(s.order))
	for _, p := range s.order {
		out = append(out, s.pending[p])
	}
	clear(s.pending)
	s.order = s.order[:0]
	return out
}

// run sends the snapshot, then the pending updates that moved enough, until
// ctx ends (true) or the reader leaves one unread for slowAfter (false).
func (s *subscription) run(ctx context.Context, out chan<- *Update, slowAfter time.Duration, m *metrics) bool {
	timer := time.NewTimer(slowAfter)
	defer timer.Stop()
	send := func(u *Update) bool {
		timer.Reset(slowAfter)
		select {
		case out <- u:
			s.last[pair{u.RegionID, u.ProductType}] = u.Multiplier
			m.sent.Inc()
			if !u.Snapshot {
				m.delivery.Observe(time.Since(u.At).Seconds())
			}
			return true
		case <-ctx.Done():
			return true
		case <-timer.C:
			return false
		}
	}
	for _, u := range s.snapshot {
		if !send(u) {
			return false
		}
	}
	s.snapshot = nil // sent: it need not stay in memory
	for {
		select {
		case <-ctx.Done():
			return true
		case <-s.notify:
		}
		for _, u := range s.take() {
			if ctx.Err() != nil {
				return true
			}
			p := pair{u.RegionID, u.ProductType}
			last, seen := s.last[p]
			if seen && math.Abs(u.Multiplier-last) <= s.minChange {
				continue
			}
			if seen {
				u.Previous = &last
			}
			if !send(&u) {
				return false
			}
		}
	}
}
