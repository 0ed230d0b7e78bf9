package compat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/sink"
)

// TestSink: the Kafka-to-ClickHouse sink (kfake broker) inserts events,
// pricing decisions and exposures exactly once through its fenced inserts
// and dedup lookups (external tables), and repairs the views of a block
// that landed in events_raw without some of them, as a server killed in
// the middle of an INSERT leaves it.
func TestSink(t *testing.T) {
	conn, db := migrated(t)
	ctx := t.Context()
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: ingest.Topics, Partitions: 3})

	rng := rand.New(rand.NewPCG(7, 42))
	base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	var msgs []kafka.Message
	var searches, bookings uint64
	for i := range 2000 {
		e := ingest.Event{
			EventID: fmt.Sprintf("ev-%d", i), RegionID: fmt.Sprintf("r%d", rng.IntN(4)), ProductType: "ride",
			Timestamp: base.Add(time.Duration(rng.IntN(7200)) * time.Second), UserHash: fmt.Sprintf("u%d", rng.IntN(50)),
			ReceivedAt: base.Add(3 * time.Hour),
		}
		switch r := rng.IntN(10); {
		case r < 6:
			e.Type = ingest.TypeSearch
			searches++
		case r < 8:
			e.Type = ingest.TypeBooking
			price := float64(5 + rng.IntN(20))
			e.Price = &price
			bookings++
		default:
			e.Type = ingest.TypeSupplyUpdate
			supply := float64(rng.IntN(60))
			e.AvailableSupply = &supply
		}
		if rng.IntN(3) == 0 {
			e.Experiment = &ingest.Experiment{ID: "exp1", Variant: []string{"A", "B"}[rng.IntN(2)]}
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Topic: ingest.TopicFor(e.Type), Key: []byte(e.RegionID), Value: b})
	}
	msgs = append(msgs, msgs[0]) // a resend: the same event twice
	for i := range 50 {
		d, _ := json.Marshal(map[string]any{"quoteId": fmt.Sprintf("q%d", i), "at": base, "regionId": "r1", "productType": "ride",
			"surgeMultiplier": 1.5, "price": 12, "currency": "EUR", "ruleVersion": 1, "forecast": map[string]any{"source": "MODEL"}})
		msgs = append(msgs, kafka.Message{Topic: ingest.TopicPricingDecisions, Key: []byte("r1"), Value: d})
		x, _ := json.Marshal(experiments.Exposure{ExperimentID: "exp1", Variant: "A", UserHash: fmt.Sprintf("u%d", i), RegionID: "r1", ProductType: "ride", At: base})
		msgs = append(msgs, kafka.Message{Topic: ingest.TopicExperiments, Key: []byte("r1"), Value: x})
	}
	msgs = append(msgs, msgs[len(msgs)-2]) // a decision sent twice
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: 2 * time.Millisecond}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	// First run: three views detached, as a server killed in the middle of
	// an INSERT leaves the block (in events_raw, not in them).
	missing := []string{"experiment_metrics_daily_mv", "user_activity_minute_mv", "zz_events_raw_offsets_mv"}
	for _, v := range missing {
		if err := conn.Exec(ctx, "DETACH TABLE "+db+"."+v); err != nil {
			t.Fatal(err)
		}
	}
	// The first insert into pricing_decisions succeeds but its answer is
	// lost: the sink reconciles with what ClickHouse holds.
	lost := &lostAck{Conn: conn, query: "INSERT INTO " + db + ".pricing_decisions"}
	runSink(t, k.Brokers, lost, db, func() bool { return count(t, conn, "SELECT count() FROM events_raw") == 2000 })
	if !lost.done.Load() {
		t.Fatal("no insert into pricing_decisions lost its answer")
	}
	for _, v := range missing {
		if err := conn.Exec(ctx, "ATTACH TABLE "+db+"."+v); err != nil {
			t.Fatal(err)
		}
	}
	// Second run: reads the block again, inserts nothing twice, repairs.
	s := runSink(t, k.Brokers, conn, db, func() bool {
		return count(t, conn, "SELECT sum(bookings) FROM user_activity_minute") == bookings
	})

	for _, c := range []struct {
		query string
		want  uint64
	}{
		{"SELECT count() FROM events_raw", 2000},
		{"SELECT uniqExact(event_id) FROM events_raw", 2000},
		{"SELECT count() FROM pricing_decisions", 50},
		{"SELECT count() FROM experiment_exposures", 50},
		{"SELECT sum(searches) FROM demand_minute", searches},
		{"SELECT sum(bookings) FROM user_activity_minute", bookings},
	} {
		if got := count(t, conn, c.query); got != c.want {
			t.Errorf("%s = %d, want %d", c.query, got, c.want)
		}
	}
	if st := s.Status(); st.Duplicates == 0 {
		t.Errorf("sink status %+v: no duplicate dropped", st)
	}
}

func count(t *testing.T, conn driver.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(t.Context(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// runSink runs a sink of group "compat" until every partition is caught
// up and done (when not nil) holds, then stops it.
func runSink(t *testing.T, brokers []string, conn driver.Conn, db string, done func() bool) *sink.Sink {
	t.Helper()
	s, err := sink.New(brokers, conn, db, sink.Options{GroupID: "compat", BatchDelay: 50 * time.Millisecond,
		LagInterval: 50 * time.Millisecond, InsertTimeout: 30 * time.Second, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	deadline, _ := t.Deadline()
	if deadline.IsZero() || time.Until(deadline) > time.Minute {
		deadline = time.Now().Add(time.Minute)
	}
	for {
		st := s.Status()
		caught := len(st.Partitions) == len(ingest.Topics)*3
		for _, p := range st.Partitions {
			caught = caught && p.Lag == 0
		}
		if caught && (done == nil || done()) {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("sink not caught up: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("sink Run: %v", err)
	}
	return s
}

// lostAck runs the first Exec starting with query, then fails it as a
// connection lost before the answer would.
type lostAck struct {
	driver.Conn
	query string
	done  atomic.Bool
}

func (c *lostAck) Exec(ctx context.Context, query string, args ...any) error {
	err := c.Conn.Exec(ctx, query, args...)
	if err == nil && strings.HasPrefix(query, c.query) && c.done.CompareAndSwap(false, true) {
		return errors.New("compat: connection lost before the answer (injected)")
	}
	return err
}
