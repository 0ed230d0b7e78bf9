package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/live"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/resolvers"
	"github.com/surgeworks/surge/rules"
)

func TestSelectionDepth(t *testing.T) {
	cases := []struct {
		query string
		want  int
	}{
		{`{ regions { id } }`, 2},
		{`{ a b c }`, 1},
		{`{ a { b { c { d } } } }`, 4},
		{`{ a { ...F } } fragment F on T { b { c } }`, 3},
		{`{ a { ... on T { b { c { d } } } } }`, 4},
	}
	for _, c := range cases {
		doc, err := parser.ParseQuery(&ast.Source{Input: c.query})
		if err != nil {
			t.Fatal(err)
		}
		// Resolve fragment spreads as validation would.
		for _, op := range doc.Operations {
			resolveSpreads(op.SelectionSet, doc)
			if got := selectionDepth(op.SelectionSet, 0, 100); got != c.want {
				t.Errorf("%s: depth %d, want %d", c.query, got, c.want)
			}
		}
	}
}

func resolveSpreads(set ast.SelectionSet, doc *ast.QueryDocument) {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			resolveSpreads(s.SelectionSet, doc)
		case *ast.InlineFragment:
			resolveSpreads(s.SelectionSet, doc)
		case *ast.FragmentSpread:
			s.Definition = doc.Fragments.ForName(s.Name)
			resolveSpreads(s.Definition.SelectionSet, doc)
		}
	}
}

func TestSelectionDepthStopsPastTheLimit(t *testing.T) {
	doc, err := parser.ParseQuery(&ast.Source{Input: `{ a { b { c { d { e { f } } } } } }`})
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionDepth(doc.Operations[0].SelectionSet, 0, 2); got <= 2 {
		t.Fatalf("depth %d: a query deeper than the limit must report more than the limit", got)
	}
}

// aliases is a query with n aliased fields.
func aliases(n int) string {
	var b strings.Builder
	b.WriteString("{ ")
	for i := range n {
		fmt.Fprintf(&b, "a%d: __typename ", i)
	}
	return b.String() + "}"
}

// operations is a document defining n operations, Q0 to Qn-1.
func operations(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "query Q%d { __typename } ", i)
	}
	return b.String()
}

// ofBytes is { __typename } padded with a comment to n bytes.
func ofBytes(n int) string {
	q := "{ __typename }\n#"
	return q + strings.Repeat("x", n-len(q))
}

// openServer serves res with every role open to anonymous callers.
func openServer(res *resolvers.Resolver, opts Options) *httptest.Server {
	if res == nil {
		res = &resolvers.Resolver{}
	}
	return httptest.NewServer(New(res, auth.New(auth.Options{Open: auth.RoleAdmin}), nil, opts).Handler())
}

