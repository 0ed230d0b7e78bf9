package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/redisconn"
)

// guardEnv is a SupplyGuard on a real Redis with an injected clock.
type guardEnv struct {
	t     *testing.T
	redis *devenv.Process
	rdb   *redis.Client
	t0    time.Time
	now   time.Time
	reg   *prometheus.Registry
	logs  *bytes.Buffer
	g     *SupplyGuard
}

func newGuardEnv(t *testing.T, opts SupplyGuardOptions) *guardEnv {
	t.Helper()
	e := &guardEnv{t: t, redis: testenv.Redis(t)}
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { e.rdb.Close() })
	e.reset(opts)
	return e
}

// reset empties Redis and builds a new guard with fresh metrics and logs.
func (e *guardEnv) reset(opts SupplyGuardOptions) {
	e.t.Helper()
	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		e.t.Fatal(err)
	}
	e.t0 = time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	e.now = e.t0
	e.reg = prometheus.NewRegistry()
	e.logs = new(bytes.Buffer)
	opts.Registerer = e.reg
	opts.Logger = slog.New(slog.NewJSONHandler(e.logs, nil))
	opts.Now = func() time.Time { return e.now }
	g, err := NewSupplyGuard(e.rdb, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.g = g
}

// rep is one supply report of a test batch.
type rep struct {
	region string  // default "berlin"
	v      float64 // availableSupply
	at     int     // event time: t0 + at seconds (default: the step's clock)
	id     string  // eventId (default: unique)
	recv   int     // > 0: ReceivedAt = t0 + recv seconds (else the guard's clock)
}

// step is one Check call at clock t0 + clock, and its expected outcome per
// report: 'a' accepted, 'r' refused.
type step struct {
	clock time.Duration
	reps  []rep
	want  string
}

var guardSeq int

