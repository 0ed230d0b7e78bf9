package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/quotes"
)

// LiveOptions configures a run of live subscribers. Zero values take the
// defaults.
type LiveOptions struct {
	URL string // the GraphQL endpoint, e.g. http://127.0.0.1:8000/graphql
	// Subscribers each hold one surgeUpdated subscription of every pair
	// (default 1,000), over Connections websockets (default Subscribers/10).
	Subscribers int
	Connections int
	// Changes per second published on Redis while they listen (default
	// 20), for Duration (default 15 s). Each is a SurgeChange stamped with
	// its publication time, as a replica's quote service publishes it.
	Rate     float64
	Duration time.Duration
	Redis    redis.UniversalClient
	// Pairs are the region/product pairs changed, round robin (default
	// berlin/ride).
	Pairs [][2]string
}

// LiveResult summarises a run: the delay from a change's publication to its
// arrival at each subscriber.
type LiveResult struct {
	Subscribers, Changes, Delivered, Expected int
	P50, P99, Max                             time.Duration
}

func (r LiveResult) String() string {
	return fmt.Sprintf("subscribers %d  changes %d  delivered %d of %d  publication → subscriber p50 %s  p99 %s  max %s",
		r.Subscribers, r.Changes, r.Delivered, r.Expected, round(r.P50), round(r.P99), round(r.Max))
}

func (o *LiveOptions) defaults() {
	if o.Subscribers <= 0 {
		o.Subscribers = 1000
	}
	if o.Connections <= 0 {
		o.Connections = max(1, o.Subscribers/10)
	}
	if o.Rate <= 0 {
		o.Rate = 20
	}
	if o.Duration <= 0 {
		o.Duration = 15 * time.Second
	}
	if len(o.Pairs) == 0 {
		o.Pairs = [][2]string{{"berlin", "ride"}}
	}
}

// Subscriptions holds open surgeUpdated subscriptions; Close ends them.
type Subscriptions struct {
	conns []*liveConn
}

// Close closes every connection.
func (s *Subscriptions) Close() {
	for _, c := range s.conns {
		_ = c.ws.Close(websocket.StatusNormalClosure, "")
	}
}

