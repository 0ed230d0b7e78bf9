package ingest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/ratelimit"
)

const intakePartitions = 3

// intakeEnv is an Intake on a real Redis and a real (kfake) broker, served
// over HTTP, with a fixed clock.
type intakeEnv struct {
	t      testing.TB
	redis  *devenv.Process
	rdb    *redis.Client
	kafka  *devenv.Kafka
	writer *EventWriter
	in     *Intake
	srv    *httptest.Server
	now    time.Time
}

func newIntakeEnv(t testing.TB, opts IntakeOptions, limits bool) *intakeEnv {
	t.Helper()
	e := &intakeEnv{t: t, now: time.Now().UTC().Truncate(time.Millisecond)}
	e.redis = testenv.Redis(t)
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr, MaxRetries: -1, DialTimeout: time.Second, PoolSize: 32})
	t.Cleanup(func() { e.rdb.Close() })
	e.kafka = testenv.KafkaWith(t, devenv.KafkaOptions{Topics: EventTopics, Partitions: intakePartitions})
	e.writer = NewEventWriter(e.kafka.Brokers)
	t.Cleanup(func() { e.writer.Close() })
	var lim *ratelimit.Limiter
	if limits {
		lim = ratelimit.NewLimiter(e.rdb, ratelimit.Options{})
	}
	if opts.UserHashKey == nil {
		opts.UserHashKey = []byte("test-user-hash-key")
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return e.now }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	in, err := NewIntake(e.rdb, e.writer, lim, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.in = in
	authn := auth.New(auth.Options{Verifiers: []auth.Verifier{anyKey{}}, Open: auth.RoleSupply})
	e.srv = httptest.NewServer(authn.Middleware(in.Handler()))
	t.Cleanup(e.srv.Close)
	return e
}

// anyKey takes every key at its word: the client "key:<key>", with the
// supply role.
type anyKey struct{}

func (anyKey) Verify(_ context.Context, token string) (auth.Principal, bool, error) {
	return auth.Principal{ID: "key:" + token, Name: token, Roles: auth.RoleSupply}, true, nil
}

// keyClient is the client of an API key sent to the test server.
func keyClient(key string) ClientID { return ClientID{ID: "key:" + key, Supply: true} }

// dedupKey is the dedup key of a client's event id.
func dedupKey(c ClientID, id string) string { return DedupKey(StoredEventID(c, id)) }

// event is a valid event of the given type, dated a second before now.
func (e *intakeEnv) event(id, typ, region, user string) Event {
	ev := Event{EventID: id, Type: typ, RegionID: region, UserID: user, Timestamp: e.now.Add(-time.Second)}
	switch typ {
	case TypeBooking:
		ev.Price = ptr(17.5)
	case TypeSupplyUpdate:
		ev.AvailableSupply = ptr(12)
	case TypeExternalSignal:
		ev.Signal, ev.Value = SignalTraffic, ptr(0.4)
	}
	return ev
}

// events are n valid searches of one region and user, ids prefix-0…
func (e *intakeEnv) events(prefix string, n int, user string) []Event {
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = e.event(fmt.Sprintf("%s-%d", prefix, i), TypeSearch, "berlin", user)
	}
	return evs
}

func body(items ...any) string {
	b, err := json.Marshal(map[string]any{"events": items})
	if err != nil {
		panic(err)
	}
	return string(b)
}

func asAny(evs []Event) []any {
	out := make([]any, len(evs))
	for i := range evs {
		out[i] = evs[i]
	}
	return out
}

type answer struct {
	status int
	header http.Header
	raw    []byte
	resp   Response
	err    struct{ Code, Message string }
}

// post sends a body to the intake; apiKey "" sends none.
func (e *intakeEnv) post(apiKey string, r io.Reader) answer {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+EventsPath, r)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set(auth.APIKeyHeader, apiKey)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	a := answer{status: res.StatusCode, header: res.Header}
	if a.raw, err = io.ReadAll(res.Body); err != nil {
		e.t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("Content-Type %q", ct)
	}
	var wrapper struct {
		Error *struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(a.raw, &wrapper); err != nil {
		e.t.Fatalf("answer %d is not JSON: %s", a.status, a.raw)
	}
	if wrapper.Error != nil {
		a.err = *wrapper.Error
	} else if err := json.Unmarshal(a.raw, &a.resp); err != nil {
		e.t.Fatalf("answer %d: %v: %s", a.status, err, a.raw)
	}
	return a
}

func (e *intakeEnv) send(apiKey string, evs ...Event) answer {
	e.t.Helper()
	return e.post(apiKey, strings.NewReader(body(asAny(evs)...)))
}

// statuses lists the per-event statuses of an answer.
func (a answer) statuses() []Status {
	var s []Status
	for _, r := range a.resp.Events {
		s = append(s, r.Status)
	}
	return s
}

func repeat(s Status, n int) []Status { return slices.Repeat([]Status{s}, n) }