// check runs one step and returns the refused reports (indexes from 1: a
// search comes first in the batch, outside idx).
func (e *guardEnv) check(s step) map[int]FieldError {
	e.t.Helper()
	e.now = e.t0.Add(s.clock)
	evs := make([]Event, 0, len(s.reps)+1)
	// A search first: idx need not cover every event.
	evs = append(evs, Event{EventID: "search", Type: TypeSearch, RegionID: "berlin", Timestamp: e.now})
	var idx []int
	for _, r := range s.reps {
		guardSeq++
		ev := Event{
			EventID: cmpOr(r.id, fmt.Sprintf("s-%d", guardSeq)), Type: TypeSupplyUpdate,
			RegionID: cmpOr(r.region, "berlin"), Timestamp: e.now, AvailableSupply: ptr(r.v), UserID: "alice",
		}
		if r.at != 0 {
			ev.Timestamp = e.t0.Add(time.Duration(r.at) * time.Second)
		}
		if r.recv != 0 {
			ev.ReceivedAt = e.t0.Add(time.Duration(r.recv) * time.Second)
		}
		idx = append(idx, len(evs))
		evs = append(evs, ev)
	}
	refused, err := e.g.Check(context.Background(), evs, idx)
	if err != nil {
		e.t.Fatalf("Check: %v", err)
	}
	return refused
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// last is a region's last accepted supply in Redis ("" if none).
func (e *guardEnv) last(region string) string {
	return e.rdb.HGet(context.Background(), SupplyGuardKey(region), "v").Val()
}

func TestSupplyGuard(t *testing.T) {
	const m = time.Minute
	cases := []struct {
		name     string
		opts     SupplyGuardOptions
		steps    []step
		wantLast map[string]string // region → last accepted value afterwards
	}{
		{"first report accepted", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}},
			map[string]string{"berlin": "40"}},
		{"small drop accepted", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 25}}, "a"}, {2 * m, []rep{{v: 12.5}}, "a"}},
			map[string]string{"berlin": "12.5"}},
		{"40 to 0 refused", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 0}}, "r"}},
			map[string]string{"berlin": "40"}},
		{"just below half refused", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 19.99}}, "r"}},
			map[string]string{"berlin": "40"}},
		{"confirmed within the window", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 0}}, "r"}, {m + 119*time.Second, []rep{{v: 0}}, "a"}},
			map[string]string{"berlin": "0"}},
		{"confirmed by a report within 10 %", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 10}}, "r"}, {2 * m, []rep{{v: 11}}, "a"}},
			map[string]string{"berlin": "11"}},
		{"confirmed by a lower report", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 10}}, "r"}, {2 * m, []rep{{v: 3}}, "a"}},
			map[string]string{"berlin": "3"}},
		{"more than 10 % above the held value is held in its place", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 10}}, "r"}, {2 * m, []rep{{v: 12}}, "r"}, {3 * m, []rep{{v: 13}}, "a"}},
			map[string]string{"berlin": "13"}},
		{"confirmation after the window is held again", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 0}}, "r"}, {m + 121*time.Second, []rep{{v: 0}}, "r"},
				{m + 200*time.Second, []rep{{v: 0}}, "a"}}, // confirms the second
			map[string]string{"berlin": "0"}},
		{"the window is ReceivedAt's", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {0, []rep{{v: 0, recv: 60}}, "r"}, {0, []rep{{v: 0, recv: 300}}, "r"}},
			map[string]string{"berlin": "40"}},
		{"a retry of the held event does not confirm it", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 0, id: "x"}}, "r"}, {90 * time.Second, []rep{{v: 0, id: "x"}}, "r"},
				{2 * m, []rep{{v: 0, id: "y"}}, "a"}},
			map[string]string{"berlin": "0"}},
		{"a rise accepted", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 400}}, "a"}},
			map[string]string{"berlin": "400"}},
		{"an accepted report clears the held value", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 0}}, "r"}, {m + 10*time.Second, []rep{{v: 38}}, "a"},
				{m + 20*time.Second, []rep{{v: 0}}, "r"}},
			map[string]string{"berlin": "38"}},
		{"above MaxSupply refused, state untouched", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 1e6 + 1}}, "r"}, {2 * m, []rep{{v: 1e6}}, "a"}},
			map[string]string{"berlin": "1e+06"}},
		{"first report above MaxSupply leaves no state", SupplyGuardOptions{MaxSupply: 100},
			[]step{{0, []rep{{v: 101}}, "r"}},
			map[string]string{"berlin": ""}},
		{"MaxDrop option", SupplyGuardOptions{MaxDrop: 0.2},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 32}}, "a"}, {2 * m, []rep{{v: 25}}, "r"}},
			map[string]string{"berlin": "32"}},
		{"ConfirmWindow option", SupplyGuardOptions{ConfirmWindow: 10 * time.Second},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 0}}, "r"}, {m + 11*time.Second, []rep{{v: 0}}, "r"}},
			map[string]string{"berlin": "40"}},
		{"Disabled accepts all", SupplyGuardOptions{Disabled: true},
			[]step{{0, []rep{{v: 40}}, "a"}, {m, []rep{{v: 0}}, "a"}, {2 * m, []rep{{v: 5e6}}, "a"}},
			map[string]string{"berlin": ""}},
		{"two regions in one batch are independent", SupplyGuardOptions{},
			[]step{
				{0, []rep{{region: "berlin", v: 40}, {region: "paris", v: 10}}, "aa"},
				{m, []rep{{region: "berlin", v: 0}, {region: "paris", v: 9}}, "ra"},
				{2 * m, []rep{{region: "paris", v: 0}, {region: "berlin", v: 0}}, "ra"}, // paris held; berlin confirmed
			},
			map[string]string{"berlin": "0", "paris": "9"}},
		{"one region's batch in event-time order", SupplyGuardOptions{},
			// In request order 0 would be first (accepted) and 40 a rise;
			// by event time 40 comes first and 0 is a fall.
			[]step{{0, []rep{{v: 0, at: -10}, {v: 40, at: -20}}, "ra"}},
			map[string]string{"berlin": "40"}},
		{"a batch confirms its own held value", SupplyGuardOptions{},
			// By event time: 40 first, 1 held, 0 confirms it.
			[]step{{0, []rep{{v: 40, at: -30}, {v: 0, at: -10}, {v: 1, at: -20}}, "aar"}},
			map[string]string{"berlin": "0"}},
		{"an older report does not replace the last value", SupplyGuardOptions{},
			[]step{{0, []rep{{v: 40, at: 50}}, "a"}, {m, []rep{{v: 25, at: 30}}, "a"}, {2 * m, []rep{{v: 15, at: 60}}, "r"}},
			map[string]string{"berlin": "40"}},
	}
	e := newGuardEnv(t, SupplyGuardOptions{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.reset(c.opts)
			refusedN := 0
			for k, s := range c.steps {
				refused := e.check(s)
				got := ""
				for j := range s.reps {
					if fe, ok := refused[j+1]; ok {
						got += "r"
						refusedN++
						if fe.Field != "availableSupply" || fe.Code != CodeImplausible || fe.Message == "" {
							t.Errorf("step %d report %d: %+v", k, j, fe)
						}
					} else {
						got += "a"
					}
				}
				if len(refused) != strings.Count(got, "r") {
					t.Errorf("step %d: refused %v names events that are not supply reports", k, refused)
				}
				if got != s.want {
					t.Errorf("step %d: got %s, want %s (%v)", k, got, s.want, refused)
				}
			}
			if n := testutil.ToFloat64(e.g.implausible.WithLabelValues("availableSupply")); int(n) != refusedN {
				t.Errorf("surge_intake_implausible_events_total = %v, want %d", n, refusedN)
			}
			if n := strings.Count(e.logs.String(), "implausible supply report refused"); n != refusedN {
				t.Errorf("%d warnings, want %d:\n%s", n, refusedN, e.logs)
			}
			for region, want := range c.wantLast {
				if got := e.last(region); got != want {
					t.Errorf("last %s = %q, want %q", region, got, want)
				}
			}
			if c.opts.Disabled {
				if n := e.rdb.DBSize(context.Background()).Val(); n != 0 {
					t.Errorf("disabled guard wrote %d keys", n)
				}
			}
		})
	}
}

