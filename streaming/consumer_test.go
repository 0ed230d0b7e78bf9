package streaming

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		runChild(spec)
	}
	testenv.Main(m)
}

// waitLimit bounds every wait for the consumer: a failure, not a timing
// assertion, when it is exceeded.
const waitLimit = 45 * time.Second

type env struct {
	t       testing.TB
	kafka   *devenv.Kafka
	redis   *devenv.Process
	rdb     *redis.Client
	writer  *kafka.Writer
	client  *kafka.Client
	brokers []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: ingest.EventTopics, Partitions: 3})
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	e := &env{t: t, kafka: k, redis: srv, rdb: rdb, brokers: k.Brokers}
	e.reconnect()
	return e
}

// reconnect gives the env a producer and a client with fresh connections
// (not the shared kafka.DefaultTransport, whose pooled connections outlive
// a broker restart).
func (e *env) reconnect() {
	tr := &kafka.Transport{}
	e.t.Cleanup(tr.CloseIdleConnections)
	e.client = &kafka.Client{Addr: kafka.TCP(e.brokers...), Transport: tr}
	w := &kafka.Writer{
		Addr:         kafka.TCP(e.brokers...),
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    1000,
		BatchTimeout: time.Millisecond,
		Transport:    tr,
	}
	e.t.Cleanup(func() { w.Close() })
	e.writer = w
}