// dedupKeys returns the dedup keys in Redis with their values.
func (e *intakeEnv) dedupKeys() map[string]string {
	e.t.Helper()
	ctx := context.Background()
	keys, err := e.rdb.Keys(ctx, "dedup:*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		v, err := e.rdb.Get(ctx, k).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

type record struct {
	topic     string
	partition int
	key       string
	ns        string // the event id's client namespace
	ev        Event
}

// records reads every record of the event topics.
func (e *intakeEnv) records() []record {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []record
	for _, topic := range EventTopics {
		for p := range intakePartitions {
			conn, err := kafka.DialLeader(ctx, "tcp", e.kafka.Brokers[0], topic, p)
			if err != nil {
				e.t.Fatal(err)
			}
			last, err := conn.ReadLastOffset()
			conn.Close()
			if err != nil {
				e.t.Fatal(err)
			}
			if last == 0 {
				continue
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.kafka.Brokers, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					e.t.Fatalf("read %s/%d: %v", topic, p, err)
				}
				ev, err := DecodeEvent(m.Value)
				if err != nil {
					e.t.Fatalf("record %s/%d@%d: %v", topic, p, m.Offset, err)
				}
				ns, id, ok := strings.Cut(ev.EventID, ":")
				if !ok || len(ns) != 12 {
					e.t.Fatalf("record %s/%d@%d: event id %q without a client namespace", topic, p, m.Offset, ev.EventID)
				}
				ev.EventID = id
				out = append(out, record{topic, p, string(m.Key), ns, ev})
				if m.Offset >= last-1 {
					break
				}
			}
			r.Close()
		}
	}
	return out
}

// onceEach checks that Kafka holds exactly the given eventIds, each once.
func (e *intakeEnv) onceEach(ids ...string) {
	e.t.Helper()
	count := map[string]int{}
	for _, r := range e.records() {
		count[r.ev.EventID]++
	}
	for _, id := range ids {
		if count[id] != 1 {
			e.t.Errorf("event %s is on Kafka %d times, want once", id, count[id])
		}
		delete(count, id)
	}
	for id, n := range count {
		e.t.Errorf("unexpected event %s on Kafka (%d times)", id, n)
	}
}

func ids(evs []Event) []string {
	out := make([]string, len(evs))
	for i := range evs {
		out[i] = evs[i].EventID
	}
	return out
}

// TestIntakeBadInput sends the bad input of issue 3 — each request holding
// valid events too — and checks each error, and that nothing at all was
// accepted: no dedup key, no record on Kafka.
func TestIntakeBadInput(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, true)
	valid := body(e.event("ok-1", TypeSearch, "berlin", "u1"))
	manyValid := make([]any, 1001)
	for i := range manyValid {
		manyValid[i] = e.event("many-"+strconv.Itoa(i), TypeSearch, "berlin", "")
	}
	huge := `{"events":[{"eventId":"big-1","type":"search","regionId":"berlin","timestamp":"` +
		e.now.Format(time.RFC3339) + `","pad":"` + strings.Repeat("x", 2<<20) + `"}]}`

	type chunked struct{ io.Reader } // hides the length: sent chunked, no Content-Length
	tests := []struct {
		name   string
		method string
		body   io.Reader
		status int
		code   string
	}{
		{"invalid JSON", "", strings.NewReader(`{"events": [{"eventId": "x"`), 400, "INVALID_JSON"},
		{"trailing data after valid events", "", strings.NewReader(valid + ` {"events": []}`), 400, "INVALID_JSON"},
		{"not an object", "", strings.NewReader(`[` + valid + `]`), 400, "INVALID_REQUEST"},
		{"no events field", "", strings.NewReader(`{"event": []}`), 400, "INVALID_REQUEST"},
		{"events null", "", strings.NewReader(`{"events": null}`), 400, "INVALID_REQUEST"},
		{"events not an array", "", strings.NewReader(`{"events": {"eventId": "x"}}`), 400, "INVALID_REQUEST"},
		{"no events", "", strings.NewReader(`{"events": []}`), 400, "INVALID_REQUEST"},
		{"1,001 valid events", "", strings.NewReader(body(manyValid...)), 413, "TOO_MANY_EVENTS"},
		{"body over 2 MiB", "", strings.NewReader(huge), 413, "PAYLOAD_TOO_LARGE"},
		{"body over 2 MiB, chunked", "", chunked{strings.NewReader(huge)}, 413, "PAYLOAD_TOO_LARGE"},
		{"GET", http.MethodGet, nil, 405, "METHOD_NOT_ALLOWED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a answer
			if tt.method != "" {
				res, err := e.srv.Client().Get(e.srv.URL + EventsPath)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != tt.status || res.Header.Get("Allow") != http.MethodPost {
					t.Fatalf("GET: %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
				}
				return
			}
			a = e.post("k", tt.body)
			if a.status != tt.status || a.err.Code != tt.code || a.err.Message == "" {
				t.Fatalf("got %d %s, want %d %s", a.status, a.raw, tt.status, tt.code)
			}
		})
	}

	// A batch of bad events only: each gets its own errors; the request is a 400.
	bad := []any{
		map[string]any{"eventId": "b-0", "type": "click", "regionId": "berlin", "timestamp": e.now.Format(time.RFC3339)},
		map[string]any{"eventId": "b-1", "type": "search", "timestamp": e.now.Format(time.RFC3339)},
		map[string]any{"eventId": "b-2", "type": "search", "regionId": "berlin", "timestamp": e.now.Add(time.Minute).Format(time.RFC3339)},
		map[string]any{"eventId": "b-3", "type": "search", "regionId": "berlin", "timestamp": e.now.Add(-25 * time.Hour).Format(time.RFC3339)},
		map[string]any{"eventId": "b-4", "type": "booking", "regionId": "berlin", "timestamp": e.now.Format(time.RFC3339), "price": "abc"},
		map[string]any{"eventId": "b-5", "type": "search", "regionId": "berlin", "timestamp": "yesterday"},
		"not an event",
		map[string]any{"type": "search", "regionId": "berlin", "timestamp": e.now.Format(time.RFC3339)},
	}
	want := []FieldError{
		{"type", CodeUnknownType, ""}, {"regionId", CodeRequired, ""}, {"timestamp", CodeInFuture, ""}, {"timestamp", CodeTooLate, ""},
		{"price", CodeWrongType, ""}, {"timestamp", CodeInvalid, ""}, {"", CodeWrongType, ""}, {"eventId", CodeRequired, ""},
	}
	a := e.post("k", strings.NewReader(body(bad...)))
	if a.status != 400 || a.resp.Rejected != len(bad) || a.resp.Accepted+a.resp.Duplicates != 0 {
		t.Fatalf("all-bad batch: %d %s", a.status, a.raw)
	}
	for i, r := range a.resp.Events {
		if r.Index != i || r.Status != StatusRejected || len(r.Errors) != 1 ||
			r.Errors[0].Field != want[i].Field || r.Errors[0].Code != want[i].Code || r.Errors[0].Message == "" {
			t.Errorf("event %d: %+v, want one error %s/%s", i, r, want[i].Field, want[i].Code)
		}
	}

	// The Go entry point refuses empty and oversized requests alike.
	if _, err := e.in.Ingest(context.Background(), keyClient("k"), nil); !errors.Is(err, ErrNoEvents) {
		t.Errorf("Ingest(no events) = %v", err)
	}
	evs := make([]Event, 1001)
	for i := range evs {
		evs[i] = e.event("go-"+strconv.Itoa(i), TypeSearch, "berlin", "")
	}
	if _, err := e.in.Ingest(context.Background(), keyClient("k"), evs); !errors.Is(err, ErrTooManyEvents) {
		t.Errorf("Ingest(1,001 events) = %v", err)
	}

	if keys := e.dedupKeys(); len(keys) != 0 {
		t.Errorf("dedup keys left: %v", keys)
	}
	e.onceEach() // nothing on Kafka
}