// transports sends a request as an outside client would: POST JSON, GET
// with URL parameters, or a subscribe message over a graphql-transport-ws
// websocket (whose "error" message, for an operation refused before it ran,
// stands for HTTP's 422, and "next" for 200).
var transports = map[string]func(t *testing.T, url string, req map[string]any) (int, gqlResponse){
	"POST": func(t *testing.T, url string, req map[string]any) (int, gqlResponse) {
		body, _ := json.Marshal(req)
		resp, err := http.Post(url+"/graphql", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return decodeResponse(t, resp)
	},
	"GET": func(t *testing.T, u string, req map[string]any) (int, gqlResponse) {
		params := url.Values{}
		for k, v := range req {
			if s, ok := v.(string); ok {
				params.Set(k, s)
			} else {
				b, _ := json.Marshal(v)
				params.Set(k, string(b))
			}
		}
		resp, err := http.Get(u + "/graphql?" + params.Encode())
		if err != nil {
			t.Fatal(err)
		}
		return decodeResponse(t, resp)
	},
	"websocket": func(t *testing.T, url string, req map[string]any) (int, gqlResponse) {
		ws := dialWS(t, url, false)
		defer ws.c.CloseNow()
		ws.send(map[string]any{"id": "1", "type": "subscribe", "payload": req})
		for {
			m, err := ws.read()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(m["payload"])
			var out gqlResponse
			switch m["type"] {
			case "next":
				_ = json.Unmarshal(b, &out)
				return http.StatusOK, out
			case "error":
				_ = json.Unmarshal(b, &out.Errors)
				return http.StatusUnprocessableEntity, out
			case "ping":
			default:
				t.Fatalf("unexpected message %v", m)
			}
		}
	},
}

func decodeResponse(t *testing.T, resp *http.Response) (int, gqlResponse) {
	t.Helper()
	defer resp.Body.Close()
	var out gqlResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// checkResponse wants an error with code, or data and no errors when code is "".
func checkResponse(t *testing.T, status int, res gqlResponse, wantStatus int, code string) {
	t.Helper()
	switch {
	case status != wantStatus:
		t.Errorf("status %d %+v, want %d", status, res, wantStatus)
	case code == "" && (len(res.Errors) > 0 || res.Data == nil):
		t.Errorf("%+v, want data", res)
	case code != "" && (len(res.Errors) == 0 || res.Errors[0].Extensions["code"] != code):
		t.Errorf("%+v, want %s", res, code)
	}
}

// TestLimits: the alias, operation and document size limits, at their
// defaults, refuse a request just over them and pass one at them, alike
// over POST, GET and the websocket.
func TestLimits(t *testing.T) {
	hs := openServer(nil, Options{})
	defer hs.Close()
	const refused = "GRAPHQL_VALIDATION_FAILED"
	cases := []struct {
		name, query, operation string
		status                 int
		code                   string
	}{
		{"30 aliases", aliases(30), "", http.StatusOK, ""},
		{"31 aliases", aliases(31), "", http.StatusUnprocessableEntity, refused},
		{"30 aliases through fragments", `{ x: __typename y: __typename ...F } fragment F on Query { ...G ... on Query { ...G } } fragment G on Query { ` + aliases(14)[2:], "", http.StatusOK, ""},
		{"31 aliases through fragments", `{ x: __typename y: __typename z: __typename ...F } fragment F on Query { ...G ... on Query { ...G } } fragment G on Query { ` + aliases(14)[2:], "", http.StatusUnprocessableEntity, refused},
		{"unaliased and self-named fields", `{ __typename __typename: __typename }`, "", http.StatusOK, ""},
		{"10 operations", operations(10), "Q9", http.StatusOK, ""},
		{"11 operations", operations(11), "Q0", http.StatusUnprocessableEntity, refused},
		{"64 KiB document", ofBytes(64 << 10), "", http.StatusOK, ""},
		{"64 KiB + 1 document", ofBytes(64<<10 + 1), "", http.StatusUnprocessableEntity, refused},
	}
	for name, send := range transports {
		for _, c := range cases {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				req := map[string]any{"query": c.query}
				if c.operation != "" {
					req["operationName"] = c.operation
				}
				status, res := send(t, hs.URL, req)
				checkResponse(t, status, res, c.status, c.code)
				if c.code != "" && len(res.Errors) > 0 && !strings.Contains(res.Errors[0].Message, "limit") {
					t.Errorf("message %q does not name the limit", res.Errors[0].Message)
				}
			})
		}
	}
}

