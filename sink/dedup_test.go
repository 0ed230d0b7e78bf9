package sink

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/ingest"
)

func TestTimeRanges(t *testing.T) {
	many := make([]int64, 0, 100)
	for i := range int64(100) {
		many = append(many, i*1000)
	}
	for _, c := range []struct {
		name    string
		seconds []int64
		want    string
		ranges  int
	}{
		{"one second", []int64{50}, "t BETWEEN toDateTime(50) AND toDateTime(50)", 1},
		{"close seconds merge", []int64{100, 30, 60, 160}, "t BETWEEN toDateTime(30) AND toDateTime(160)", 1},
		{"a late event stays apart", []int64{10_000, 10_001, 100}, "t BETWEEN toDateTime(100) AND toDateTime(100) OR t BETWEEN toDateTime(10000) AND toDateTime(10001)", 2},
		{"bounded", many, "", maxTimeRanges},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := timeRanges("t", append([]int64(nil), c.seconds...))
			if c.want != "" && got != c.want {
				t.Errorf("timeRanges = %q, want %q", got, c.want)
			}
			if n := strings.Count(got, "BETWEEN"); n != c.ranges {
				t.Errorf("%d ranges, want %d", n, c.ranges)
			}
			for _, sec := range c.seconds { // every second is covered
				covered := false
				for _, part := range strings.Split(got, " OR ") {
					var lo, hi int64
					if _, err := fmt.Sscanf(part, "t BETWEEN toDateTime(%d) AND toDateTime(%d)", &lo, &hi); err != nil {
						t.Fatal(err)
					}
					covered = covered || (lo <= sec && sec <= hi)
				}
				if !covered {
					t.Errorf("second %d not covered by %s", sec, got)
				}
			}
		})
	}
}

// TestResentEventsCountOnce: the same events on Kafka twice — at other
// offsets (a resend accepted again after Redis forgot its dedup keys, or a
// produce that timed out but was written), and twice in one batch (kafka-go
// retrying inside one WriteMessages) — are counted once in events_raw and
// in every view; a pricing decision sent twice is stored once.
func TestResentEventsCountOnce(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := genEvents(3000, 21)
	produceEvents(t, e.brokers, evs)
	s, stop := runSink(t, e.brokers, e.conn, e.db, Options{})
	waitFor(t, "the first copies", func() bool {
		return caughtUp(s.Status(), allPartitions) && rawCount(t, ctx, e.conn) == uint64(len(evs))
	})

	// Resends: a third of the events again, some of them twice in a row.
	var again []ingest.Event
	for i := 0; i < len(evs); i += 3 {
		again = append(again, evs[i])
		if i%2 == 0 {
			again = append(again, evs[i])
		}
	}
	produceEvents(t, e.brokers, again)
	d := decision("q-resent", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), 1.5)
	produce(t, e.brokers, []kafka.Message{
		{Topic: ingest.TopicPricingDecisions, Key: []byte("r1"), Value: d},
		{Topic: ingest.TopicPricingDecisions, Key: []byte("r1"), Value: d},
	})
	waitFor(t, "the resends consumed", func() bool {
		return caughtUp(s.Status(), allPartitions) && s.Status().Duplicates >= uint64(len(again)+1)
	})
	stop()
	if got, want := s.Status().Duplicates, uint64(len(again)+1); got != want {
		t.Errorf("Status().Duplicates = %d, want %d", got, want)
	}
	checkExact(t, ctx, e.conn, evs)
	checkViewsAgree(t, ctx, e.conn, e.db)
	var decisions uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM pricing_decisions WHERE quote_id = 'q-resent'").Scan(&decisions); err != nil {
		t.Fatal(err)
	}
	if decisions != 1 {
		t.Errorf("the decision sent twice is stored %d times", decisions)
	}
}

// TestHalfWrittenInsertIsRepaired makes what a ClickHouse server killed in
// the middle of an INSERT leaves: events_raw and one view got the block,
// the other views and sink_offsets did not (their materialized views are
// detached while a sink inserts). A sink started afterwards reads the
// block again, finds its events in events_raw at their own offsets,
// inserts nothing twice and completes the views that lack them.
func TestHalfWrittenInsertIsRepaired(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := genEvents(4000, 22)
	produceEvents(t, e.brokers, evs)

	missing := []string{"experiment_metrics_daily_mv", "user_activity_minute_mv", "zz_events_raw_offsets_mv"}
	for _, v := range missing {
		if err := e.conn.Exec(ctx, "DETACH TABLE "+e.db+"."+v); err != nil {
			t.Fatal(err)
		}
	}
	s, stop := runSink(t, e.brokers, e.conn, e.db, Options{GroupID: "half-written"})
	waitFor(t, "events_raw without some views", func() bool { return rawCount(t, ctx, e.conn) == uint64(len(evs)) })
	stop()
	for _, v := range missing {
		if err := e.conn.Exec(ctx, "ATTACH TABLE "+e.db+"."+v); err != nil {
			t.Fatal(err)
		}
	}
	var offsets uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM sink_offsets WHERE kafka_topic != 'pricing-decisions'").Scan(&offsets); err != nil {
		t.Fatal(err)
	}
	if offsets != 0 {
		t.Fatalf("sink_offsets has %d rows of event topics: the setup did not leave the block unrecorded", offsets)
	}

	s, stop = runSink(t, e.brokers, e.conn, e.db, Options{GroupID: "half-written"})
	waitFor(t, "the block read again", func() bool { return caughtUp(s.Status(), allPartitions) })
	stop()
	checkExact(t, ctx, e.conn, evs)
	checkViewsAgree(t, ctx, e.conn, e.db)
}

// checkViewsAgree fails unless every repairable view of events_raw holds
// exactly what its SELECT gives over events_raw: no key differs and the
// totals are equal (keys only the view has would escape the first check).
func checkViewsAgree(t testing.TB, ctx context.Context, conn driver.Conn, db string) {
	t.Helper()
	s := &Sink{conn: conn, db: db}
	views, err := s.summingViews(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) < 3 {
		t.Fatalf("found %d views of events_raw, want demand_minute, experiment_metrics_daily and user_activity_minute", len(views))
	}
	for _, v := range views {
		q, args, err := s.viewDiff(v, viewFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var differing uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM ("+q+")", args...).Scan(&differing); err != nil {
			t.Fatalf("view %s: %v", v.name, err)
		}
		if differing != 0 {
			t.Errorf("view %s: %d keys differ from events_raw", v.name, differing)
		}
		for _, c := range v.counts {
			var inView, inRaw uint64
			if err := conn.QueryRow(ctx, "SELECT sum("+c+") FROM "+db+"."+v.target).Scan(&inView); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(ctx, "SELECT sum("+c+") FROM ("+v.sel+")").Scan(&inRaw); err != nil {
				t.Fatal(err)
			}
			if inView != inRaw {
				t.Errorf("view %s: sum(%s) = %d, events_raw gives %d", v.name, c, inView, inRaw)
			}
		}
	}
}