// observedProducer is the real writer with a look at Redis while Kafka has
// not answered yet.
type observedProducer struct {
	Producer
	during func(msgs []kafka.Message)
}

func (p observedProducer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	p.during(msgs)
	return p.Producer.WriteMessages(ctx, msgs...)
}

// TestIntakeMixedBatch: valid events of every type are accepted next to
// rejected ones; records carry the right topic, key, partition, user hash
// and receipt time; dedup keys are pending while Kafka works and final
// after.
func TestIntakeMixedBatch(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, true)
	var pending []string
	var pendingTTL time.Duration
	e.in.producer = observedProducer{e.writer, func(msgs []kafka.Message) {
		ev, _ := DecodeEvent(msgs[0].Value)
		pending = append(pending, e.rdb.Get(context.Background(), DedupKey(ev.EventID)).Val())
		pendingTTL = e.rdb.PTTL(context.Background(), DedupKey(ev.EventID)).Val()
	}}

	search := e.event("m-0", TypeSearch, "berlin", "alice")
	search.Experiment, search.QuoteID, search.ProductType = &Experiment{ID: "exp1", Variant: "B"}, "q-1", "ride"
	booking := e.event("m-1", TypeBooking, "paris", "bob")
	supply := e.event("m-2", TypeSupplyUpdate, "berlin", "")
	signal := e.event("m-3", TypeExternalSignal, "nyc", "")
	cancel := e.event("m-4", TypeCancel, "london", "alice")
	items := []any{
		search, booking, supply, signal, cancel,
		map[string]any{"eventId": "m-5", "type": "teleport", "regionId": "berlin", "timestamp": e.now.Format(time.RFC3339)},
		json.RawMessage(`{"eventId":"m-6","type":"booking","regionId":"berlin","timestamp":"` + e.now.Format(time.RFC3339) + `","price":"abc"}`),
		search, // the same eventId again in the same request
	}
	a := e.post("client-key", strings.NewReader(body(items...)))
	wantStatus := []Status{StatusAccepted, StatusAccepted, StatusAccepted, StatusAccepted, StatusAccepted, StatusRejected, StatusRejected, StatusDuplicate}
	if a.status != http.StatusAccepted || !slices.Equal(a.statuses(), wantStatus) ||
		a.resp.Accepted != 5 || a.resp.Duplicates != 1 || a.resp.Rejected != 2 || a.header.Get("Retry-After") != "" {
		t.Fatalf("got %d %s", a.status, a.raw)
	}
	if r := a.resp.Events[5]; r.EventID != "m-5" || r.Errors[0].Field != "type" {
		t.Errorf("event 5: %+v", r)
	}
	if r := a.resp.Events[6]; r.EventID != "m-6" || r.Errors[0].Field != "price" || r.Errors[0].Code != CodeWrongType {
		t.Errorf("event 6: %+v", r)
	}
	if len(pending) != 1 || !strings.HasPrefix(pending[0], dedupPending) || len(pending[0]) != 25 || pendingTTL <= 0 || pendingTTL > 30*time.Second {
		t.Errorf("during the produce: dedup value %q, TTL %v; want pending, ≤ 30s", pending, pendingTTL)
	}

	hash := func(user string) string {
		h := hmac.New(sha256.New, []byte("test-user-hash-key"))
		h.Write([]byte(user))
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	want := map[string]struct{ topic, region, user string }{
		"m-0": {TopicUserEvents, "berlin", hash("alice")},
		"m-1": {TopicUserEvents, "paris", hash("bob")},
		"m-2": {TopicSupplyEvents, "berlin", ""},
		"m-3": {TopicExternalEvents, "nyc", ""},
		"m-4": {TopicUserEvents, "london", hash("alice")},
	}
	recs := e.records()
	if len(recs) != len(want) {
		t.Fatalf("%d records on Kafka, want %d", len(recs), len(want))
	}
	parts := []int{0, 1, 2}
	for _, r := range recs {
		w, ok := want[r.ev.EventID]
		if !ok {
			t.Fatalf("unexpected record %+v", r)
		}
		delete(want, r.ev.EventID)
		murmur := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(w.region)}, parts...)
		if r.topic != w.topic || r.key != w.region || r.ev.RegionID != w.region || r.partition != murmur {
			t.Errorf("%s: on %s/%d key %q, want %s/%d key %q", r.ev.EventID, r.topic, r.partition, r.key, w.topic, murmur, w.region)
		}
		if r.ev.UserID != "" || r.ev.UserHash != w.user || !r.ev.ReceivedAt.Equal(e.now) || !r.ev.Timestamp.Equal(e.now.Add(-time.Second)) {
			t.Errorf("%s: user %q hash %q received %v timestamp %v", r.ev.EventID, r.ev.UserID, r.ev.UserHash, r.ev.ReceivedAt, r.ev.Timestamp)
		}
	}
	for _, r := range recs {
		if r.ev.EventID == "m-0" && (r.ev.Experiment == nil || r.ev.Experiment.Variant != "B" || r.ev.QuoteID != "q-1" || r.ev.ProductType != "ride") {
			t.Errorf("m-0 lost fields: %+v", r.ev)
		}
	}

	keys := e.dedupKeys()
	if len(keys) != 5 {
		t.Fatalf("dedup keys %v, want the 5 accepted", keys)
	}
	for _, id := range []string{"m-0", "m-1", "m-2", "m-3", "m-4"} {
		ttl := e.rdb.TTL(context.Background(), dedupKey(keyClient("client-key"), id)).Val()
		if keys[dedupKey(keyClient("client-key"), id)] != dedupDone || ttl < 4*time.Minute || ttl > 5*time.Minute {
			t.Errorf("dedup key of %s: %q, TTL %v; want final for 5 min", id, keys[dedupKey(keyClient("client-key"), id)], ttl)
		}
	}
}