// TestNestedFragments: fragments each spreading the next twice, n deep,
// select 2^n fields, which walks through the fragments (gqlgen's complexity,
// the depth limit, introspects) would visit one by one: 40 deep is refused
// in a moment, by a server where anonymous callers hold no role (so that
// introspectionNeedsRole looks), at the root and inside __schema; 9 deep
// (512 fields) is answered.
func TestNestedFragments(t *testing.T) {
	hs := httptest.NewServer(New(&resolvers.Resolver{}, auth.New(auth.Options{}), nil, Options{}).Handler())
	defer hs.Close()
	nested := func(root, on string, n int) string {
		var b strings.Builder
		b.WriteString(root + "\n")
		for i := range n {
			fmt.Fprintf(&b, "fragment F%d on %s { ...F%d ...F%d }\n", i, on, i+1, i+1)
		}
		fmt.Fprintf(&b, "fragment F%d on %s { __typename }", n, on)
		return b.String()
	}
	cases := []struct {
		name, query string
		code        string
	}{
		{"40 deep", nested("{ ...F0 }", "Query", 40), "COMPLEXITY_LIMIT_EXCEEDED"},
		{"40 deep in __schema", nested("{ __schema { types { ...F0 } } }", "__Type", 40), "COMPLEXITY_LIMIT_EXCEEDED"},
		{"9 deep", nested("{ ...F0 }", "Query", 9), ""},
	}
	for _, c := range cases {
		start := time.Now()
		status, res := transports["POST"](t, hs.URL, map[string]any{"query": c.query})
		checkResponse(t, status, res, http.StatusOK, c.code)
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: answered after %s", c.name, d)
		}
	}
}

// TestPersistedQueries: the automatic persisted query protocol as Apollo
// clients speak it, over POST and GET (and the websocket): a hash alone is
// not found until the query has been sent with it once; a document over
// the size limit is refused before it is cached.
func TestPersistedQueries(t *testing.T) {
	hash := func(q string) map[string]any {
		sum := sha256.Sum256([]byte(q))
		return map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	}
	for name, send := range transports {
		t.Run(name, func(t *testing.T) {
			hs := openServer(nil, Options{MaxQueryBytes: 1000})
			defer hs.Close()
			q := `query Persisted { __typename }`
			steps := []struct {
				name   string
				req    map[string]any
				status int
				code   string
			}{
				{"hash alone", map[string]any{"extensions": hash(q)}, http.StatusOK, "PERSISTED_QUERY_NOT_FOUND"},
				{"query and hash", map[string]any{"query": q, "extensions": hash(q)}, http.StatusOK, ""},
				{"hash alone again", map[string]any{"extensions": hash(q)}, http.StatusOK, ""},
				{"hash of another query", map[string]any{"query": q, "extensions": hash(q + " ")}, http.StatusOK, "BAD_REQUEST"},
				{"query over the size limit", map[string]any{"query": ofBytes(1001), "extensions": hash(ofBytes(1001))}, http.StatusUnprocessableEntity, "GRAPHQL_VALIDATION_FAILED"},
				{"its hash alone", map[string]any{"extensions": hash(ofBytes(1001))}, http.StatusOK, "PERSISTED_QUERY_NOT_FOUND"},
			}
			for _, s := range steps {
				status, res := send(t, hs.URL, s.req)
				if checkResponse(t, status, res, s.status, s.code); t.Failed() {
					t.Fatalf("step %q", s.name)
				}
				if s.code == "" && res.Data["__typename"] != "Query" {
					t.Fatalf("step %q: %+v", s.name, res)
				}
			}
		})
	}
}

// oneRegionRules knows the regions berlin and slow.
type oneRegionRules struct{ resolvers.RuleAdmin }

func (oneRegionRules) Region(id string) (rules.Region, bool) {
	return rules.Region{ID: id}, id == "berlin" || id == "slow"
}

// slowFeatures answers for region slow only when ctx ends.
type slowFeatures struct{}

func (slowFeatures) Get(ctx context.Context, regionID string) (features.Values, error) {
	if regionID == "slow" {
		<-ctx.Done()
		return features.Values{}, ctx.Err()
	}
	return features.Values{}, nil
}

