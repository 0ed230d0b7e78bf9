package sink

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
)

// childEnv selects the helper main: the test binary re-executed with it
// runs a sink (see childMain) instead of the tests.
const childEnv = "SURGE_SINK_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	testenv.Main(m)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// env is a kfake broker with the topics and a migrated ClickHouse database.
type env struct {
	kafka   *devenv.Kafka
	brokers []string
	chAddr  string
	db      string
	conn    driver.Conn
}

// testPartitions per topic: several, so that batches span partitions.
const testPartitions = 3

func newEnv(t testing.TB) *env {
	t.Helper()
	k := testenv.KafkaWith(t, kafkaOpts())
	addr, db := testenv.ClickHouse(t)
	e := &env{kafka: k, brokers: k.Brokers, chAddr: addr, db: db}
	e.conn = openMigrated(t, addr, db)
	return e
}

func openMigrated(t testing.TB, addr, db string) driver.Conn {
	t.Helper()
	conn := chtest.Open(t, addr, db)
	return conn
}

// testOptions are fast settings for tests; a test's own fields win.
func testOptions(o Options) Options {
	if o.BatchDelay == 0 {
		o.BatchDelay = 50 * time.Millisecond
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 20 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 300 * time.Millisecond
	}
	if o.LagInterval == 0 {
		o.LagInterval = 50 * time.Millisecond
	}
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 6 * time.Second
	}
	if o.RebalanceTimeout == 0 {
		o.RebalanceTimeout = 6 * time.Second
	}
	if o.InsertTimeout == 0 {
		o.InsertTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = testLogger()
	}
	return o
}