// TestIntakeSameEventThreeTimes: accepted once, then duplicate twice (also
// through the Go entry point), and one record on Kafka.
func TestIntakeSameEventThreeTimes(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, true)
	ev := e.event("retry-1", TypeBooking, "berlin", "carol")
	for i, want := range []Status{StatusAccepted, StatusDuplicate, StatusDuplicate} {
		a := e.send("k", ev)
		if a.status != http.StatusAccepted || !slices.Equal(a.statuses(), []Status{want}) {
			t.Fatalf("send %d: %d %s, want 202 %s", i+1, a.status, a.raw, want)
		}
	}
	resp, err := e.in.Ingest(context.Background(), keyClient("k"), []Event{ev})
	if err != nil || resp.Duplicates != 1 || resp.Events[0].Status != StatusDuplicate {
		t.Fatalf("Ingest: %+v, %v", resp, err)
	}
	if got := testutil.ToFloat64(e.in.m.dedupHits); got != 3 {
		t.Errorf("dedup hits = %v, want 3", got)
	}
	e.onceEach("retry-1")
}

// TestIntakeRateLimits: a user over its budget loses its extra events while
// another user's pass; alone it gets a 429; an API client over its budget
// gets a 429 with nothing accepted and its users' tokens back; anonymous
// clients have their own, lower budget.
func TestIntakeRateLimits(t *testing.T) {
	// Refills of one token per 1,000 s: no refill during the test.
	e := newIntakeEnv(t, IntakeOptions{
		MaxEvents: 20,
		UserRate:  0.001, UserBurst: 5,
		ClientRate: 0.001, ClientBurst: 38,
		AnonymousRate: 0.001, AnonymousBurst: 20,
	}, true)
	var evs []Event
	for i := range 8 {
		evs = append(evs, e.event("alice-"+strconv.Itoa(i), TypeSearch, "berlin", "alice"))
		if i < 3 {
			evs = append(evs, e.event("bob-"+strconv.Itoa(i), TypeSearch, "berlin", "bob"))
		}
	}
	a := e.send("key-a", evs...)
	// Some events must be sent again: the status says so (429), with the
	// per-event results and how many to resend.
	if a.status != http.StatusTooManyRequests || a.resp.Accepted != 8 || a.resp.Rejected != 3 || a.header.Get("Retry-After") == "" ||
		a.header.Get(RetryEventsHeader) != "3" {
		t.Fatalf("alice 8 + bob 3: %d %v %s", a.status, a.header, a.raw)
	}
	for _, r := range a.resp.Events {
		n, _ := strconv.Atoi(r.EventID[strings.IndexByte(r.EventID, '-')+1:])
		limited := strings.HasPrefix(r.EventID, "alice") && n >= 5
		if limited != (r.Status == StatusRejected) || limited && (r.Errors[0].Code != CodeRateLimited || r.Errors[0].Field != "userId") {
			t.Errorf("%s: %+v", r.EventID, r)
		}
	}

	a = e.send("key-a", e.event("alice-8", TypeSearch, "berlin", "alice"), e.event("alice-9", TypeSearch, "berlin", "alice"))
	if ra, _ := strconv.Atoi(a.header.Get("Retry-After")); a.status != http.StatusTooManyRequests || ra < 900 ||
		!slices.Equal(a.statuses(), repeat(StatusRejected, 2)) {
		t.Fatalf("alice alone: %d Retry-After %q %s", a.status, a.header.Get("Retry-After"), a.raw)
	}
	a = e.send("key-a", e.event("bob-3", TypeSearch, "berlin", "bob"), e.event("bob-4", TypeSearch, "berlin", "bob"))
	if a.status != http.StatusAccepted || a.resp.Accepted != 2 {
		t.Fatalf("bob: %d %s", a.status, a.raw)
	}

	// key-a has used 15 of 38: 20 events without users fit, the next 5 do not.
	var supply []Event
	for i := range 20 {
		supply = append(supply, e.event("supply-"+strconv.Itoa(i), TypeSupplyUpdate, "paris", ""))
	}
	if a = e.send("key-a", supply...); a.status != http.StatusAccepted || a.resp.Accepted != 20 {
		t.Fatalf("supply: %d %s", a.status, a.raw)
	}
	dave := make([]Event, 5)
	for i := range dave {
		dave[i] = e.event("dave-"+strconv.Itoa(i), TypeSearch, "berlin", "dave")
	}
	a = e.send("key-a", dave...)
	if ra, _ := strconv.Atoi(a.header.Get("Retry-After")); a.status != http.StatusTooManyRequests || a.err.Code != "RATE_LIMITED" || ra < 1 {
		t.Fatalf("client over budget: %d Retry-After %q %s", a.status, a.header.Get("Retry-After"), a.raw)
	}
	for _, ev := range dave {
		if n := e.rdb.Exists(context.Background(), dedupKey(keyClient("key-a"), ev.EventID)).Val(); n != 0 {
			t.Errorf("refused %s left a dedup key", ev.EventID)
		}
	}
	// Dave's tokens were given back: another client gets all five through.
	if a = e.send("key-b", dave...); a.status != http.StatusAccepted || a.resp.Accepted != 5 {
		t.Fatalf("dave through key-b: %d %s", a.status, a.raw)
	}

	// Without a key the client is its address, with the anonymous budget.
	anon := make([]Event, 20)
	for i := range anon {
		anon[i] = e.event("anon-"+strconv.Itoa(i), TypeSupplyUpdate, "sf", "")
	}
	if a = e.send("", anon...); a.status != http.StatusAccepted || a.resp.Accepted != 20 {
		t.Fatalf("anonymous: %d %s", a.status, a.raw)
	}
	if a = e.send("", e.event("anon-20", TypeSupplyUpdate, "sf", "")); a.status != http.StatusTooManyRequests {
		t.Fatalf("anonymous over budget: %d %s", a.status, a.raw)
	}
	if n := e.rdb.Exists(context.Background(), ratelimit.Key("client", "addr:127.0.0.1")).Val(); n != 1 {
		t.Errorf("no bucket for the anonymous client's address")
	}
	if got := testutil.ToFloat64(e.in.m.rateLimited.WithLabelValues("user")); got != 5 {
		t.Errorf("user rate-limited events = %v, want 5", got)
	}

	var accepted []string
	for _, group := range [][]Event{evs, supply, dave, anon} {
		for _, ev := range group {
			if !strings.HasPrefix(ev.EventID, "alice") || ev.EventID < "alice-5" {
				accepted = append(accepted, ev.EventID)
			}
		}
	}
	e.onceEach(append(accepted, "bob-3", "bob-4")...)
}

