package experiments

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/surgeworks/surge/internal/chtest"
)

// BenchmarkAssign is the cost assignment adds to a price computation: three
// running experiments, one of which targets the request.
func BenchmarkAssign(b *testing.B) {
	s := &Service{}
	var exps []Experiment
	for i, region := range []string{"berlin", "paris", "london"} {
		e := Experiment{ID: fmt.Sprintf("e%d", i), Salt: fmt.Sprintf("e%d", i), Layer: "default", Status: StatusRunning,
			Regions: []string{region}, Variants: []Variant{{Name: "control", Weight: 50}, {Name: "t", Weight: 50}}}
		exps = append(exps, e)
	}
	s.snap.Store(newSnapshot(exps))
	users := make([]string, 1024)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if len(s.Assign("paris", "ride", users[i%len(users)])) != 1 {
			b.Fatal("not assigned")
		}
	}
}

// BenchmarkExperimentResults reads and refreshes the results of an experiment with 10
// million exposures of 1 million users and 1 million bookings (plus 200,000
// pre-period bookings), generated inside ClickHouse and passed through the
// materialized views as the sink's inserts are.
func BenchmarkExperimentResults(b *testing.B) {
	conn, _, _ := chtest.Migrated(b)
	ctx := context.Background()
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: start}
	svc, err := New(conn, Options{Now: clk.now, Rules: nil})
	if err != nil {
		b.Fatal(err)
	}
	e := valid()
	e.ID = "bench"
	if _, err := svc.Create(ctx, e, "bench"); err != nil {
		b.Fatal(err)
	}
	// Start without rules (the benchmark needs no strategy check).
	svc.mu.Lock()
	cur, _ := svc.current(ctx, e.ID)
	cur.Status, cur.StartedAt = StatusRunning, start
	if _, err := svc.save(ctx, cur, "bench", "started"); err != nil {
		b.Fatal(err)
	}
	svc.mu.Unlock()
	const span = 14 * 86400
	loads := []string{
		// 10,000,000 exposures: user u<n mod 1e6>, variant by the user's parity.
		fmt.Sprintf(`INSERT INTO experiment_exposures SELECT 'bench', if(number %% 2 = 0, 'control', 'cheaper'),
			concat('u', toString(number %% 1000000)), 'berlin', 'ride', '', toDateTime(%d + number %% %d), 'experiments', 0, number
			FROM numbers(10000000)`, start.Unix(), span),
		// 1,000,000 bookings during the experiment and 200,000 before it.
		fmt.Sprintf(`INSERT INTO events_raw (event_id, type, region_id, event_time, received_at, user_hash, product_type, price,
			experiment_id, variant, kafka_topic, kafka_partition, kafka_offset)
			SELECT concat('b', toString(number)), 'booking', 'berlin', toDateTime(%d + number %% %d), toDateTime(%d + number %% %d),
			concat('u', toString(intHash32(number) %% 1000000)), 'ride', toNullable(toFloat64(5 + number %% 100 / 4)),
			'bench', '', 'user-events', 0, number FROM numbers(1000000)`, start.Unix(), span, start.Unix(), span),
		fmt.Sprintf(`INSERT INTO events_raw (event_id, type, region_id, event_time, received_at, user_hash, product_type, price,
			kafka_topic, kafka_partition, kafka_offset)
			SELECT concat('p', toString(number)), 'booking', 'berlin', toDateTime(%d - 1 - number %% 86400), toDateTime(%d),
			concat('u', toString(intHash32(number + 7) %% 1000000)), 'ride', toNullable(toFloat64(5 + number %% 80 / 4)),
			'user-events', 1, number FROM numbers(200000)`, start.Unix(), start.Unix()),
	}
	for _, q := range loads {
		if err := conn.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	clk.set(start.Add(span * time.Second))
	res, err := svc.Results(ctx, []string{e.ID})
	if err != nil {
		b.Fatal(err)
	}
	var users, bookings int64
	for _, v := range res[0].Variants {
		users += v.Users
		bookings += v.Conversions
	}
	if users != 1_000_000 || bookings != 1_000_000 {
		b.Fatalf("results: %d users, %d bookings; want 1,000,000 each", users, bookings)
	}
	// read: what experimentResults costs (latest snapshot and statistics);
	// refresh: what the background refresh costs ClickHouse per experiment.
	b.Run("read", func(b *testing.B) {
		for b.Loop() {
			if _, err := svc.Results(ctx, []string{e.ID}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/results")
	})
	b.Run("refresh", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			clk.set(start.Add(span*time.Second + time.Duration(i+1)*time.Second))
			if err := svc.RefreshResults(ctx, e.ID); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/refresh")
	})
}
