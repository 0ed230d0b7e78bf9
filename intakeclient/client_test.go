package intakeclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/surgeworks/surge/ingest"
)

// fakeIntake answers POST /v1/events like the intake: per-event statuses,
// duplicates by eventId, type "bogus" rejected. fail, when set, may answer
// a request instead (return true when it wrote an answer).
type fakeIntake struct {
	mu       sync.Mutex
	seen     map[string]int // eventId → times received
	requests [][]string     // eventIds of each request, in arrival order
	keys     []string       // X-Api-Key of each request
	fail     func(n int, w http.ResponseWriter, events []ingest.Event) bool

	inflight, maxInflight atomic.Int64
}

func (f *fakeIntake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cur := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxInflight.Load()
		if cur <= m || f.maxInflight.CompareAndSwap(m, cur) {
			break
		}
	}
	var body struct {
		Events []ingest.Event `json:"events"`
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want a JSON POST", http.StatusBadRequest)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Events) == 0 || len(body.Events) > 1000 {
		http.Error(w, `{"error":"events: want 1 to 1000"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	n := len(f.requests)
	ids := make([]string, len(body.Events))
	for i, ev := range body.Events {
		ids[i] = ev.EventID
	}
	f.requests = append(f.requests, ids)
	f.keys = append(f.keys, r.Header.Get("X-Api-Key"))
	fail := f.fail
	f.mu.Unlock()
	if fail != nil && fail(n, w, body.Events) {
		return
	}
	// The answer in the intake's own types (ingest.Response, ingest.EventResult,
	// ingest.FieldError), so this test follows its contract.
	var out ingest.Response
	f.mu.Lock()
	for i, ev := range body.Events {
		res := ingest.EventResult{Index: i, EventID: ev.EventID, Status: ingest.StatusAccepted}
		switch {
		case ev.Type == "bogus":
			res.Status, res.Errors = ingest.StatusRejected, []ingest.FieldError{{Field: "type", Code: ingest.CodeUnknownType, Message: "unknown event type"}}
			out.Rejected++
		case f.seen[ev.EventID] > 0:
			res.Status = ingest.StatusDuplicate
			out.Duplicates++
		default:
			out.Accepted++
		}
		f.seen[ev.EventID]++
		out.Events = append(out.Events, res)
	}
	f.mu.Unlock()
	status := http.StatusAccepted
	if out.Accepted+out.Duplicates == 0 {
		status = http.StatusBadRequest // every event rejected as invalid
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(out)
}

func newFake() *fakeIntake { return &fakeIntake{seen: map[string]int{}} }

func testEvents(n int, prefix string) []ingest.Event {
	out := make([]ingest.Event, n)
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i := range out {
		out[i] = ingest.Event{EventID: fmt.Sprintf("%s-%d", prefix, i), Type: ingest.TypeSearch, RegionID: "berlin", Timestamp: t0.Add(time.Duration(i) * time.Millisecond)}
	}
	return out
}

// newTestClient returns a client whose waits are recorded, not slept.
func newTestClient(t *testing.T, url string, opts ClientOptions) (*Client, *[]time.Duration) {
	t.Helper()
	opts.URL = url
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	waits := &[]time.Duration{}
	c.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		*waits = append(*waits, d)
		mu.Unlock()
		return ctx.Err()
	}
	return c, waits
}

func TestClientBatchesAndCounts(t *testing.T) {
	fake := newFake()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL, ClientOptions{APIKey: "k-1"})

	events := testEvents(2500, "a")
	events[10].Type = "bogus"
	events[2400].Type = "bogus"
	res, err := c.Send(t.Context(), events)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(fake.requests); got != 3 {
		t.Fatalf("%d requests, want 3", got)
	}
	for i, want := range []int{1000, 1000, 500} {
		if got := len(fake.requests[i]); got != want {
			t.Errorf("request %d held %d events, want %d", i, got, want)
		}
		if fake.keys[i] != "k-1" {
			t.Errorf("request %d X-Api-Key %q, want k-1", i, fake.keys[i])
		}
	}
	if res.Accepted != 2498 || res.Rejected != 2 || res.Duplicate != 0 || res.Unconfirmed != 0 {
		t.Errorf("result %+v, want 2498 accepted and 2 rejected", res)
	}
	if len(res.Rejections) != 2 || res.Rejections[0].EventID != "a-10" || res.Rejections[1].EventID != "a-2400" ||
		!slices.Equal(res.Rejections[0].Reasons, []string{"type: unknown event type"}) ||
		!slices.Equal(res.Rejections[0].Kinds, []string{"type: unknown_type"}) {
		t.Errorf("rejections %+v", res.Rejections)
	}

	// The same events again are duplicates (the bogus ones rejected again).
	if _, err := c.Send(t.Context(), events[:1000]); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Sent != 3500 || st.Accepted != 2498 || st.Duplicate != 999 || st.Rejected != 3 || st.Requests != 4 || st.Retries != 0 {
		t.Errorf("stats %+v", st)
	}
	if st.Reasons["type: unknown_type"] != 3 {
		t.Errorf("reasons %v, want 3 × type: unknown_type", st.Reasons)
	}

	// A batch of invalid events only is a 400 with statuses: counted as
	// rejected, not as a failed request.
	bad := testEvents(3, "bad")
	for i := range bad {
		bad[i].Type = "bogus"
	}
	res, err = c.Send(t.Context(), bad)
	if err != nil || res.Rejected != 3 || res.Failed != 0 {
		t.Errorf("all-invalid batch: %+v, %v; want 3 rejected", res, err)
	}
}

func TestClientRetriesRejectedForNow(t *testing.T) {
	// The intake accepts a batch but rejects some events rate_limited or
	// in_flight, with a Retry-After: only those are sent again.
	fake := newFake()
	var mu sync.Mutex
	limited := map[string]bool{"q-3": true, "q-7": true, "q-8": true}
	fake.fail = func(n int, w http.ResponseWriter, events []ingest.Event) bool {
		mu.Lock()
		defer mu.Unlock()
		if n > 0 {
			return false
		}
		resp := ingest.Response{}
		for i, ev := range events {
			r := ingest.EventResult{Index: i, EventID: ev.EventID, Status: ingest.StatusAccepted}
			switch {
			case ev.EventID == "q-8":
				r.Status, r.Errors = ingest.StatusRejected, []ingest.FieldError{{Field: "eventId", Code: ingest.CodeInFlight, Message: "being ingested by another request"}}
			case limited[ev.EventID]:
				r.Status, r.Errors = ingest.StatusRejected, []ingest.FieldError{{Field: "userId", Code: ingest.CodeRateLimited, Message: "user over its rate limit"}}
			case ev.EventID == "q-9":
				r.Status, r.Errors = ingest.StatusRejected, []ingest.FieldError{{Field: "regionId", Code: ingest.CodeInvalid, Message: "regionId may hold only letters"}}
			}
			resp.Events = append(resp.Events, r)
		}
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(resp)
		return true
	}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, waits := newTestClient(t, srv.URL, ClientOptions{})
	res, err := c.Send(t.Context(), testEvents(10, "q"))
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.requests) != 2 || !slices.Equal(fake.requests[1], []string{"q-3", "q-7", "q-8"}) {
		t.Errorf("requests %v, want the second to resend q-3 q-7 q-8", fake.requests)
	}
	if !slices.Equal(*waits, []time.Duration{3 * time.Second}) {
		t.Errorf("waits %v, want the Retry-After of 3 s", *waits)
	}
	if res.Accepted != 9 || res.Rejected != 1 || res.Rejections[0].EventID != "q-9" {
		t.Errorf("result %+v, want 9 accepted and q-9 rejected", res)
	}
	if st := c.Stats(); st.Sent != 10 || st.Accepted != 9 || st.Rejected != 1 || st.Retries != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestClientRetries(t *testing.T) {
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name string
		// answers for the first requests; the next ones are served normally
		answers []func(w http.ResponseWriter)
		// wantWaits checks each recorded wait
		wantWaits   []func(time.Duration) bool
		wantStats   func(ClientStats) bool
		maxAttempts int
		wantErr     bool
	}{
		{
			name: "503 with Retry-After then 202",
			answers: []func(http.ResponseWriter){func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "2")
				http.Error(w, "kafka unavailable", http.StatusServiceUnavailable)
			}},
			wantWaits: []func(time.Duration) bool{func(d time.Duration) bool { return d == 2*time.Second }},
			wantStats: func(s ClientStats) bool { return s.Unavailable == 1 && s.Retries == 1 && s.Requests == 2 },
		},
		{
			name: "429 with Retry-After seconds, then with a date",
			answers: []func(http.ResponseWriter){
				func(w http.ResponseWriter) {
					w.Header().Set("Retry-After", "7")
					http.Error(w, "slow down", http.StatusTooManyRequests)
				},
				func(w http.ResponseWriter) {
					w.Header().Set("Retry-After", date)
					http.Error(w, "slow down", http.StatusTooManyRequests)
				},
			},
			wantWaits: []func(time.Duration) bool{
				func(d time.Duration) bool { return d == 7*time.Second },
				// capped by MaxRetryAfter (60 s) though the date is 90 s away
				func(d time.Duration) bool { return d == time.Minute },
			},
			wantStats: func(s ClientStats) bool { return s.RateLimited == 2 && s.Retries == 2 && s.Requests == 3 },
		},
		{
			name: "503 and 500 without Retry-After: jittered doubling backoff",
			answers: []func(http.ResponseWriter){
				func(w http.ResponseWriter) { http.Error(w, "", http.StatusServiceUnavailable) },
				func(w http.ResponseWriter) { http.Error(w, "", http.StatusInternalServerError) },
				func(w http.ResponseWriter) { http.Error(w, "", http.StatusBadGateway) },
			},
			wantWaits: []func(time.Duration) bool{
				func(d time.Duration) bool { return d >= 125*time.Millisecond && d <= 250*time.Millisecond },
				func(d time.Duration) bool { return d >= 250*time.Millisecond && d <= 500*time.Millisecond },
				func(d time.Duration) bool { return d >= 500*time.Millisecond && d <= time.Second },
			},
			wantStats: func(s ClientStats) bool { return s.Retries == 3 && s.Requests == 4 },
		},
		{
			name: "connection dropped without an answer",
			answers: []func(http.ResponseWriter){func(w http.ResponseWriter) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			}},
			wantWaits: []func(time.Duration) bool{func(d time.Duration) bool { return d > 0 }},
			wantStats: func(s ClientStats) bool { return s.ConnErrors == 1 && s.Retries == 1 },
		},
		{
			name: "gives up after MaxAttempts",
			answers: []func(http.ResponseWriter){
				func(w http.ResponseWriter) { http.Error(w, "", http.StatusServiceUnavailable) },
				func(w http.ResponseWriter) { http.Error(w, "", http.StatusServiceUnavailable) },
				func(w http.ResponseWriter) { http.Error(w, "", http.StatusServiceUnavailable) },
			},
			maxAttempts: 3,
			wantErr:     true,
			wantWaits:   []func(time.Duration) bool{func(time.Duration) bool { return true }, func(time.Duration) bool { return true }},
			wantStats:   func(s ClientStats) bool { return s.Sent == 0 && s.Requests == 3 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFake()
			fake.fail = func(n int, w http.ResponseWriter, _ []ingest.Event) bool {
				if n < len(tt.answers) {
					tt.answers[n](w)
					return true
				}
				return false
			}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			c, waits := newTestClient(t, srv.URL, ClientOptions{MaxAttempts: tt.maxAttempts})
			events := testEvents(300, "r")
			res, err := c.Send(t.Context(), events)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && res.Accepted != 300 {
				t.Errorf("accepted %d, want 300 (%+v)", res.Accepted, res)
			}
			if len(*waits) != len(tt.wantWaits) {
				t.Fatalf("waits %v, want %d", *waits, len(tt.wantWaits))
			}
			for i, ok := range tt.wantWaits {
				if !ok((*waits)[i]) {
					t.Errorf("wait %d was %v", i, (*waits)[i])
				}
			}
			if st := c.Stats(); !tt.wantStats(st) {
				t.Errorf("stats %+v", st)
			}
			// Every attempt resent the same events, in the same order.
			for i, ids := range fake.requests {
				if !slices.Equal(ids, fake.requests[0]) {
					t.Errorf("request %d sent other events than the first", i)
				}
			}
		})
	}
}

func TestClientRefusedRequests(t *testing.T) {
	t.Run("413 splits the batch", func(t *testing.T) {
		fake := newFake()
		fake.fail = func(_ int, w http.ResponseWriter, events []ingest.Event) bool {
			if len(events) > 300 {
				http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
				return true
			}
			return false
		}
		srv := httptest.NewServer(fake)
		defer srv.Close()
		c, _ := newTestClient(t, srv.URL, ClientOptions{})
		res, err := c.Send(t.Context(), testEvents(1000, "s"))
		if err != nil || res.Accepted != 1000 {
			t.Fatalf("accepted %d, err %v; want 1000", res.Accepted, err)
		}
		for id, n := range fake.seen {
			if n != 1 {
				t.Errorf("%s accepted %d times", id, n)
			}
		}
		if len(fake.seen) != 1000 {
			t.Errorf("%d distinct events arrived, want 1000", len(fake.seen))
		}
	})
	t.Run("400 without statuses fails the batch and goes on", func(t *testing.T) {
		fake := newFake()
		fake.fail = func(n int, w http.ResponseWriter, _ []ingest.Event) bool {
			if n == 0 {
				http.Error(w, `{"error":{"code":"INVALID_REQUEST","message":"bad"}}`, http.StatusBadRequest)
				return true
			}
			return false
		}
		srv := httptest.NewServer(fake)
		defer srv.Close()
		c, _ := newTestClient(t, srv.URL, ClientOptions{BatchSize: 100})
		res, err := c.Send(t.Context(), testEvents(200, "b"))
		if err != nil {
			t.Fatal(err)
		}
		st := c.Stats()
		if res.Failed != 100 || res.Accepted != 100 || st.Failed != 100 || st.Done() != 200 || len(st.RequestErrors) != 1 ||
			!strings.Contains(st.RequestErrors[0], "400") {
			t.Errorf("result %+v, stats %+v", res, st)
		}
	})
	t.Run("401 stops", func(t *testing.T) {
		fake := newFake()
		fake.fail = func(_ int, w http.ResponseWriter, _ []ingest.Event) bool {
			http.Error(w, "unknown api key", http.StatusUnauthorized)
			return true
		}
		srv := httptest.NewServer(fake)
		defer srv.Close()
		c, _ := newTestClient(t, srv.URL, ClientOptions{BatchSize: 100})
		_, err := c.Send(t.Context(), testEvents(300, "u"))
		if err == nil || !strings.Contains(err.Error(), "401") || len(fake.requests) != 1 {
			t.Errorf("err %v after %d requests, want a 401 error after one", err, len(fake.requests))
		}
	})
}

func TestStream(t *testing.T) {
	fake := newFake()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL, ClientOptions{Senders: 3, BatchSize: 250})
	s := c.Stream(t.Context())
	events := testEvents(5003, "st")
	for _, ev := range events {
		if err := s.Send(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Queued != 5003 || st.Sent != 5003 || st.Accepted != 5003 {
		t.Errorf("stats %+v", st)
	}
	if len(fake.seen) != 5003 {
		t.Errorf("%d distinct events arrived, want 5003", len(fake.seen))
	}
	for _, ids := range fake.requests {
		if len(ids) > 250 {
			t.Errorf("a request held %d events, more than the batch size", len(ids))
		}
	}
	if m := fake.maxInflight.Load(); m > 3 {
		t.Errorf("%d requests in flight at once, more than 3 senders", m)
	}
}

func TestStreamFails(t *testing.T) {
	fake := newFake()
	fake.fail = func(_ int, w http.ResponseWriter, _ []ingest.Event) bool {
		http.Error(w, "", http.StatusServiceUnavailable)
		return true
	}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL, ClientOptions{BatchSize: 10, MaxAttempts: 2})
	s := c.Stream(t.Context())
	var sendErr error
	for _, ev := range testEvents(100_000, "f") {
		if sendErr = s.Send(t.Context(), ev); sendErr != nil {
			break
		}
	}
	closeErr := s.Close()
	if sendErr == nil || closeErr == nil || !strings.Contains(closeErr.Error(), "gave up after 2 attempts") {
		t.Errorf("send error %v, close error %v; want both to report the undeliverable batch", sendErr, closeErr)
	}
}

func TestParseAnswer(t *testing.T) {
	events := testEvents(3, "p")
	tests := []struct {
		name, body                   string
		acc, dup, rej, unconf        int
		firstRejectedID, firstReason string
	}{
		{"results array", `{"results":[{"status":"accepted"},{"status":"duplicate"},{"status":"rejected","eventId":"p-2","errors":[{"field":"regionId","message":"missing"}]}]}`,
			1, 1, 1, 0, "p-2", "regionId: missing"},
		{"top-level array, ids from positions", `[{"status":"rejected","errors":["bad timestamp"]},{"status":"ACCEPTED"},{"status":"accepted"}]`,
			2, 0, 1, 0, "p-0", "bad timestamp"},
		{"nested, index given", `{"data":{"summary":{"accepted":1},"events":[{"index":1,"status":"rejected","error":"too late"},{"status":"accepted"},{"status":"accepted"}]}}`,
			2, 0, 1, 0, "p-1", "too late"},
		{"prefers the array with one element per event", `{"a":[{"status":"accepted"}],"b":[{"status":"duplicate"},{"status":"duplicate"},{"status":"duplicate"}]}`,
			0, 3, 0, 0, "", ""},
		{"fewer statuses than events", `{"results":[{"status":"accepted"}]}`, 1, 0, 0, 2, "", ""},
		{"unknown status", `{"results":[{"status":"accepted"},{"status":"queued"},{"status":"accepted"}]}`, 2, 0, 0, 1, "", ""},
		{"counts only", `{"accepted":2,"duplicates":1}`, 2, 1, 0, 0, "", ""},
		{"the intake's totals", `{"accepted":2,"duplicates":1,"rejected":0,"events":[{"index":0,"eventId":"p-0","status":"accepted"},{"index":1,"eventId":"p-1","status":"duplicate"},{"index":2,"eventId":"p-2","status":"accepted"}]}`,
			2, 1, 0, 0, "", ""},
		{"the intake's answer with a rejection", `{"accepted":2,"duplicates":0,"rejected":1,"events":[{"index":0,"eventId":"p-0","status":"accepted"},{"index":1,"eventId":"p-1","status":"rejected","errors":[{"field":"price","code":"required","message":"a booking needs a price"}]},{"index":2,"eventId":"p-2","status":"accepted"}]}`,
			2, 0, 1, 0, "p-1", "price: a booking needs a price"},
		{"totals that do not add up are not trusted", `{"accepted":5,"duplicates":0,"rejected":0,"events":[{"status":"accepted"},{"status":"duplicate"}]}`,
			1, 1, 0, 1, "", ""},
		{"rate_limited and in_flight are left for a retry", `{"events":[{"index":0,"status":"rejected","errors":[{"field":"userId","code":"rate_limited","message":"later"}]},{"index":1,"status":"rejected","errors":[{"field":"eventId","code":"in_flight","message":"later"}]},{"index":2,"status":"rejected","errors":[{"field":"type","code":"unknown_type","message":"no"}]}]}`,
			0, 0, 1, 0, "p-2", "type: no"},
		{"not JSON", `accepted`, 0, 0, 0, 3, "", ""},
		{"empty", ``, 0, 0, 0, 3, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, retry, _ := parseAnswer([]byte(tt.body), events)
			var retryIDs []string
			for _, ev := range retry {
				retryIDs = append(retryIDs, ev.EventID)
			}
			if want := map[bool][]string{true: {"p-0", "p-1"}}[strings.Contains(tt.name, "retry")]; !slices.Equal(retryIDs, want) {
				t.Errorf("left for a retry: %v, want %v", retryIDs, want)
			}
			if r.Accepted != tt.acc || r.Duplicate != tt.dup || r.Rejected != tt.rej || r.Unconfirmed != tt.unconf {
				t.Fatalf("got %+v, want %d/%d/%d/%d", r, tt.acc, tt.dup, tt.rej, tt.unconf)
			}
			if tt.firstRejectedID != "" {
				if len(r.Rejections) == 0 || r.Rejections[0].EventID != tt.firstRejectedID ||
					len(r.Rejections[0].Reasons) == 0 || r.Rejections[0].Reasons[0] != tt.firstReason {
					t.Errorf("rejections %+v, want %s: %s", r.Rejections, tt.firstRejectedID, tt.firstReason)
				}
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"0.5", 500 * time.Millisecond},
		{"-1", 0},
		{"soon", 0},
		{"3600", time.Minute}, // capped
		{now.Add(20 * time.Second).Format(http.TimeFormat), 20 * time.Second},
		{now.Add(-20 * time.Second).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.v, now, time.Minute); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

// BenchmarkClientSend measures the client's own cost per event (encoding
// the batch, reading a full per-event answer) against a server that
// answers at once.
func BenchmarkClientSend(b *testing.B) {
	events := testEvents(1000, "bench")
	for i := range events {
		events[i].UserID, events[i].ProductType = fmt.Sprintf("user-%d", i), "ride"
	}
	var resp ingest.Response
	for i, ev := range events {
		resp.Events = append(resp.Events, ingest.EventResult{Index: i, EventID: ev.EventID, Status: ingest.StatusAccepted})
	}
	resp.Accepted = len(events)
	answer, _ := json.Marshal(resp)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
		w.Write(answer)
	}))
	defer srv.Close()
	c, err := NewClient(ClientOptions{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Send(b.Context(), events); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(events))/b.Elapsed().Seconds(), "events/s")
}

// TestEncodeBatch checks the hand-written encoding against the intake's
// decoder and against encoding/json, for every field of Event.
func TestEncodeBatch(t *testing.T) {
	// A new field of ingest.Event must be added to appendEvent (or, if the intake
	// sets it, to the list of fields a client leaves out).
	var names []string
	et := reflect.TypeFor[ingest.Event]()
	for i := range et.NumField() {
		names = append(names, strings.Split(et.Field(i).Tag.Get("json"), ",")[0])
	}
	if want := []string{"eventId", "type", "regionId", "timestamp", "userId", "userHash", "productType", "price",
		"availableSupply", "signal", "value", "quoteId", "experiment", "receivedAt", "backfill"}; !slices.Equal(names, want) {
		t.Fatalf("Event's JSON fields are now %v: update appendEvent", names)
	}

	paris := time.FixedZone("CET", 3600)
	events := []ingest.Event{
		{EventID: "e-1", Type: ingest.TypeSearch, RegionID: "berlin", Timestamp: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)},
		{EventID: "e-2", Type: ingest.TypeBooking, RegionID: "paris", Timestamp: time.Date(2026, 11, 25, 13, 0, 0, 123456789, paris),
			UserID: `ü "quoted" \ <tag> & ` + "\n\t\x01", ProductType: "xl", Price: fptr(12.5), QuoteID: "q-1",
			Experiment: &ingest.Experiment{ID: "exp-1", Variant: "treatment"}, Backfill: true, UserHash: "set-by-intake", ReceivedAt: time.Now()},
		{EventID: "e-3", Type: ingest.TypeSupplyUpdate, RegionID: "nyc", Timestamp: time.Date(2026, 1, 1, 0, 0, 0, 1, time.UTC), AvailableSupply: fptr(0)},
		{EventID: "e-4", Type: ingest.TypeExternalSignal, RegionID: "sf", Timestamp: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Signal: ingest.SignalWeather, Value: fptr(1e-7)},
		{EventID: "e-5", Type: ingest.TypeBooking, RegionID: "sf", Timestamp: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Price: fptr(1e21), Experiment: &ingest.Experiment{}},
		{EventID: "e-6", Type: ingest.TypeBooking, RegionID: "sf", Timestamp: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Price: fptr(0.1 + 0.2)},
	}
	body, err := encodeBatch(events)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &got); err != nil || len(got.Events) != len(events) {
		t.Fatalf("body %s: %v", body, err)
	}
	for i, raw := range got.Events {
		want := events[i]
		want.UserHash, want.ReceivedAt = "", time.Time{}

		// The intake reads back the event sent.
		dec, errs := ingest.DecodeEventJSON(raw)
		if len(errs) > 0 {
			t.Fatalf("intake cannot decode %s: %v", raw, errs)
		}
		if !dec.Timestamp.Equal(want.Timestamp) {
			t.Errorf("event %d timestamp %v, want %v", i, dec.Timestamp, want.Timestamp)
		}
		dec.Timestamp = want.Timestamp // equal instants; the zone may differ
		if !reflect.DeepEqual(dec, want) {
			t.Errorf("event %d decoded by the intake as\n%+v\nwant\n%+v", i, dec, want)
		}

		// The same JSON value as encoding/json gives.
		ref, _ := json.Marshal(want)
		var a, b any
		json.Unmarshal(raw, &a)
		json.Unmarshal(ref, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("event %d encoded as\n%s\nencoding/json gives\n%s", i, raw, ref)
		}
	}
	nan := events[0]
	nan.Value = fptr(math.NaN())
	if _, err := encodeBatch([]ingest.Event{nan}); err == nil {
		t.Error("NaN encoded")
	}
}