// TestIntakeKafkaRestart stops the broker while requests come in: they get
// 503 with Retry-After and leave no dedup key; after the restart the
// clients' retries are accepted, and every event is on Kafka exactly once.
func TestIntakeKafkaRestart(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, true)
	before := e.events("before", 10, "u1")
	if a := e.send("k", before...); a.status != http.StatusAccepted || a.resp.Accepted != 10 {
		t.Fatalf("before: %d %s", a.status, a.raw)
	}

	e.kafka.Stop()
	batches := make([][]Event, 4)
	for b := range batches {
		batches[b] = e.events("down"+strconv.Itoa(b), 25, "u"+strconv.Itoa(b))
		batches[b] = append(batches[b], e.event(fmt.Sprintf("down%d-supply", b), TypeSupplyUpdate, "paris", ""))
	}
	answers := make([]answer, len(batches))
	var wg sync.WaitGroup
	for b := range batches {
		wg.Go(func() { answers[b] = e.send("k", batches[b]...) })
	}
	wg.Wait()
	for b, a := range answers {
		if a.status != http.StatusServiceUnavailable || a.err.Code != "UNAVAILABLE" || a.header.Get("Retry-After") == "" {
			t.Fatalf("batch %d with the broker down: %d %s", b, a.status, a.raw)
		}
	}
	keys := e.dedupKeys()
	if len(keys) != len(before) {
		t.Fatalf("dedup keys with the broker down: %d, want only the %d accepted before", len(keys), len(before))
	}
	for _, ev := range before {
		if keys[dedupKey(keyClient("k"), ev.EventID)] != dedupDone {
			t.Errorf("accepted %s lost its dedup key", ev.EventID)
		}
	}

	if err := e.kafka.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	all := ids(before)
	for b, evs := range batches {
		a := e.send("k", evs...)
		if a.status != http.StatusAccepted || a.resp.Accepted != len(evs) {
			t.Fatalf("retry of batch %d: %d %s", b, a.status, a.raw)
		}
		if a = e.send("k", evs...); a.status != http.StatusAccepted || a.resp.Duplicates != len(evs) {
			t.Fatalf("second retry of batch %d: %d %s", b, a.status, a.raw)
		}
		all = append(all, ids(evs)...)
	}
	e.onceEach(all...)
	if got := testutil.ToFloat64(e.in.m.produceFailures); got != float64(len(batches)) {
		t.Errorf("produce failures = %v, want %d", got, len(batches))
	}
}

