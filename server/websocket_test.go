package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/live"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/resolvers"
	"github.com/surgeworks/surge/rules"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type oneRegion struct{}

func (oneRegion) Regions() []rules.Region {
	return []rules.Region{{ID: "berlin", Products: []string{"ride"}}}
}

type flatPricer struct{}

func (flatPricer) QuoteBatch(_ context.Context, reqs []quotes.Request) ([]quotes.Quote, []error) {
	out := make([]quotes.Quote, len(reqs))
	for i, r := range reqs {
		out[i] = quotes.Quote{RegionID: r.RegionID, ProductType: r.ProductType, Multiplier: 1, CreatedAt: time.Now()}
	}
	return out, make([]error, len(reqs))
}

type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

// dialWS connects and initialises; a small receive buffer makes the
// server's writes block soon once the client stops reading.
func dialWS(t *testing.T, url string, smallBuffer bool) *wsClient {
	t.Helper()
	d := &net.Dialer{}
	if smallBuffer {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	c, _, err := websocket.Dial(context.Background(), strings.Replace(url, "http", "ws", 1)+"/graphql",
		&websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	w := &wsClient{t, c}
	w.send(map[string]any{"type": "connection_init"})
	if m, err := w.read(); err != nil || m["type"] != "connection_ack" {
		t.Fatalf("connection_init: %v %v", m, err)
	}
	return w
}

func (w *wsClient) send(v any) {
	w.t.Helper()
	b, _ := json.Marshal(v)
	if err := w.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsClient) read() (map[string]any, error) {
	_, b, err := w.c.Read(context.Background())
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// TestSlowSubscriber: a client that stops reading while changes keep
// coming is disconnected, and the others keep receiving.
func TestSlowSubscriber(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	reg := prometheus.NewRegistry()
	hub := live.New(rdb, flatPricer{}, oneRegion{}, live.Options{RepriceInterval: -1, SlowAfter: 100 * time.Millisecond, Registerer: reg})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = hub.Run(ctx) }()
	hs := httptest.NewUnstartedServer(New(&resolvers.Resolver{Live: hub}, testAuth(), nil, Options{WSWriteTimeout: 2 * time.Second}).Handler())
	hs.Listener = smallSendBuffers{hs.Listener}
	hs.Start()
	defer hs.Close()

	subscribe := map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{
		"query": `subscription { surgeUpdated(regionIds: ["berlin"]) { surgeMultiplier snapshot } }`}}
	slow, fast := dialWS(t, hs.URL, true), dialWS(t, hs.URL, false)
	for _, c := range []*wsClient{slow, fast} {
		c.send(subscribe)
		if m, err := c.read(); err != nil || m["type"] != "next" {
			t.Fatalf("snapshot: %v %v", m, err)
		}
	}
	for n, _ := rdb.PubSubNumPat(ctx).Result(); n == 0; n, _ = rdb.PubSubNumPat(ctx).Result() {
		time.Sleep(5 * time.Millisecond)
	}
	// The fast client reads everything and reports the markers (the last
	// change of each batch) it sees.
	markers := make(chan float64, 1)
	go func() {
		for {
			m, err := fast.read()
			if err != nil {
				close(markers)
				return
			}
			var next struct {
				Payload struct {
					Data struct {
						SurgeUpdated struct{ SurgeMultiplier float64 }
					}
				}
			}
			b, _ := json.Marshal(m)
			_ = json.Unmarshal(b, &next)
			if v := next.Payload.Data.SurgeUpdated.SurgeMultiplier; v >= 100 {
				markers <- v
			}
		}
	}()
	// Long reasons (random, so that compression does not shrink them) fill
	// the slow client's socket buffers sooner.
	raw := make([]byte, 6<<10)
	_, _ = rand.Read(raw)
	reason := base64.StdEncoding.EncodeToString(raw)
	batch := func(i int) {
		t.Helper()
		pipe := rdb.Pipeline()
		for j := range 5 {
			m := 1 + float64(j%2)
			if j == 4 {
				m = 100 + float64(i)
			}
			b, _ := json.Marshal(quotes.SurgeChange{RegionID: "berlin", ProductType: "ride", Multiplier: m, Reason: reason, At: time.Now()})
			pipe.Publish(ctx, quotes.SurgeChannel("berlin"), b)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		for v := range markers { // the fast client keeps up, batch after batch
			if v == 100+float64(i) {
				return
			}
		}
		t.Fatalf("the fast client's connection ended at batch %d", i)
	}
	active := func() float64 { return metricValue(t, reg, "surge_live_subscriptions") }
	// Batches until the slow client's buffers are full and the hub gives up on it.
	i := 0
	for ; active() == 2; i++ {
		batch(i)
	}
	if metricValue(t, reg, "surge_live_slow_subscribers_total") != 1 {
		t.Fatalf("slow subscribers %v, want 1", metricValue(t, reg, "surge_live_slow_subscribers_total"))
	}
	batch(i) // the fast one still receives
	for {    // the slow client finds its connection closed once it reads on
		if _, err := slow.read(); err != nil {
			break
		}
	}
}

// smallSendBuffers gives accepted connections a small kernel send buffer
// (without it, Linux grows it to megabytes), so that a client that stops
// reading blocks the server's writes soon.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// metricValue reads a counter or gauge without labels from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0 // not yet reported
}