func testLogger() *slog.Logger {
	if os.Getenv("SURGE_SINK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// runSink starts a sink in the background; the returned stop cancels it
// and checks that Run returned nil. It is also called at cleanup.
func runSink(t testing.TB, brokers []string, conn driver.Conn, db string, opts Options) (*Sink, func()) {
	t.Helper()
	s, err := New(brokers, conn, db, testOptions(opts))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var stopped atomic.Bool
	stop := func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// waitFor polls cond until it holds; it fails the test after a minute.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// caughtUp reports whether every partition of the status is assigned,
// known and without lag.
func caughtUp(st Status, partitions int) bool {
	if len(st.Partitions) != partitions {
		return false
	}
	for _, p := range st.Partitions {
		if p.Lag != 0 {
			return false
		}
	}
	return true
}

// allPartitions is the number of partitions the sink consumes.
const allPartitions = 5 * testPartitions

func newWriter(brokers []string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    1000,
		BatchTimeout: 2 * time.Millisecond,
	}
}

// produceEvents writes events to their topics, keyed by region.
func produceEvents(t testing.TB, brokers []string, evs []ingest.Event) {
	t.Helper()
	produce(t, brokers, eventMessages(t, evs))
}

// eventMessages are the records of events on their topics, keyed by region.
func eventMessages(t testing.TB, evs []ingest.Event) []kafka.Message {
	t.Helper()
	msgs := make([]kafka.Message, len(evs))
	for i := range evs {
		b, err := evs[i].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = kafka.Message{Topic: ingest.TopicFor(evs[i].Type), Key: []byte(evs[i].RegionID), Value: b}
	}
	return msgs
}

func produce(t testing.TB, brokers []string, msgs []kafka.Message) {
	t.Helper()
	w := newWriter(brokers)
	defer w.Close()
	ctx := ctxT(t)
	for lo := 0; lo < len(msgs); lo += 10_000 {
		if err := w.WriteMessages(ctx, msgs[lo:min(lo+10_000, len(msgs))]...); err != nil {
			t.Fatal(err)
		}
	}
}

func f64(v float64) *float64 { return &v }

// genEvents returns n reproducible events whose sums are exact in float64
// (integers and quarters), over five regions, two hours of one day and a
// few backfilled ones of the previous month.
func genEvents(n int, seed uint64) []ingest.Event {
	rng := rand.New(rand.NewPCG(seed, 42))
	base := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	out := make([]ingest.Event, n)
	for i := range out {
		e := ingest.Event{
			EventID:    fmt.Sprintf("ev-%d-%d", seed, i),
			RegionID:   "r" + strconv.Itoa(rng.IntN(5)),
			Timestamp:  base.Add(time.Duration(rng.IntN(7200)) * time.Second).Add(time.Duration(rng.IntN(1000)) * time.Millisecond),
			UserHash:   "u" + strconv.Itoa(rng.IntN(100)),
			ReceivedAt: base.Add(3 * time.Hour),
		}
		if rng.IntN(20) == 0 {
			e.Backfill = true
			e.Timestamp = base.AddDate(0, 0, -rng.IntN(5)-1)
		}
		switch r := rng.IntN(100); {
		case r < 50:
			e.Type = ingest.TypeSearch
		case r < 65:
			e.Type = ingest.TypeBooking
			e.Price = f64(float64(5 + rng.IntN(46)))
		case r < 70:
			e.Type = ingest.TypeCancel
		case r < 90:
			e.Type = ingest.TypeSupplyUpdate
			e.AvailableSupply = f64(float64(rng.IntN(60)))
		default:
			e.Type = ingest.TypeExternalSignal
			e.Signal = []string{ingest.SignalWeather, ingest.SignalTraffic, ingest.SignalEvent}[rng.IntN(3)]
			e.Value = f64(float64(rng.IntN(5)) / 4)
		}
		if (e.Type == ingest.TypeSearch || e.Type == ingest.TypeBooking) && rng.IntN(3) == 0 {
			e.Experiment = &ingest.Experiment{ID: "exp1", Variant: []string{"A", "B"}[rng.IntN(2)]}
		}
		out[i] = e
	}
	return out
}

// childMain is the helper main of the SIGKILL test: a sink over the
// addresses in the environment until SIGTERM. With
// SURGE_SINK_TEST_KILL_AFTER_SEND=k it kills itself with SIGKILL right
// after its k-th insert returned (inserted, not committed); with
// SURGE_SINK_TEST_KILL_BEFORE_SEND=k right before its k-th insert is sent.
func childMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	db := os.Getenv("SURGE_SINK_TEST_DB")
	conn, err := analytics.Open(ctx, analytics.Options{Addr: os.Getenv("SURGE_SINK_TEST_CLICKHOUSE"), Database: db})
	if err != nil {
		log.Error("open clickhouse", "err", err)
		return 2
	}
	defer conn.Close()
	kc := &killConn{Conn: conn}
	kc.after, _ = strconv.ParseInt(os.Getenv("SURGE_SINK_TEST_KILL_AFTER_SEND"), 10, 64)
	kc.before, _ = strconv.ParseInt(os.Getenv("SURGE_SINK_TEST_KILL_BEFORE_SEND"), 10, 64)
	kc.stall, _ = strconv.ParseInt(os.Getenv("SURGE_SINK_TEST_STALL_AFTER_SEND"), 10, 64)
	batch, _ := strconv.Atoi(os.Getenv("SURGE_SINK_TEST_BATCH"))
	s, err := New(strings.Split(os.Getenv("SURGE_SINK_TEST_BROKERS"), ","), kc, db, testOptions(Options{
		GroupID:   os.Getenv("SURGE_SINK_TEST_GROUP"),
		BatchSize: batch,
		Logger:    log,
	}))
	if err != nil {
		log.Error("new sink", "err", err)
		return 2
	}
	if err := s.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}

// killConn kills its process around its k-th batch Send.
type killConn struct {
	driver.Conn
	before, after int64
	stall         int64 // SIGSTOP itself right after this send
	sends         atomic.Int64
}

func (c *killConn) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	b, err := c.Conn.PrepareBatch(ctx, query, opts...)
	if err != nil {
		return nil, err
	}
	return &killBatch{Batch: b, c: c}, nil
}

type killBatch struct {
	driver.Batch
	c *killConn
}

func (b *killBatch) Send() error { return b.c.send(b.Batch.Send) }

// Exec carries the fenced inserts (INSERT ... SELECT FROM batch).
func (c *killConn) Exec(ctx context.Context, query string, args ...any) error {
	if !strings.HasPrefix(query, "INSERT") {
		return c.Conn.Exec(ctx, query, args...)
	}
	return c.send(func() error { return c.Conn.Exec(ctx, query, args...) })
}

// send runs one insert, killing or stopping the process around it.
func (c *killConn) send(insert func() error) error {
	n := c.sends.Add(1)
	if n == c.before {
		fmt.Fprintf(os.Stderr, "child: SIGKILL before send %d\n", n)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	err := insert()
	if err == nil {
		fmt.Fprintf(os.Stderr, "child: inserted batch %d\n", n) // TestSIGKILLMidBatch waits for it
	}
	if n == c.stall && err == nil {
		fmt.Fprintf(os.Stderr, "child: SIGSTOP after send %d\n", n)
		_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP) // until the test sends SIGCONT
	}
	if n == c.after && err == nil {
		fmt.Fprintf(os.Stderr, "child: SIGKILL after send %d\n", n)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	return err
}

func kafkaOpts() devenv.KafkaOptions {
	return devenv.KafkaOptions{Topics: ingest.Topics, Partitions: testPartitions}
}

func itoa(i int) string { return strconv.Itoa(i) }

// noConn is a driver.Conn for tests that never reach ClickHouse.
type noConn struct{ driver.Conn }