// TestIntakePartialProduceFailure: when Kafka takes some partitions of a
// request and refuses others, the request fails (503), the events Kafka
// took keep their dedup keys and the others lose them, so the retry sends
// only what is missing: every event ends up on Kafka exactly once.
func TestIntakePartialProduceFailure(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, true)
	var failing atomic.Bool // supply-events produce requests fail
	failing.Store(true)
	cluster := e.kafka.Cluster()
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if !failing.Load() || !slices.ContainsFunc(pr.Topics, func(t kmsg.ProduceRequestTopic) bool { return t.Topic == TopicSupplyEvents }) {
			return nil, nil, false // handled as usual
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range pr.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = kerr.NotEnoughReplicas.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})

	evs := e.events("user", 5, "u1")
	for i := range 5 {
		evs = append(evs, e.event("supply-"+strconv.Itoa(i), TypeSupplyUpdate, "paris", ""))
	}
	a := e.send("k", evs...)
	if a.status != http.StatusServiceUnavailable || a.err.Code != "UNAVAILABLE" {
		t.Fatalf("partial failure: %d %s", a.status, a.raw)
	}
	keys := e.dedupKeys()
	for _, ev := range evs {
		_, kept := keys[dedupKey(keyClient("k"), ev.EventID)]
		if written := ev.Type == TypeSearch; kept != written {
			t.Errorf("%s: dedup key kept %v, want %v", ev.EventID, kept, written)
		}
	}

	failing.Store(false) // Kafka takes everything again
	a = e.send("k", evs...)
	if a.status != http.StatusAccepted || !slices.Equal(a.statuses(), append(repeat(StatusDuplicate, 5), repeat(StatusAccepted, 5)...)) {
		t.Fatalf("retry: %d %s", a.status, a.raw)
	}
	e.onceEach(ids(evs)...)
}

// TestIntakeRedisDown: without Redis there is no dedup, so the intake
// refuses (503, nothing on Kafka) rather than risk double counting (the
// dedup comes first, so the limiter is not asked). After Redis is back the
// same request is accepted.
func TestIntakeRedisDown(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, true)
	evs := e.events("r", 3, "u1")
	if err := e.redis.Kill(); err != nil {
		t.Fatal(err)
	}
	a := e.send("k", evs...)
	if a.status != http.StatusServiceUnavailable || a.err.Code != "UNAVAILABLE" || a.header.Get("Retry-After") == "" {
		t.Fatalf("Redis down: %d %s", a.status, a.raw)
	}
	if got := testutil.ToFloat64(e.in.m.dedupErrors.WithLabelValues("claim")); got != 1 {
		t.Errorf("dedup claim errors = %v, want 1", got)
	}
	e.onceEach()

	if err := e.redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := e.send("k", evs...); a.status != http.StatusAccepted || a.resp.Accepted != 3 {
		t.Fatalf("Redis back: %d %s", a.status, a.raw)
	}
	e.onceEach(ids(evs)...)
}

// TestIntakeInFlight: an eventId another request is producing (or a
// replica that died left pending) is rejected in_flight — never reported
// duplicate, which would lose it if that other produce fails — and
// accepted once the claim is gone.
func TestIntakeInFlight(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, true)
	ctx := context.Background()
	if err := e.rdb.Set(ctx, dedupKey(keyClient("k"), "f-0"), dedupPending, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	evs := e.events("f", 2, "")
	a := e.send("k", evs[0])
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" ||
		len(a.resp.Events) != 1 || a.resp.Events[0].Errors[0].Code != CodeInFlight {
		t.Fatalf("in flight alone: %d %s", a.status, a.raw)
	}
	a = e.send("k", evs...)
	if a.status != http.StatusServiceUnavailable || !slices.Equal(a.statuses(), []Status{StatusRejected, StatusAccepted}) ||
		a.header.Get("Retry-After") == "" || a.header.Get(RetryEventsHeader) != "1" {
		t.Fatalf("in flight with another: %d %s", a.status, a.raw)
	}
	if v := e.rdb.Get(ctx, dedupKey(keyClient("k"), "f-0")).Val(); v != dedupPending {
		t.Fatalf("the other request's claim was changed to %q", v)
	}
	e.rdb.Del(ctx, dedupKey(keyClient("k"), "f-0")) // the other request failed and released it
	if a = e.send("k", evs...); !slices.Equal(a.statuses(), []Status{StatusAccepted, StatusDuplicate}) {
		t.Fatalf("after release: %d %s", a.status, a.raw)
	}
	e.onceEach(ids(evs)...)
}

