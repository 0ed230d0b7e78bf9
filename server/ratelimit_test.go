package server

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/ratelimit"
	"github.com/surgeworks/surge/resolvers"
)

// TestRateLimits: two replicas share each caller's bucket in Redis (per
// key, and per address for anonymous callers); past it a request gets 429
// with Retry-After, every answer the RateLimit headers, and operations over
// a websocket count too.
func TestRateLimits(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr})
	t.Cleanup(func() { rdb.Close() })
	lim := ratelimit.NewLimiter(rdb, ratelimit.Options{})
	// Slow refills (one token a minute): the bursts are what is left.
	opts := Options{Limiter: lim, RatePerClient: 1.0 / 60, RateBurst: 20, AnonymousRate: 1.0 / 60, AnonymousBurst: 5}
	one := New(&resolvers.Resolver{}, testAuth(), nil, opts).Handler()
	two := New(&resolvers.Resolver{}, testAuth(), nil, opts).Handler()
	send := func(h http.Handler, key string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(`{"query":"{ __typename }"}`))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("X-Api-Key", key)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	count := func(key string, n int) (ok, limited int, last *httptest.ResponseRecorder) {
		for i := range n {
			h := one
			if i%2 == 1 {
				h = two
			}
			rec := send(h, key)
			switch rec.Code {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				limited++
				last = rec
			default:
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
		return ok, limited, last
	}
	// Leases make the limits stricter, never looser: a replica may hold
	// tokens it does not use before they expire, so at most the burst
	// passes (all of it when both replicas use their leases in time).
	if ok, limited, last := count("", 12); ok > 5 || ok < 3 || ok+limited != 12 {
		t.Errorf("anonymous over two replicas: %d ok, %d limited; want at most the burst of 5", ok, limited)
	} else {
		if ra, _ := strconv.Atoi(last.Header().Get("Retry-After")); ra < 1 || !strings.Contains(last.Body.String(), `"RATE_LIMITED"`) {
			t.Errorf("429 without Retry-After or code: %v %s", last.Header(), last.Body)
		}
	}
	// The admin key has its own bucket.
	rec := send(one, "k")
	if rec.Code != http.StatusOK || rec.Header().Get("RateLimit-Limit") != "20" || rec.Header().Get("RateLimit-Remaining") == "" || rec.Header().Get("RateLimit-Reset") == "" {
		t.Fatalf("keyed request: %d %v", rec.Code, rec.Header())
	}
	if ok, limited, _ := count("k", 30); ok > 19 || ok < 10 || ok+limited != 30 {
		t.Errorf("key over two replicas: %d ok, %d limited; want at most 19 more of its burst of 20", ok, limited)
	}

	// Over a websocket, each operation takes a token of the connection's caller.
	srv := httptest.NewServer(New(&resolvers.Resolver{}, testAuth(), nil, Options{Limiter: lim, AnonymousRate: 1.0 / 60, AnonymousBurst: 3}).Handler())
	defer srv.Close()
	w := dialWS(t, srv.URL, false) // the upgrade took one
	codes := map[string]int{}
	for i := range 4 {
		w.send(map[string]any{"id": strconv.Itoa(i), "type": "subscribe", "payload": map[string]any{"query": "{ __typename }"}})
		for {
			m, err := w.read()
			if err != nil {
				t.Fatal(err)
			}
			if m["type"] == "complete" {
				break
			}
			if m["type"] == "next" {
				p := m["payload"].(map[string]any)
				if errs, ok := p["errors"].([]any); ok {
					codes[errs[0].(map[string]any)["extensions"].(map[string]any)["code"].(string)]++
				} else {
					codes["ok"]++
				}
			}
		}
	}
	if codes["ok"] > 2 || codes["ok"] < 1 || codes["ok"]+codes["RATE_LIMITED"] != 4 {
		t.Errorf("websocket operations: %v, want at most 2 ok (the burst of 3 less the upgrade's), then RATE_LIMITED", codes)
	}
}