// TestSupplyGuardMessageMetricLog: a refused fall says what happened and
// how to confirm it; it is counted on the Registerer and logged with the
// region and both values, without the user id.
func TestSupplyGuardMessageMetricLog(t *testing.T) {
	e := newGuardEnv(t, SupplyGuardOptions{})
	e.check(step{0, []rep{{v: 40}}, "a"})
	refused := e.check(step{time.Minute, []rep{{v: 0}}, "r"})
	fe := refused[1]
	want := "supply fell from 40 to 0 in one report (more than 50 %); held until a second report (another eventId, at most 0) confirms it within 2m0s"
	if fe.Message != want {
		t.Errorf("message %q\n   want %q", fe.Message, want)
	}
	if n, err := testutil.GatherAndCount(e.reg, "surge_intake_implausible_events_total"); err != nil || n != 1 {
		t.Errorf("registered series = %d, %v", n, err)
	}
	if got := testutil.ToFloat64(e.g.implausible.WithLabelValues("availableSupply")); got != 1 {
		t.Errorf("counter = %v", got)
	}
	log := e.logs.String()
	for _, s := range []string{`"level":"WARN"`, `"region":"berlin"`, `"previous":40`, `"reported":0`} {
		if !strings.Contains(log, s) {
			t.Errorf("log lacks %s: %s", s, log)
		}
	}
	if strings.Contains(log, "alice") {
		t.Errorf("log holds the user id: %s", log)
	}

	refused = e.check(step{2 * time.Minute, []rep{{v: 2e6}}, "r"})
	if fe := refused[1]; fe.Code != CodeImplausible || !strings.Contains(fe.Message, "above the plausible maximum 1e+06") {
		t.Errorf("above max: %+v", fe)
	}
}

// TestSupplyGuardKeys: both keys of a region share its hash tag; the last
// value lives a week, the held one the confirmation window.
func TestSupplyGuardKeys(t *testing.T) {
	e := newGuardEnv(t, SupplyGuardOptions{})
	ctx := context.Background()
	e.check(step{0, []rep{{v: 40}}, "a"})
	e.check(step{time.Minute, []rep{{v: 0}}, "r"})
	if k := SupplyGuardKey("berlin"); k != "plaus:supply:{berlin}" {
		t.Errorf("key %q", k)
	}
	if ttl := e.rdb.PTTL(ctx, SupplyGuardKey("berlin")).Val(); ttl < 7*24*time.Hour-time.Minute || ttl > 7*24*time.Hour {
		t.Errorf("last TTL %s", ttl)
	}
	if ttl := e.rdb.PTTL(ctx, supplyPendingKey("berlin")).Val(); ttl <= 0 || ttl > 2*time.Minute {
		t.Errorf("pending TTL %s", ttl)
	}
	if h := e.rdb.HGetAll(ctx, supplyPendingKey("berlin")).Val(); h["v"] != "0" || h["id"] == "" ||
		h["at"] != fmt.Sprint(e.t0.Add(time.Minute).UnixMilli()) {
		t.Errorf("pending %v", h)
	}
	if at := e.rdb.HGet(ctx, SupplyGuardKey("berlin"), "at").Val(); at != fmt.Sprint(e.t0.UnixMicro()) {
		t.Errorf("last at %s, want %d", at, e.t0.UnixMicro())
	}
	keys := e.rdb.Keys(ctx, "*").Val()
	if len(keys) != 2 {
		t.Errorf("keys %v", keys)
	}
	for _, k := range keys {
		if !strings.Contains(k, "{berlin}") || redisconn.Slot(k) != redisconn.Slot("berlin") {
			t.Errorf("key %s is not in berlin's slot", k)
		}
	}
}