// BenchmarkIngestBatch1000 measures events/s through Intake.Ingest (rate
// limits, dedup, produce with acks=all) into kfake, four requests of 1,000
// events in flight, 50 regions, 20,000 users. The client limit is raised so
// that it measures the intake, not the limit.
func BenchmarkIngestBatch1000(b *testing.B) {
	e := newIntakeEnv(b, IntakeOptions{ClientRate: 1e7, ClientBurst: 1e7}, true)
	types := []string{TypeSearch, TypeSearch, TypeSearch, TypeBooking, TypeCancel, TypeSupplyUpdate, TypeExternalSignal}
	template := make([]Event, 1000)
	for i := range template {
		template[i] = e.event("", types[i%len(types)], "region-"+strconv.Itoa(i%50), "")
	}
	var seq sync.Mutex
	next := 0
	client := keyClient("bench")
	b.SetParallelism(2) // 2 × GOMAXPROCS requests in flight
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		evs := make([]Event, len(template))
		for pb.Next() {
			seq.Lock()
			batch := next
			next++
			seq.Unlock()
			copy(evs, template)
			for i := range evs {
				evs[i].EventID = "b" + strconv.Itoa(batch) + "-" + strconv.Itoa(i)
				if evs[i].Type != TypeSupplyUpdate && evs[i].Type != TypeExternalSignal {
					evs[i].UserID = "user-" + strconv.Itoa((batch*1000+i)%20_000)
				}
			}
			resp, err := e.in.Ingest(context.Background(), client, evs)
			if err != nil {
				b.Fatal(err)
			}
			if resp.Accepted != len(evs) {
				b.Fatalf("accepted %d of %d: %+v", resp.Accepted, len(evs), resp.Events[0])
			}
		}
	})
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkHTTPIngestBatch1000 is BenchmarkIngestBatch1000 through POST
// /v1/events: JSON bodies of 1,000 events (about 170 KB) decoded event by
// event, four requests in flight over keep-alive connections.
func BenchmarkHTTPIngestBatch1000(b *testing.B) {
	e := newIntakeEnv(b, IntakeOptions{ClientRate: 1e7, ClientBurst: 1e7}, true)
	types := []string{TypeSearch, TypeSearch, TypeSearch, TypeBooking, TypeCancel, TypeSupplyUpdate, TypeExternalSignal}
	// Each event's JSON split around its eventId's batch number and its
	// user's number (users rotate as in BenchmarkIngestBatch1000).
	type parts struct{ head, mid, tail string }
	tmpl := make([]parts, 1000)
	for i := range tmpl {
		ev := e.event("@E@", types[i%len(types)], "region-"+strconv.Itoa(i%50), "")
		if ev.Type != TypeSupplyUpdate && ev.Type != TypeExternalSignal {
			ev.UserID = "user-@U@"
		}
		js, err := json.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		p := &tmpl[i]
		p.head, p.tail, _ = strings.Cut(string(js), "@E@")
		p.tail = "-" + strconv.Itoa(i) + p.tail
		p.mid, p.tail, _ = strings.Cut(p.tail, "@U@")
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer hc.CloseIdleConnections()
	var seq atomic.Int64
	b.SetParallelism(2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var buf strings.Builder
		for pb.Next() {
			batch := strconv.FormatInt(seq.Add(1), 10)
			buf.Reset()
			buf.WriteString(`{"events":[`)
			n, _ := strconv.Atoi(batch)
			for i, p := range tmpl {
				if i > 0 {
					buf.WriteByte(',')
				}
				buf.WriteString(p.head)
				buf.WriteString(batch)
				buf.WriteString(p.mid)
				if p.tail != "" {
					buf.WriteString(strconv.Itoa((n*1000 + i) % 20_000))
					buf.WriteString(p.tail)
				}
			}
			buf.WriteString("]}")
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+EventsPath, strings.NewReader(buf.String()))
			req.Header.Set(auth.APIKeyHeader, "bench")
			res, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			answer, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusAccepted || !bytes.HasPrefix(answer, []byte(`{"accepted":1000,`)) {
				b.Fatalf("%d %.300s", res.StatusCode, answer)
			}
		}
	})
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "events/s")
}

// TestIntakeLostClaimAnswer: the claim's pipeline reached Redis, which set
// the pending keys, but its answer was lost (a timeout under load), and so
// was the release's. The request fails for a retry, and the client's retry
// owns its own claims: it is accepted at once instead of finding its
// events in flight for the pending TTL. Another client's same ids are its
// own events.
func TestIntakeLostClaimAnswer(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, false)
	p := newDropProxy(t, e.redis.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	in, err := NewIntake(rdb, e.writer, nil, IntakeOptions{
		UserHashKey: []byte("k"), RedisTimeout: 300 * time.Millisecond, Now: func() time.Time { return e.now },
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	evs := e.events("lost", 3, "")
	// A connection set up beforehand (its handshake answered) carries the
	// claim.
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	p.drop.Store(true)
	_, err = in.Ingest(context.Background(), ClientID{ID: "k"}, evs)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim without an answer: %v, want ErrUnavailable", err)
	}
	p.drop.Store(false)
	p.closeAll()
	if _, err := e.rdb.Set(context.Background(), dedupKey(ClientID{ID: "k"}, "lost-0"), claimToken(ClientID{ID: "k"}), time.Minute).Result(); err != nil {
		t.Fatal(err) // as if the release had not run (it may have)
	}
	// Another client's eventIds are its own: the same id is another event,
	// accepted while the first client's claim is pending.
	other, err := in.Ingest(context.Background(), ClientID{ID: "other"}, evs[:1])
	if err != nil || other.Accepted != 1 {
		t.Fatalf("another client: %+v, %v; want its own event accepted", other, err)
	}
	resp, err := in.Ingest(context.Background(), ClientID{ID: "k"}, evs)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if resp.Accepted != 3 {
		t.Fatalf("retry: %+v, want the 3 events accepted (not in flight)", resp)
	}
}

// dropProxy forwards TCP to a server; while drop is set it swallows the
// server's answers.
type dropProxy struct {
	addr  string
	drop  atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
}

func newDropProxy(t *testing.T, target string) *dropProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); p.closeAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 && !p.drop.Load() {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	return p
}