// Subscribe opens n surgeUpdated subscriptions of regionIds (all regions
// when empty) over conns websockets, and returns once every snapshot
// arrived. Received changes go to onChange (may be nil).
func Subscribe(ctx context.Context, url string, n, conns int, regionIDs []string, onChange func(at time.Time)) (*Subscriptions, error) {
	conns = max(1, min(conns, n))
	s := &Subscriptions{}
	var snapshots sync.WaitGroup
	args := ""
	if len(regionIDs) > 0 {
		b, _ := json.Marshal(regionIDs)
		args = "(regionIds: " + string(b) + ")"
	}
	query := `subscription { surgeUpdated` + args + ` { regionId productType surgeMultiplier at reason snapshot } }`
	for i := range conns {
		per := n / conns
		if i < n%conns {
			per++
		}
		c, err := dialLive(ctx, url)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.conns = append(s.conns, c)
		c.onChange, c.snapshots = onChange, &snapshots
		snapshots.Add(per)
		go c.read()
		for j := range per {
			if err := c.send(map[string]any{"id": fmt.Sprint(j), "type": "subscribe", "payload": map[string]any{"query": query}}); err != nil {
				s.Close()
				return nil, err
			}
		}
	}
	done := make(chan struct{})
	go func() { snapshots.Wait(); close(done) }()
	select {
	case <-done:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
}

// RunLive connects opts.Subscribers subscribers, publishes opts.Rate
// changes per second for opts.Duration and measures their delivery.
func RunLive(ctx context.Context, opts LiveOptions) (LiveResult, error) {
	opts.defaults()
	var mu sync.Mutex
	var delays []time.Duration
	var delivered atomic.Int64
	regions := make([]string, 0, len(opts.Pairs))
	for _, p := range opts.Pairs {
		if !slices.Contains(regions, p[0]) {
			regions = append(regions, p[0])
		}
	}
	subs, err := Subscribe(ctx, opts.URL, opts.Subscribers, opts.Connections, regions, func(at time.Time) {
		d := time.Since(at)
		delivered.Add(1)
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	})
	if err != nil {
		return LiveResult{}, err
	}
	defer subs.Close()

	// Publish: the multiplier alternates, so that every change is a move.
	tick := time.NewTicker(time.Duration(float64(time.Second) / opts.Rate))
	defer tick.Stop()
	end := time.After(opts.Duration)
	changes := 0
publish:
	for {
		select {
		case <-ctx.Done():
			return LiveResult{}, ctx.Err()
		case <-end:
			break publish
		case <-tick.C:
			p := opts.Pairs[changes%len(opts.Pairs)]
			m := 1.5 + 0.5*float64(changes/len(opts.Pairs)%2)
			b, _ := json.Marshal(quotes.SurgeChange{RegionID: p[0], ProductType: p[1], Multiplier: m, Reason: liveReason, At: time.Now()})
			if err := opts.Redis.Publish(ctx, quotes.SurgeChannel(p[0]), b).Err(); err != nil {
				return LiveResult{}, fmt.Errorf("publish: %w", err)
			}
			changes++
		}
	}
	// Wait for the stragglers (a change still in flight), at most 5 s.
	expected := changes * opts.Subscribers
	for wait := time.Now(); int(delivered.Load()) < expected && time.Since(wait) < 5*time.Second; {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	r := LiveResult{Subscribers: opts.Subscribers, Changes: changes, Delivered: len(delays), Expected: expected}
	if len(delays) > 0 {
		slices.Sort(delays)
		r.P50, r.P99, r.Max = delays[len(delays)/2], delays[len(delays)*99/100], delays[len(delays)-1]
	}
	return r, nil
}

// liveReason marks the changes RunLive publishes (the server's own
// repricing may publish others meanwhile; they are not counted).
const liveReason = "loadtest"

// liveConn is one graphql-transport-ws connection.
type liveConn struct {
	ws *websocket.Conn
	mu sync.Mutex // writes
	// snapshots is done once per subscription, at its first snapshot.
	snapshots *sync.WaitGroup
	onChange  func(at time.Time)
}

func dialLive(ctx context.Context, url string) (*liveConn, error) {
	ws, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1), &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	ws.SetReadLimit(1 << 20)
	c := &liveConn{ws: ws}
	if err := c.send(map[string]any{"type": "connection_init"}); err != nil {
		return nil, err
	}
	_, b, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(b), "connection_ack") {
		return nil, fmt.Errorf("connection_init: %s %v", b, err)
	}
	return c, nil
}

func (c *liveConn) send(v any) error {
	b, _ := json.Marshal(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ws.Write(context.Background(), websocket.MessageText, b)
}

// read handles the server's messages until the connection ends: pings are
// answered, snapshots counted, changes timed.
func (c *liveConn) read() {
	snapped := map[string]bool{}
	for {
		_, b, err := c.ws.Read(context.Background())
		if err != nil {
			return
		}
		var m struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Payload struct {
				Data struct {
					SurgeUpdated struct {
						At       time.Time `json:"at"`
						Reason   string    `json:"reason"`
						Snapshot bool      `json:"snapshot"`
					} `json:"surgeUpdated"`
				} `json:"data"`
			} `json:"payload"`
		}
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		switch m.Type {
		case "ping":
			_ = c.send(map[string]any{"type": "pong"})
		case "next":
			u := m.Payload.Data.SurgeUpdated
			if u.Snapshot {
				if !snapped[m.ID] {
					snapped[m.ID] = true
					c.snapshots.Done()
				}
				continue
			}
			if c.onChange != nil && u.Reason == liveReason {
				c.onChange(u.At)
			}
		}
	}
}