// TestSupplyGuardOneRegionPerCall: with one region per script call (as on
// a Redis Cluster) the decisions are the same, and a script Redis lost
// (restart, failover) is loaded again.
func TestSupplyGuardOneRegionPerCall(t *testing.T) {
	e := newGuardEnv(t, SupplyGuardOptions{})
	ctx := context.Background()
	for _, per := range []int{1, maxRegionsPerCall} {
		e.reset(SupplyGuardOptions{})
		e.g.perCall = per
		if err := e.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		var first, second []rep
		want := ""
		for r := range 5 {
			region := fmt.Sprintf("r%d", r)
			first = append(first, rep{region: region, v: 40})
			second = append(second, rep{region: region, v: float64(r * 5)}, rep{region: region, v: 40 + float64(r), at: -100})
			if r*5 < 20 {
				want += "ra"
			} else {
				want += "aa"
			}
		}
		if refused := e.check(step{0, first, "aaaaa"}); len(refused) != 0 {
			t.Fatalf("per %d: first reports refused: %v", per, refused)
		}
		refused := e.check(step{time.Minute, second, want})
		got := ""
		for j := range second {
			if _, ok := refused[j+1]; ok {
				got += "r"
			} else {
				got += "a"
			}
		}
		if got != want {
			t.Errorf("per %d: got %s, want %s", per, got, want)
		}
	}
}

// TestSupplyGuardRedisDown: without Redis, Check returns the error and no
// decision (the intake fails open); reports above the maximum need no
// Redis but are not decided either.
func TestSupplyGuardRedisDown(t *testing.T) {
	e := newGuardEnv(t, SupplyGuardOptions{})
	if err := e.redis.Kill(); err != nil {
		t.Fatal(err)
	}
	evs := []Event{{EventID: "a", Type: TypeSupplyUpdate, RegionID: "berlin", Timestamp: e.t0, AvailableSupply: ptr(0)}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	refused, err := e.g.Check(ctx, evs, []int{0})
	if err == nil || refused != nil {
		t.Fatalf("Redis down: %v, %v", refused, err)
	}
	if err := e.redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if refused, err := e.g.Check(context.Background(), evs, []int{0}); err != nil || len(refused) != 0 {
		t.Fatalf("Redis back: %v, %v", refused, err)
	}
}

// TestSupplyGuardSkips: other types, backfills and an empty idx are not
// decided; a nil guard accepts everything; bad options are refused.
func TestSupplyGuardSkips(t *testing.T) {
	e := newGuardEnv(t, SupplyGuardOptions{})
	evs := []Event{
		{EventID: "a", Type: TypeSupplyUpdate, RegionID: "berlin", Timestamp: e.t0, AvailableSupply: ptr(40)},
		{EventID: "b", Type: TypeSupplyUpdate, RegionID: "berlin", Timestamp: e.t0, AvailableSupply: ptr(0), Backfill: true},
		{EventID: "c", Type: TypeExternalSignal, RegionID: "berlin", Timestamp: e.t0, Value: ptr(0)},
		{EventID: "d", Type: TypeSupplyUpdate, RegionID: "berlin", Timestamp: e.t0},
	}
	if refused, err := e.g.Check(context.Background(), evs, []int{0, 1, 2, 3}); err != nil || len(refused) != 0 {
		t.Fatalf("%v, %v", refused, err)
	}
	if got := e.last("berlin"); got != "40" {
		t.Errorf("last %q: the backfill counted", got)
	}
	var nilGuard *SupplyGuard
	if refused, err := nilGuard.Check(context.Background(), evs, []int{0}); err != nil || refused != nil {
		t.Errorf("nil guard: %v, %v", refused, err)
	}
	if _, err := NewSupplyGuard(nil, SupplyGuardOptions{}); err == nil {
		t.Error("no Redis: no error")
	}
	if _, err := NewSupplyGuard(nil, SupplyGuardOptions{Disabled: true}); err != nil {
		t.Errorf("disabled without Redis: %v", err)
	}
	if _, err := NewSupplyGuard(e.rdb, SupplyGuardOptions{MaxDrop: 1.5}); err == nil {
		t.Error("MaxDrop 1.5: no error")
	}
}