func (p *dropProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestIntakeLimiterDownFailsOpen: when the rate limiter's Redis fails but
// the dedup works, events are admitted unlimited (limits protect capacity;
// refusing would lose data), and the metric says so.
func TestIntakeLimiterDownFailsOpen(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, false)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { dead.Close() })
	in, err := NewIntake(e.rdb, e.writer, ratelimit.NewLimiter(dead, ratelimit.Options{}), IntakeOptions{
		UserHashKey: []byte("k"), Now: func() time.Time { return e.now }, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := in.Ingest(context.Background(), ClientID{ID: "k"}, e.events("open", 3, "u1"))
	if err != nil || resp.Accepted != 3 {
		t.Fatalf("limiter down: %+v, %v; want the 3 events accepted", resp, err)
	}
	if got := testutil.ToFloat64(in.m.limitFailOpen); got != 1 {
		t.Errorf("rate-limit fail-open count = %v, want 1", got)
	}
}

// TestResendAfterRateLimitSpendsNoTokens: a client resends a whole request
// after a 429 for one user's burst; the events accepted the first time come
// back duplicate and cost the user no tokens, so the ones refused pass as
// the bucket refills instead of starving behind the duplicates; each event
// is on Kafka once.
func TestResendAfterRateLimitSpendsNoTokens(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{UserRate: 1000, UserBurst: 100}, true)
	evs := e.events("burst", 150, "alice")
	a := e.send("k", evs...)
	if a.status != http.StatusTooManyRequests || a.resp.Accepted != 100 || a.resp.Rejected != 50 {
		t.Fatalf("first send: %d %s", a.status, a.raw)
	}
	waitUntil(t, "every event accepted after resends", func() bool {
		again := e.send("k", evs...)
		if again.resp.Duplicates < 100 {
			t.Fatalf("resend: %d duplicates, want at least the 100 accepted first (duplicates must not be rate limited): %s", again.resp.Duplicates, again.raw)
		}
		return again.status == http.StatusAccepted && again.resp.Duplicates == len(evs)
	})
	e.onceEach(ids(evs)...)
}

// waitUntil polls cond until it holds; it fails the test after a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIntakeClientNamespaces: event ids are scoped per client, so a
// stranger who sends another client's ids first cannot make its events
// "duplicates"; supply updates and external signals need the supply role.
func TestIntakeClientNamespaces(t *testing.T) {
	e := newIntakeEnv(t, IntakeOptions{}, false)
	ctx := context.Background()
	squatter := ClientID{ID: "key:squatter", Supply: true}
	owner := ClientID{ID: "key:owner", Supply: true}
	evs := e.events("ns", 3, "alice")
	if r, err := e.in.Ingest(ctx, squatter, evs); err != nil || r.Accepted != 3 {
		t.Fatalf("squatter: %+v %v", r, err)
	}
	r, err := e.in.Ingest(ctx, owner, evs)
	if err != nil || r.Accepted != 3 || r.Duplicates != 0 {
		t.Fatalf("owner after the squatter: %+v %v; want its 3 events accepted", r, err)
	}
	if r.Events[0].EventID != "ns-0" {
		t.Errorf("answer names %q, want the id as sent", r.Events[0].EventID)
	}
	if r, err := e.in.Ingest(ctx, owner, evs); err != nil || r.Duplicates != 3 {
		t.Fatalf("owner's resend: %+v %v; want 3 duplicates", r, err)
	}
	byNS := map[string]int{}
	for _, rec := range e.records() {
		byNS[rec.ns]++
	}
	if len(byNS) != 2 || byNS[owner.Namespace()] != 3 || byNS[squatter.Namespace()] != 3 {
		t.Errorf("records by namespace %v, want 3 of each client", byNS)
	}

	demandOnly := ClientID{ID: "key:app"}
	mixed := []Event{e.event("s-0", TypeSupplyUpdate, "berlin", ""), e.event("x-0", TypeExternalSignal, "berlin", ""), e.event("d-0", TypeBooking, "berlin", "bob")}
	r, err = e.in.Ingest(ctx, demandOnly, mixed)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Events; got[0].Status != StatusRejected || got[0].Errors[0].Code != CodeForbidden ||
		got[1].Status != StatusRejected || got[1].Errors[0].Code != CodeForbidden || got[2].Status != StatusAccepted {
		t.Errorf("events of a client without the supply role: %+v", got)
	}
	// Over HTTP, the caller comes from the authenticator.
	authn := auth.New(auth.Options{Verifiers: []auth.Verifier{auth.Static{}}})
	srv := httptest.NewServer(authn.Middleware(e.in.Handler()))
	t.Cleanup(srv.Close)
	res, err := http.Post(srv.URL+EventsPath, "application/json", strings.NewReader(body(asAny(mixed[:1])...)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), `"forbidden"`) {
		t.Errorf("anonymous supply update: %d %s; want 400 forbidden", res.StatusCode, raw)
	}
}