// TestRequestTimeout: a resolver still waiting when the request timeout
// passes ends with TIMEOUT, over every transport; a quick one answers.
func TestRequestTimeout(t *testing.T) {
	res := &resolvers.Resolver{Rules: oneRegionRules{}, FeatureStore: slowFeatures{}}
	hs := openServer(res, Options{RequestTimeout: 50 * time.Millisecond})
	defer hs.Close()
	for name, send := range transports {
		t.Run(name, func(t *testing.T) {
			status, out := send(t, hs.URL, map[string]any{"query": `{ features(regionId: "berlin") { stale } }`})
			checkResponse(t, status, out, http.StatusOK, "")
			start := time.Now()
			status, out = send(t, hs.URL, map[string]any{"query": `{ features(regionId: "slow") { stale } }`})
			checkResponse(t, status, out, http.StatusOK, "TIMEOUT")
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("answered after %s", d)
			}
		})
	}
}

// TestRequestTimeoutSparesSubscriptions: a subscription outlives the
// request timeout.
func TestRequestTimeoutSparesSubscriptions(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	hub := live.New(rdb, flatPricer{}, oneRegion{}, live.Options{RepriceInterval: -1, Registerer: prometheus.NewRegistry()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = hub.Run(ctx) }()
	timeout := 50 * time.Millisecond
	hs := openServer(&resolvers.Resolver{Live: hub}, Options{RequestTimeout: timeout})
	defer hs.Close()

	ws := dialWS(t, hs.URL, false)
	ws.send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{
		"query": `subscription { surgeUpdated(regionIds: ["berlin"]) { surgeMultiplier } }`}})
	if m, err := ws.read(); err != nil || m["type"] != "next" {
		t.Fatalf("snapshot: %v %v", m, err)
	}
	for n, _ := rdb.PubSubNumPat(ctx).Result(); n == 0; n, _ = rdb.PubSubNumPat(ctx).Result() {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(4 * timeout)
	b, _ := json.Marshal(quotes.SurgeChange{RegionID: "berlin", ProductType: "ride", Multiplier: 2, At: time.Now()})
	if err := rdb.Publish(ctx, quotes.SurgeChannel("berlin"), b).Err(); err != nil {
		t.Fatal(err)
	}
	if m, err := ws.read(); err != nil || m["type"] != "next" {
		t.Fatalf("after the timeout: %v %v, want the change", m, err)
	}
}

// TestListCosts: a list field costs its selection once per item, so one
// prices call of 100 inputs passes while four of them aliased in one
// operation are refused, though their field count is small.
func TestListCosts(t *testing.T) {
	h := newTestServer(Options{})
	inputs := strings.TrimSuffix(strings.Repeat(`{regionId: "berlin", productType: "ride"}, `, 100), ", ")
	sel := `{ quoteId price currency basePrice surgeMultiplier demandForecast supply degraded warnings validUntil factors { name contribution description } }`
	one := `{ prices(inputs: [` + inputs + `]) ` + sel + ` }`
	call := `prices(inputs: [` + inputs + `]) ` + sel
	four := `{ a: ` + call + ` b: ` + call + ` c: ` + call + ` d: ` + call + ` }`
	for _, c := range []struct {
		name, query string
		refused     bool
	}{
		{"one call of 100 inputs", one, false},
		{"four calls of 100 inputs", four, true},
		{"regions with their current prices", `{ regions { id name currency products currentPrices { productType price surgeMultiplier forecastSource } } }`, false},
		{"a week of minutes", `{ demandHistory(regionId: "berlin", from: "2026-01-01T00:00:00Z", to: "2026-01-08T00:00:00Z") { bucket searches bookings cancels supply } }`, true},
		{"a month of hours", `{ demandHistory(regionId: "berlin", from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z", granularity: HOUR) { bucket searches bookings cancels supply } }`, false},
		{"a day of minutes", `{ demandHistory(regionId: "berlin", from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z") { bucket searches bookings cancels supply } }`, false},
	} {
		_, res := post(t, h, c.query)
		limited := len(res.Errors) > 0 && res.Errors[0].Extensions["code"] == codeComplexity
		if limited != c.refused {
			t.Errorf("%s: refused %v, want %v: %+v", c.name, limited, c.refused, res.Errors)
		}
	}
}