// ev is an event of region at time a; opts set the typed fields.
func ev(region, typ string, a time.Time, opts ...func(*ingest.Event)) ingest.Event {
	e := ingest.Event{EventID: fmt.Sprintf("%s-%s-%d", region, typ, a.UnixNano()), Type: typ, RegionID: region, Timestamp: a, ReceivedAt: time.Now()}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func withSupply(v float64) func(*ingest.Event) {
	return func(e *ingest.Event) { e.AvailableSupply = &v }
}
func withSignal(s string, v float64) func(*ingest.Event) {
	return func(e *ingest.Event) { e.Signal, e.Value = s, &v }
}
func backfill(e *ingest.Event) { e.Backfill = true }

// produce sends events in order, keyed by region, to their topics.
func (e *env) produce(events ...ingest.Event) {
	e.t.Helper()
	msgs := make([]kafka.Message, len(events))
	for i := range events {
		events[i].ReceivedAt = time.Now()
		b, err := events[i].Marshal()
		if err != nil {
			e.t.Fatal(err)
		}
		msgs[i] = kafka.Message{Topic: ingest.TopicFor(events[i].Type), Key: []byte(events[i].RegionID), Value: b}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.writer.WriteMessages(ctx, msgs...); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
}

// start runs a consumer until the test ends (or the returned stop).
func (e *env) start(opts Options, season SeasonalityLookup) (*Consumer, func()) {
	e.t.Helper()
	if opts.GroupID == "" {
		opts.GroupID = "features-test"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c := NewConsumer(e.brokers, e.rdb, season, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return c, stop
}

// testWriter sends the consumer's log to the test log (shown with -v or
// on failure).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// offsets returns, per topic and partition, the log end offset and the
// group's committed offset (-1 none), as the broker sees them.
func (e *env) offsets(group string) (ends, committed map[string]map[int]int64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := e.client
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	freq := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{}}
	for _, topic := range ingest.EventTopics {
		for p := range 3 {
			req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
			freq.Topics[topic] = append(freq.Topics[topic], p)
		}
	}
	lres, err := client.ListOffsets(ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	fres, err := client.OffsetFetch(ctx, freq)
	if err != nil {
		e.t.Fatal(err)
	}
	ends, committed = map[string]map[int]int64{}, map[string]map[int]int64{}
	for topic, ps := range lres.Topics {
		ends[topic] = map[int]int64{}
		for _, p := range ps {
			ends[topic][p.Partition] = p.LastOffset
		}
	}
	for topic, ps := range fres.Topics {
		committed[topic] = map[int]int64{}
		for _, p := range ps {
			committed[topic][p.Partition] = p.CommittedOffset
		}
	}
	return ends, committed
}

// waitCommitted waits until c's group has committed every partition up to
// its end (every event produced so far is reflected in Redis) and c's
// Status says so too.
func (e *env) waitCommitted(c *Consumer) {
	e.t.Helper()
	group := c.opts.GroupID
	e.waitFor("every offset committed", func() bool {
		ends, committed := e.offsets(group)
		for topic, ps := range ends {
			for p, end := range ps {
				if end > 0 && committed[topic][p] != end {
					return false
				}
			}
		}
		return true
	})
	e.waitFor("status up to date", func() bool {
		st := c.Status()
		return len(st.Partitions) > 0 && st.Lag() == 0
	})
}

// waitAssigned waits until c has its partitions and has rebuilt its
// windows.
func (e *env) waitAssigned(c *Consumer) {
	e.t.Helper()
	e.waitFor("partitions assigned", func() bool {
		st := c.Status()
		return len(st.Partitions) == 3*len(ingest.EventTopics) && !st.Rebuilding
	})
}

func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("gave up waiting for %s after %v", what, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) features(region string) features.Values {
	e.t.Helper()
	v, err := features.NewStore(e.rdb, 0).Get(context.Background(), region)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// counter sums a metric family's samples whose labels include match.
func counter(t testing.TB, g prometheus.Gatherer, name string, match map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	sample:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if labels[k] != v {
					continue sample
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func checkOnline(t *testing.T, got features.Online, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// base is the start of minute 0 of the integration sequences: event time
// is independent of the wall clock, only its order matters.
func base() time.Time { return time.Now().UTC().Truncate(time.Minute).Add(-30 * time.Minute) }

func TestWindowsInRedis(t *testing.T) {
	e := newEnv(t)
	b := base()
	mt := func(m int, s float64) time.Time {
		return b.Add(time.Duration(m)*time.Minute + time.Duration(s*float64(time.Second)))
	}
	var seasonAt []time.Time
	var mu sync.Mutex
	season := SeasonalityFunc(func(region string, at time.Time) (float64, bool) {
		if region != "berlin" {
			return 0, false
		}
		mu.Lock()
		seasonAt = append(seasonAt, at)
		mu.Unlock()
		return 1.3, true
	})
	reg := prometheus.NewRegistry()
	c, _ := e.start(Options{Registerer: reg}, season)

	// berlin: minute i (0..15) has i+1 searches, i%3 bookings, a cancel on
	// even minutes, a supply report on minutes 0, 5, 10 (10·(i/5+1)), heavy
	// weather from minute 3; minute 16 is under way with 2 searches.
	// paris gets one search a minute: its features are its own.
	var events []ingest.Event
	var want []features.Minute
	supply := 0.0
	weather := 0.0
	for i := 0; i <= 16; i++ {
		m := features.Minute{Start: mt(i, 0)}
		if i%5 == 0 {
			supply = float64(10 * (i/5 + 1))
			events = append(events, ev("berlin", ingest.TypeSupplyUpdate, mt(i, 1), withSupply(supply)))
		}
		if i == 3 {
			weather = 0.8
			events = append(events, ev("berlin", ingest.TypeExternalSignal, mt(i, 2), withSignal(ingest.SignalWeather, weather)))
		}
		n := i + 1
		if i == 16 {
			n = 2
		}
		for k := range n {
			events = append(events, ev("berlin", ingest.TypeSearch, mt(i, 3+float64(k)/10)))
			m.Searches++
		}
		for k := range i % 3 {
			events = append(events, ev("berlin", ingest.TypeBooking, mt(i, 20+float64(k))))
			m.Bookings++
		}
		if i%2 == 0 {
			events = append(events, ev("berlin", ingest.TypeCancel, mt(i, 40)))
			m.Cancels++
		}
		events = append(events, ev("paris", ingest.TypeSearch, mt(i, 50)))
		m.Supply, m.Weather = supply, weather
		if i >= 1 && i <= 15 {
			want = append(want, m)
		}
	}
	e.produce(events...)
	e.waitCommitted(c)

	got := e.features("berlin")
	if !got.Found() {
		t.Fatal("no features for berlin")
	}
	wantOnline := features.FromMinutes(want, 1.3)
	checkOnline(t, got.Online, wantOnline)
	// The same figures by hand: closed minutes 1..15 hold 2..16 searches.
	checkOnline(t, got.Online, map[string]float64{
		features.Searches1m:   16,
		features.Bookings1m:   0, // 15 % 3
		features.Cancels1m:    0,
		features.Searches5m:   14,
		features.Searches15m:  9,
		features.Bookings5m:   1, // 11..15 % 3 = 2,0,1,2,0
		features.DemandTrend:  14 / 6.5,
		features.Supply:       40,
		features.SupplyDemand: 40.0 / 14,
		features.Seasonality:  1.3,

		features.WeatherSeverity: 0.8,
		features.SearchesCurrent: 2,
		features.SupplyCurrent:   40,
		features.WindowEndField:  float64(mt(16, 0).UnixMilli()),
		features.EventTimeField:  float64(events[len(events)-2].Timestamp.UnixMilli()),
	})
	// berlin's newest intake time (the last event of all is paris's).
	var lastBerlin time.Time
	for _, ev := range events {
		if ev.RegionID == "berlin" && ev.ReceivedAt.After(lastBerlin) {
			lastBerlin = ev.ReceivedAt
		}
	}
	if r, ok := got.LastEventReceived(); !ok || !r.Equal(lastBerlin.Truncate(time.Millisecond)) {
		t.Errorf("last_event_received_ms = %v (%v), want %v", r, ok, lastBerlin.Truncate(time.Millisecond))
	}
	mu.Lock()
	for _, a := range seasonAt {
		if !a.Equal(mt(16, 0)) && !a.Before(mt(16, 0)) {
			t.Errorf("seasonality looked up at %v, after the window end %v", a, mt(16, 0))
		}
	}
	if len(seasonAt) == 0 || !seasonAt[len(seasonAt)-1].Equal(mt(16, 0)) {
		t.Errorf("seasonality looked up at %v, want the window end %v last", seasonAt, mt(16, 0))
	}
	mu.Unlock()
	if ttl := e.rdb.TTL(context.Background(), features.Key("berlin")).Val(); ttl <= 0 || ttl > features.DefaultTTL {
		t.Errorf("TTL %v", ttl)
	}

	paris := e.features("paris")
	checkOnline(t, paris.Online, map[string]float64{
		features.Searches1m: 1, features.Searches15m: 1, features.Seasonality: 1, features.SearchesCurrent: 1,
	})
	if _, ok := paris.Online[features.Supply]; ok {
		t.Errorf("paris has supply %v without any supply report", paris.Online[features.Supply])
	}

	st := c.Status()
	if st.EventsProcessed != uint64(len(events)) || st.LateEvents != 0 || st.Lag() != 0 || st.LastFlush.IsZero() || st.LastError != "" {
		t.Errorf("status %+v", st)
	}
	if n := counter(t, reg, "surge_stream_events_processed_total", nil); n != float64(len(events)) {
		t.Errorf("processed metric %v, want %d", n, len(events))
	}
	if n := counter(t, reg, "surge_stream_feature_freshness_seconds", nil); n == 0 {
		t.Error("no freshness observation")
	}
}

func TestLateAndBackfill(t *testing.T) {
	e := newEnv(t)
	b := base()
	mt := func(m int, s float64) time.Time {
		return b.Add(time.Duration(m)*time.Minute + time.Duration(s*float64(time.Second)))
	}
	reg := prometheus.NewRegistry()
	c, _ := e.start(Options{Registerer: reg, Grace: 30 * time.Second}, nil)
	e.produce(
		ev("r", ingest.TypeSearch, mt(5, 20)),
		ev("r", ingest.TypeSearch, mt(5, 25)),
		ev("r", ingest.TypeSearch, mt(4, 55)),           // 30 s behind: within grace, in minute 4
		ev("r", ingest.TypeSearch, mt(4, 10)),           // 75 s behind: late
		ev("r", ingest.TypeBooking, mt(5, 24)),          // 1 s behind: in minute 5
		ev("r", ingest.TypeSearch, mt(5, 21), backfill), // backfill: skipped
		ev("r", ingest.TypeSearch, mt(6, 1)),            // closes minute 5
		ev("r", ingest.TypeSearch, mt(5, 10)),           // 51 s behind: late, after minute 5 closed
		// The supply topic has its own watermark: an older report counts.
		ev("r", ingest.TypeSupplyUpdate, mt(4, 0), withSupply(7)),
		ev("r", ingest.TypeSupplyUpdate, mt(3, 0), withSupply(99)), // 60 s behind on its topic: late
	)
	e.waitCommitted(c)

	got := e.features("r")
	checkOnline(t, got.Online, map[string]float64{
		features.Searches1m:      2,   // minute 5
		features.Bookings1m:      1,   // minute 5
		features.Searches5m:      1.5, // minutes 4 and 5
		features.SearchesCurrent: 1,   // minute 6
		features.Supply:          7,
		features.SupplyDemand:    7 / 1.5,
	})
	if n := counter(t, reg, "surge_stream_late_events_total", nil); n != 3 {
		t.Errorf("late metric %v, want 3", n)
	}
	if n := counter(t, reg, "surge_stream_late_events_total", map[string]string{"topic": ingest.TopicSupplyEvents}); n != 1 {
		t.Errorf("late metric of supply-events %v, want 1", n)
	}
	if n := counter(t, reg, "surge_stream_backfill_skipped_total", nil); n != 1 {
		t.Errorf("backfill metric %v, want 1", n)
	}
	st := c.Status()
	if st.LateEvents != 3 || st.BackfillSkipped != 1 {
		t.Errorf("status late %d backfill %d, want 3 and 1", st.LateEvents, st.BackfillSkipped)
	}
	var perPartition uint64
	for _, p := range st.Partitions {
		perPartition += p.LateEvents
	}
	if perPartition != 3 {
		t.Errorf("late per partition sum %d, want 3", perPartition)
	}
}

func TestInvalidMessages(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	c, _ := e.start(Options{Registerer: reg}, nil)
	now := time.Now()
	future := ev("r", ingest.TypeSearch, now.Add(time.Hour))
	fb, _ := future.Marshal()
	ok := ev("r", ingest.TypeSearch, now)
	ob, _ := ok.Marshal()
	ctx := context.Background()
	if err := e.writer.WriteMessages(ctx,
		kafka.Message{Topic: ingest.TopicUserEvents, Key: []byte("r"), Value: []byte("{not json")},
		kafka.Message{Topic: ingest.TopicUserEvents, Key: []byte("r"), Value: []byte(`{"type":"search","regionId":"r"}`)},
		kafka.Message{Topic: ingest.TopicUserEvents, Key: []byte("r"), Value: fb},
		kafka.Message{Topic: ingest.TopicUserEvents, Key: []byte("r"), Value: ob},
	); err != nil {
		t.Fatal(err)
	}
	// Invalid messages are skipped and committed past: a poison message
	// does not hold the consumer.
	e.waitCommitted(c)
	for reason, want := range map[string]float64{"decode": 1, "no_timestamp": 1, "future": 1} {
		if n := counter(t, reg, "surge_stream_invalid_events_total", map[string]string{"reason": reason}); n != want {
			t.Errorf("invalid{reason=%q} = %v, want %v", reason, n, want)
		}
	}
	checkOnline(t, e.features("r").Online, map[string]float64{features.SearchesCurrent: 1})
}

// writeLog records, through a go-redis hook, when each features hash is
// written.
type writeLog struct {
	mu     sync.Mutex
	writes map[string][]time.Time
}

func (l *writeLog) DialHook(next redis.DialHook) redis.DialHook { return next }
func (l *writeLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.record([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}
func (l *writeLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.record(cmds)
		return next(ctx, cmds)
	}
}
func (l *writeLog) record(cmds []redis.Cmder) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cmds {
		if c.Name() == "hset" {
			key := fmt.Sprint(c.Args()[1])
			l.writes[key] = append(l.writes[key], now)
		}
	}
}

func TestAtMostOneWritePerSecond(t *testing.T) {
	e := newEnv(t)
	log := &writeLog{writes: map[string][]time.Time{}}
	e.rdb.AddHook(log)
	c, _ := e.start(Options{}, nil)
	e.waitAssigned(c)

	// A burst of 3.5 s: 20 searches every 25 ms for hot, one every 500 ms
	// for cold, all in one event-time minute, so that only the minute under
	// way changes.
	minute := base()
	var hot, cold int
	start := time.Now()
	for i := 0; time.Since(start) < 3500*time.Millisecond; i++ {
		var batch []ingest.Event
		for k := range 20 {
			batch = append(batch, ev("hot", ingest.TypeSearch, minute.Add(time.Duration(i*20+k)*time.Millisecond)))
			hot++
		}
		if i%20 == 0 {
			batch = append(batch, ev("cold", ingest.TypeSearch, minute.Add(time.Duration(i)*time.Millisecond)))
			cold++
		}
		e.produce(batch...)
		time.Sleep(25 * time.Millisecond)
	}
	e.waitCommitted(c)

	// The features follow the minute under way, not only closed minutes.
	checkOnline(t, e.features("hot").Online, map[string]float64{features.SearchesCurrent: float64(hot)})
	checkOnline(t, e.features("cold").Online, map[string]float64{features.SearchesCurrent: float64(cold)})

	log.mu.Lock()
	defer log.mu.Unlock()
	for _, region := range []string{"hot", "cold"} {
		ws := log.writes[features.Key(region)]
		if len(ws) < 2 {
			t.Errorf("%s written %d times during a 3.5 s burst, want several", region, len(ws))
		}
		for i := 1; i < len(ws); i++ {
			// The consumer spaces the starts of its writes by ≥ 1 s; the
			// hook runs microseconds after that start (50 ms of slack for a
			// loaded machine; a violation would show the 200 ms flush period).
			if gap := ws[i].Sub(ws[i-1]); gap < 950*time.Millisecond {
				t.Errorf("%s written twice %v apart (writes %d and %d of %d)", region, gap, i-1, i, len(ws))
			}
		}
	}
}

func TestRedisDown(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	c, _ := e.start(Options{Registerer: reg, MaxBackoff: 500 * time.Millisecond}, nil)
	now := time.Now()
	e.produce(ev("a", ingest.TypeSearch, now), ev("a", ingest.TypeSearch, now))
	e.waitCommitted(c)
	_, before := e.offsets("features-test")

	if err := e.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	e.produce(ev("a", ingest.TypeSearch, now), ev("a", ingest.TypeSearch, now), ev("b", ingest.TypeSearch, now))
	ends, _ := e.offsets("features-test")
	errsBefore := c.Status().RedisWriteErrors
	// Wait until the consumer has read everything and failed to write it
	// twice: it had every chance to commit.
	e.waitFor("events read, writes failing", func() bool {
		st := c.Status()
		for _, p := range st.Partitions {
			if p.Position != ends[p.Topic][p.Partition] {
				return false
			}
		}
		return st.RedisWriteErrors >= errsBefore+2
	})
	_, during := e.offsets("features-test")
	for topic, ps := range before {
		for p, off := range ps {
			if during[topic][p] != off {
				t.Errorf("%s/%d committed %d → %d while Redis was down", topic, p, off, during[topic][p])
			}
		}
	}
	if st := c.Status(); !strings.Contains(st.LastError, "write features") {
		t.Errorf("last error %q", st.LastError)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.redis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitCommitted(c)
	checkOnline(t, e.features("a").Online, map[string]float64{features.SearchesCurrent: 4})
	checkOnline(t, e.features("b").Online, map[string]float64{features.SearchesCurrent: 1})
	if n := counter(t, reg, "surge_stream_redis_write_errors_total", nil); n < 2 {
		t.Errorf("write errors metric %v", n)
	}
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name    string
		rebuild time.Duration
		want    map[string]float64
	}{
		{
			// The new instance re-reads the committed messages to rebuild
			// its windows, without counting them again.
			name:    "rebuild",
			rebuild: 0, // default
			want: map[string]float64{
				features.Searches1m: 3, features.Searches15m: 3.5, features.SearchesCurrent: 1,
				features.Supply: 5,
			},
		},
		{
			// Without rebuild the windows before the last commit are lost.
			name:    "no rebuild",
			rebuild: -1,
			want: map[string]float64{
				features.Searches1m: 2, features.Searches15m: 2, features.SearchesCurrent: 1,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			b := base()
			mt := func(m int, s float64) time.Time {
				return b.Add(time.Duration(m)*time.Minute + time.Duration(s*float64(time.Second)))
			}

			first := []ingest.Event{
				ev("x", ingest.TypeSupplyUpdate, mt(0, 0), withSupply(5)),
				ev("x", ingest.TypeSearch, mt(0, 1)), ev("x", ingest.TypeSearch, mt(0, 2)),
				ev("x", ingest.TypeSearch, mt(0, 3)), ev("x", ingest.TypeSearch, mt(0, 4)),
				ev("x", ingest.TypeSearch, mt(1, 1)),
			}
			regA := prometheus.NewRegistry()
			a, stopA := e.start(Options{Registerer: regA, Rebuild: tt.rebuild}, nil)
			e.waitAssigned(a) // a new group without rebuild starts at the end
			e.produce(first...)
			e.waitCommitted(a)
			stopA()
			checkOnline(t, e.features("x").Online, map[string]float64{features.Searches1m: 4, features.SearchesCurrent: 1})

			second := []ingest.Event{
				ev("x", ingest.TypeSearch, mt(1, 2)), ev("x", ingest.TypeSearch, mt(1, 3)),
				ev("x", ingest.TypeSearch, mt(2, 1)),
			}
			e.produce(second...)
			regB := prometheus.NewRegistry()
			b2, _ := e.start(Options{Registerer: regB, Rebuild: tt.rebuild}, nil)
			e.waitCommitted(b2)

			checkOnline(t, e.features("x").Online, tt.want)
			if st := b2.Status(); st.EventsProcessed != uint64(len(second)) {
				t.Errorf("new instance processed %d events, want %d (the committed ones are not counted again)", st.EventsProcessed, len(second))
			}
			if n := counter(t, regB, "surge_stream_events_processed_total", nil); n != float64(len(second)) {
				t.Errorf("processed metric %v, want %d", n, len(second))
			}
			wantReplayed := float64(len(first))
			if tt.rebuild < 0 {
				wantReplayed = 0
			}
			if n := counter(t, regB, "surge_stream_replayed_events_total", nil); n != wantReplayed {
				t.Errorf("replayed metric %v, want %v", n, wantReplayed)
			}
		})
	}
}

// TestBrokerRestart stops kfake under a running consumer: it reconnects
// and resumes with its state (same assignment), and commits again.
func TestBrokerRestart(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(Options{}, nil)
	b := base()
	e.produce(ev("k", ingest.TypeSearch, b), ev("k", ingest.TypeSearch, b.Add(time.Second)))
	e.waitCommitted(c)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.kafka.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	e.reconnect() // the old connections died with the broker
	e.produce(ev("k", ingest.TypeSearch, b.Add(2*time.Second)))
	e.waitCommitted(c)
	checkOnline(t, e.features("k").Online, map[string]float64{features.SearchesCurrent: 3})
	if st := c.Status(); st.EventsProcessed != 3 {
		t.Errorf("processed %d, want 3", st.EventsProcessed)
	}
}
