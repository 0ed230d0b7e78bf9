package sink

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/auditrecord"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/internal/testenv"
)

// handEvents are a few events whose aggregates are written out by hand in
// TestSinkEndToEnd.
func handEvents() []ingest.Event {
	at := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	exp := func(v string) *ingest.Experiment { return &ingest.Experiment{ID: "exp1", Variant: v} }
	return []ingest.Event{
		{EventID: "1", Type: "search", RegionID: "berlin", Timestamp: at("2024-05-01T10:00:05Z"), Experiment: exp("A"), UserHash: "u1"},
		{EventID: "2", Type: "search", RegionID: "berlin", Timestamp: at("2024-05-01T10:00:15Z"), Experiment: exp("B")},
		{EventID: "3", Type: "search", RegionID: "berlin", Timestamp: at("2024-05-01T10:00:59.999Z")},
		{EventID: "4", Type: "booking", RegionID: "berlin", Timestamp: at("2024-05-01T10:00:30Z"), Price: f64(12.5), Experiment: exp("A"),
			QuoteID: "q-4", UserHash: "u1", ProductType: "ride", ReceivedAt: at("2024-05-01T10:00:31Z")},
		{EventID: "5", Type: "booking", RegionID: "berlin", Timestamp: at("2024-05-01T10:01:10Z"), Price: f64(20), Experiment: exp("B")},
		{EventID: "6", Type: "cancel", RegionID: "berlin", Timestamp: at("2024-05-01T10:01:20Z")},
		{EventID: "7", Type: "supply_update", RegionID: "berlin", Timestamp: at("2024-05-01T10:00:10Z"), AvailableSupply: f64(8)},
		{EventID: "8", Type: "supply_update", RegionID: "berlin", Timestamp: at("2024-05-01T10:00:40Z"), AvailableSupply: f64(12)},
		{EventID: "9", Type: "external_signal", RegionID: "berlin", Timestamp: at("2024-05-01T10:00:20Z"), Signal: "weather", Value: f64(0.5)},
		{EventID: "10", Type: "external_signal", RegionID: "berlin", Timestamp: at("2024-05-01T10:01:00Z"), Signal: "traffic", Value: f64(0.25)},
		{EventID: "11", Type: "external_signal", RegionID: "berlin", Timestamp: at("2024-05-01T10:01:30Z"), Signal: "event", Value: f64(1)},
		{EventID: "12", Type: "search", RegionID: "paris", Timestamp: at("2024-05-01T10:00:00Z"), Experiment: exp("A")},
		{EventID: "13", Type: "search", RegionID: "paris", Timestamp: at("2024-04-30T23:59:59Z"), Experiment: exp("A"), Backfill: true},
		{EventID: "14", Type: "booking", RegionID: "paris", Timestamp: at("2024-04-30T23:00:00Z"), Price: f64(7), Experiment: exp("A"), Backfill: true},
	}
}

func TestSinkEndToEnd(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := handEvents()
	produceEvents(t, e.brokers, evs)
	reg := prometheus.NewRegistry()
	s, stop := runSink(t, e.brokers, e.conn, e.db, Options{GroupID: "g1", Registerer: reg})
	waitFor(t, "all events in ClickHouse", func() bool { return caughtUp(s.Status(), allPartitions) })
	stop()

	// demand_minute, by hand.
	m := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, s); return t }
	wantDemand := map[minuteKey]minuteAgg{
		{"berlin", m("2024-05-01T10:00:00Z")}: {searches: 3, bookings: 1, supply: 20, supplyN: 2, weather: 0.5, weatherN: 1},
		{"berlin", m("2024-05-01T10:01:00Z")}: {bookings: 1, cancels: 1, traffic: 0.25, trafficN: 1, event: 1, eventN: 1},
		{"paris", m("2024-05-01T10:00:00Z")}:  {searches: 1},
		{"paris", m("2024-04-30T23:59:00Z")}:  {searches: 1},
		{"paris", m("2024-04-30T23:00:00Z")}:  {bookings: 1},
	}
	got := readDemand(t, ctx, e.conn)
	if len(got) != len(wantDemand) {
		t.Errorf("demand_minute has %d rows, want %d: %+v", len(got), len(wantDemand), got)
	}
	for k, w := range wantDemand {
		if got[k] != w {
			t.Errorf("demand_minute %v = %+v, want %+v", k, got[k], w)
		}
	}
	// experiment_metrics_daily, by hand.
	wantExp := map[expKey]expAgg{
		{"exp1", "A", m("2024-05-01T00:00:00Z")}: {exposures: 2, conversions: 1, revenue: 12.5, revenueSq: 156.25},
		{"exp1", "B", m("2024-05-01T00:00:00Z")}: {exposures: 1, conversions: 1, revenue: 20, revenueSq: 400},
		{"exp1", "A", m("2024-04-30T00:00:00Z")}: {exposures: 1, conversions: 1, revenue: 7, revenueSq: 49},
	}
	gotExp := readExperiments(t, ctx, e.conn)
	if len(gotExp) != len(wantExp) {
		t.Errorf("experiment_metrics_daily has %d rows, want %d: %+v", len(gotExp), len(wantExp), gotExp)
	}
	for k, w := range wantExp {
		if gotExp[k] != w {
			t.Errorf("experiment_metrics_daily %v = %+v, want %+v", k, gotExp[k], w)
		}
	}
	checkExact(t, ctx, e.conn, evs) // the reference computation agrees

	// A row as stored.
	var (
		typ, region, userHash, product, quote, experiment, variant, topic string
		eventTime, receivedAt                                             time.Time
		price, supply                                                     *float64
		backfill                                                          uint8
	)
	if err := e.conn.QueryRow(ctx, `SELECT type, region_id, user_hash, product_type, quote_id, experiment_id, variant, kafka_topic,
		event_time, received_at, price, available_supply, backfill FROM events_raw WHERE event_id = '4'`).
		Scan(&typ, &region, &userHash, &product, &quote, &experiment, &variant, &topic, &eventTime, &receivedAt, &price, &supply, &backfill); err != nil {
		t.Fatal(err)
	}
	if typ != "booking" || region != "berlin" || userHash != "u1" || product != "ride" || quote != "q-4" || experiment != "exp1" ||
		variant != "A" || topic != ingest.TopicUserEvents || !eventTime.Equal(m("2024-05-01T10:00:30Z")) ||
		!receivedAt.Equal(m("2024-05-01T10:00:31Z")) || price == nil || *price != 12.5 || supply != nil || backfill != 0 {
		t.Errorf("event 4 stored as %s %s %s %s %s %s %s %s %s %s %v %v %d", typ, region, userHash, product, quote, experiment, variant, topic,
			eventTime, receivedAt, price, supply, backfill)
	}
	var backfilled uint64
	if err := e.conn.QueryRow(ctx, `SELECT count() FROM events_raw WHERE backfill = 1`).Scan(&backfilled); err != nil || backfilled != 2 {
		t.Errorf("backfilled rows = %d (%v), want 2", backfilled, err)
	}

	// The read side over what the sink wrote.
	h := analytics.NewHistory(e.conn, analytics.HistoryOptions{})
	minutes, err := h.DemandHistory(ctx, "berlin", m("2024-05-01T10:00:00Z"), m("2024-05-01T11:00:00Z"), analytics.GranularityMinute)
	if err != nil {
		t.Fatal(err)
	}
	wantMinutes := []analytics.DemandPoint{
		{Bucket: m("2024-05-01T10:00:00Z"), Searches: 3, Bookings: 1, Supply: 10, SupplySamples: 2},
		{Bucket: m("2024-05-01T10:01:00Z"), Bookings: 1, Cancels: 1},
	}
	if len(minutes) != 2 || minutes[0] != wantMinutes[0] || minutes[1] != wantMinutes[1] {
		t.Errorf("DemandHistory by minute = %+v, want %+v", minutes, wantMinutes)
	}
	hours, err := h.DemandHistory(ctx, "berlin", m("2024-05-01T10:30:00Z"), m("2024-05-01T10:31:00Z"), analytics.GranularityHour)
	if err != nil {
		t.Fatal(err)
	}
	wantHour := analytics.DemandPoint{Bucket: m("2024-05-01T10:00:00Z"), Searches: 3, Bookings: 2, Cancels: 1, Supply: 10, SupplySamples: 2}
	if len(hours) != 1 || hours[0] != wantHour {
		t.Errorf("DemandHistory by hour = %+v, want [%+v]", hours, wantHour)
	}

	// Kafka knows the committed offsets: lag is visible to Kafka tools.
	committed := committedOffsets(t, e.brokers, "g1")
	for _, p := range s.Status().Partitions {
		if c := committed[tp{p.Topic, p.Partition}]; p.HighWatermark > 0 && c != p.HighWatermark {
			t.Errorf("%s/%d: committed %d, high watermark %d", p.Topic, p.Partition, c, p.HighWatermark)
		}
	}
	if n := testutil.ToFloat64(s.m.rows.WithLabelValues("events_raw")); n != float64(len(evs)) {
		t.Errorf("surge_sink_rows_total = %v, want %d", n, len(evs))
	}
	if st := s.Status(); st.RowsInserted != uint64(len(evs)) || st.LastInsertAt.IsZero() || st.Group != "g1" {
		t.Errorf("status %+v", st)
	}

	// Redelivery: the group's offsets reset to the beginning, the same
	// records come again, nothing is counted twice.
	resetGroup(t, e.brokers, "g1")
	if c := committedOffsets(t, e.brokers, "g1"); c[tp{ingest.TopicUserEvents, 0}] != 0 {
		t.Fatalf("reset left %v", c)
	}
	again, stop2 := runSink(t, e.brokers, e.conn, e.db, Options{GroupID: "g1"})
	waitFor(t, "the second sink to catch up", func() bool { return caughtUp(again.Status(), allPartitions) })
	stop2()
	if n := again.Status().RowsInserted; n != 0 {
		t.Errorf("second sink inserted %d rows, want 0", n)
	}
	checkExact(t, ctx, e.conn, evs)
}

// committedOffsets returns the group's committed offsets.
func committedOffsets(t testing.TB, brokers []string, group string) map[tp]int64 {
	t.Helper()
	parts := make([]int, testPartitions)
	for i := range parts {
		parts[i] = i
	}
	req := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{}}
	for _, topic := range append(ingest.EventTopics, ingest.TopicPricingDecisions) {
		req.Topics[topic] = parts
	}
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.OffsetFetch(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	out := map[tp]int64{}
	for topic, ps := range resp.Topics {
		for _, p := range ps {
			out[tp{topic, p.Partition}] = p.CommittedOffset
		}
	}
	return out
}

// resetGroup commits offset 0 for every partition of the sink's topics, as
// an operator resetting the group to the beginning would.
func resetGroup(t testing.TB, brokers []string, group string) {
	t.Helper()
	topics := append(append([]string{}, ingest.EventTopics...), ingest.TopicPricingDecisions)
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: brokers, Topics: topics, SessionTimeout: 6 * time.Second, RebalanceTimeout: 6 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	gen, err := cg.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	offsets := map[string]map[int]int64{}
	for topic, ps := range gen.Assignments {
		offsets[topic] = map[int]int64{}
		for _, p := range ps {
			offsets[topic][p.ID] = 0
		}
	}
	if err := gen.CommitOffsets(offsets); err != nil {
		t.Fatal(err)
	}
}

// decisionValue is an audit record shaped like the quotes package's.
func decisionValue(id string, at time.Time, mult float64) map[string]any {
	return map[string]any{
		"quoteId": id, "traceId": "trace-" + id, "at": at, "validUntil": at.Add(time.Minute),
		"regionId": "berlin", "productType": "ride", "userHash": "uh",
		"input": map[string]any{"supply": 29},
		"forecast": map[string]any{"regionId": "berlin", "horizonMinutes": 15, "demand": 493.4, "source": "CACHED",
			"modelVersion": "v1", "generatedAt": at.Add(-time.Second)},
		"ruleVersion": 3, "modelVersion": "v1", "surgeMultiplier": mult, "price": 10.0, "currency": "EUR",
		"factors": []any{map[string]any{"name": "base", "contribution": 1}}, "degraded": true,
		"warnings": []string{"forecast from cache"},
	}
}

// decision is an audit record as written today (CBOR).
func decision(id string, at time.Time, mult float64) []byte {
	b, err := auditrecord.Marshal(decisionValue(id, at, mult))
	if err != nil {
		panic(err)
	}
	return b
}

// legacyDecision is an audit record as written before December 2026 (JSON).
func legacyDecision(id string, at time.Time, mult float64) []byte {
	b, _ := json.Marshal(decisionValue(id, at, mult))
	return b
}

func TestPricingDecisionsLand(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	at := time.Date(2026, 11, 25, 21, 7, 3, 367592448, time.UTC)
	var msgs []kafka.Message
	records := map[string][]byte{}
	for i := range 50 {
		id := "01a21487-a3e8-7644-ab00-" + strings.Repeat("0", 10) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		rec := decision(id, at.Add(time.Duration(i)*time.Hour*24), 1+float64(i)/100)
		if i%5 == 1 {
			rec = legacyDecision(id, at.Add(time.Duration(i)*time.Hour*24), 1+float64(i)/100)
		}
		records[id] = rec
		msgs = append(msgs, kafka.Message{Topic: ingest.TopicPricingDecisions, Key: []byte("berlin"), Value: rec})
	}
	truncated := decision("01a21487-truncated", at, 1)
	msgs = append(msgs,
		kafka.Message{Topic: ingest.TopicPricingDecisions, Key: []byte("berlin"), Value: []byte(`{"quoteId":""}`)},
		kafka.Message{Topic: ingest.TopicPricingDecisions, Key: []byte("berlin"), Value: truncated[:len(truncated)/2]})
	produce(t, e.brokers, msgs)
	s, stop := runSink(t, e.brokers, e.conn, e.db, Options{})
	waitFor(t, "decisions in ClickHouse", func() bool { return caughtUp(s.Status(), allPartitions) })
	stop()

	var n uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM pricing_decisions").Scan(&n); err != nil || n != 50 {
		t.Fatalf("pricing_decisions has %d rows (%v), want 50", n, err)
	}
	d := analytics.NewDecisions(e.conn)
	for id, want := range records {
		got, err := d.DecisionByQuote(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("DecisionByQuote(%s) = %s, want %s", id, got, want)
		}
	}
	if _, err := d.DecisionByQuote(ctx, "no-such-quote"); !errors.Is(err, analytics.ErrDecisionNotFound) {
		t.Fatalf("unknown quote: %v", err)
	}
	// The columns, from a CBOR record (…aa) and a JSON one (…ba).
	for _, i := range []int{0, 1} {
		id := "01a21487-a3e8-7644-ab00-" + strings.Repeat("0", 10) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		var (
			trace, source, currency string
			when, fcAt              time.Time
			mult, price, demand     float64
			rule, horizon           uint32
			degraded                uint8
		)
		if err := e.conn.QueryRow(ctx, `SELECT trace_id, forecast_source, currency, at, multiplier, price, rule_version, degraded,
			horizon_minutes, forecast_demand, forecast_at
			FROM pricing_decisions WHERE quote_id = ?`, id).Scan(&trace, &source, &currency, &when, &mult, &price, &rule, &degraded,
			&horizon, &demand, &fcAt); err != nil {
			t.Fatal(err)
		}
		day := at.Add(time.Duration(i) * time.Hour * 24)
		if trace != "trace-"+id || source != "CACHED" || currency != "EUR" || !when.Equal(day.Truncate(time.Second)) ||
			mult != 1+float64(i)/100 || price != 10 || rule != 3 || degraded != 1 ||
			horizon != 15 || demand != 493.4 || !fcAt.Equal(day.Add(-time.Second).Truncate(time.Second)) {
			t.Errorf("columns of %s: %s %s %s %s %v %v %d %d %d %v %s", id, trace, source, currency, when, mult, price, rule, degraded,
				horizon, demand, fcAt)
		}
	}
	if st := s.Status(); st.InvalidRecords != 2 {
		t.Errorf("invalid records = %d, want 2 (the decision without a quote id, the truncated one)", st.InvalidRecords)
	}
}

func TestInvalidRecordsAreSkipped(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := genEvents(500, 7)
	produceEvents(t, e.brokers, evs[:250])
	bad := []string{`not json`, `{"eventId":"x","type":"search","regionId":"r1"}`, `{"eventId":"","type":"search","regionId":"r1","timestamp":"2024-05-01T10:00:00Z"}`,
		`{"eventId":"y","type":"search","regionId":"r1","timestamp":"1900-05-01T10:00:00Z"}`}
	var msgs []kafka.Message
	for _, b := range bad {
		msgs = append(msgs, kafka.Message{Topic: ingest.TopicUserEvents, Key: []byte("r1"), Value: []byte(b)})
	}
	produce(t, e.brokers, msgs)
	produceEvents(t, e.brokers, evs[250:])
	reg := prometheus.NewRegistry()
	s, stop := runSink(t, e.brokers, e.conn, e.db, Options{Registerer: reg})
	waitFor(t, "caught up", func() bool { return caughtUp(s.Status(), allPartitions) })
	stop()
	checkExact(t, ctx, e.conn, evs)
	if st := s.Status(); st.InvalidRecords != uint64(len(bad)) {
		t.Errorf("invalid records = %d, want %d", st.InvalidRecords, len(bad))
	}
	if n := testutil.ToFloat64(s.m.invalid.WithLabelValues(ingest.TopicUserEvents)); n != float64(len(bad)) {
		t.Errorf("surge_sink_invalid_records_total = %v, want %d", n, len(bad))
	}
}

// TestClickHouseDown stops ClickHouse under a running sink: inserts fail
// and are retried, the lag shows in Status and the metrics, and once the
// server is back every row arrives exactly once.
func TestClickHouseDown(t *testing.T) {
	ctx := ctxT(t)
	k := testenv.KafkaWith(t, kafkaOpts())
	srv := testenv.ClickHouseServer(t)
	conn := openMigrated(t, srv.Addr, "surge")
	evs := genEvents(3000, 3)
	produceEvents(t, k.Brokers, evs[:1000])
	reg := prometheus.NewRegistry()
	s, stop := runSink(t, k.Brokers, conn, "surge", Options{Registerer: reg, BatchSize: 400, InsertTimeout: 3 * time.Second})
	waitFor(t, "the first wave", func() bool { return caughtUp(s.Status(), allPartitions) })
	if n := rawCount(t, ctx, conn); n != 1000 {
		t.Fatalf("%d rows after the first wave, want 1000", n)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	produceEvents(t, k.Brokers, evs[1000:])
	errs := s.m.insertErrors.WithLabelValues("events_raw")
	waitFor(t, "failed inserts and visible lag", func() bool {
		st := s.Status()
		return testutil.ToFloat64(errs) >= 3 && st.Lag() == 2000 && st.LastError != ""
	})
	st := s.Status()
	if !strings.Contains(st.LastError, "events_raw") || st.LastErrorAt.IsZero() {
		t.Errorf("LastError %q at %s", st.LastError, st.LastErrorAt)
	}
	var gaugeLag float64
	for _, p := range st.Partitions {
		gaugeLag += testutil.ToFloat64(s.m.lag.WithLabelValues(p.Topic, itoa(p.Partition)))
	}
	if gaugeLag != 2000 {
		t.Errorf("surge_sink_lag sums to %v, want 2000", gaugeLag)
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second wave", func() bool { return caughtUp(s.Status(), allPartitions) })
	stop()
	checkExact(t, ctx, conn, evs)
	if lag := testutil.ToFloat64(s.m.lag.WithLabelValues(ingest.TopicUserEvents, "0")); lag != 0 {
		t.Errorf("lag gauge after recovery %v", lag)
	}
}

func TestNewRejects(t *testing.T) {
	conn := struct{ noConn }{}
	for _, tc := range []struct {
		name    string
		brokers []string
		db      string
		opts    Options
		nilConn bool
	}{
		{"no brokers", nil, "surge", Options{}, false},
		{"no conn", []string{"x:1"}, "surge", Options{}, true},
		{"bad database", []string{"x:1"}, "a-b", Options{}, false},
		{"repeated topic", []string{"x:1"}, "surge", Options{EventTopics: []string{"a", "a"}}, false},
		{"empty topic", []string{"x:1"}, "surge", Options{DecisionTopics: []string{""}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.nilConn {
				_, err = New(tc.brokers, nil, tc.db, tc.opts)
			} else {
				_, err = New(tc.brokers, conn, tc.db, tc.opts)
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
	s, err := New([]string{"x:1"}, conn, "surge", Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := s.opts
	if o.GroupID != "clickhouse-sink" || o.BatchSize != 10_000 || o.BatchDelay != 500*time.Millisecond ||
		len(o.EventTopics) != 3 || o.DecisionTopics[0] != ingest.TopicPricingDecisions || o.StartOffset != kafka.FirstOffset ||
		o.HeartbeatInterval != 3*time.Second {
		t.Errorf("defaults %+v", o)
	}
	if err := s.Run(canceled()); err != nil {
		t.Errorf("Run on a canceled context: %v", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestNotHeld(t *testing.T) {
	recs := []record[int]{
		{topic: "a", partition: 0, offset: 5, valid: true},
		{topic: "a", partition: 0, offset: 6, valid: true},
		{topic: "a", partition: 1, offset: 9, valid: true},
		{topic: "b", partition: 0, offset: 1, valid: false},
		{topic: "b", partition: 0, offset: 2, valid: true},
	}
	for _, tc := range []struct {
		name string
		held map[tp]int64
		want []int64 // offsets kept
	}{
		{"nothing held", map[tp]int64{}, []int64{5, 6, 9, 1, 2}},
		{"older positions", map[tp]int64{{"a", 0}: 4, {"b", 0}: 0}, []int64{5, 6, 9, 1, 2}},
		{"all landed", map[tp]int64{{"a", 0}: 6, {"a", 1}: 9, {"b", 0}: 2}, nil},
		{"one partition landed", map[tp]int64{{"a", 0}: 6}, []int64{9, 1, 2}},
		{"part of a partition", map[tp]int64{{"a", 0}: 5, {"b", 0}: 1}, []int64{6, 9, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := notHeld(append([]record[int]{}, recs...), tc.held)
			var offs []int64
			for _, r := range got {
				offs = append(offs, r.offset)
			}
			if len(offs) != len(tc.want) {
				t.Fatalf("kept %v, want %v", offs, tc.want)
			}
			for i := range offs {
				if offs[i] != tc.want[i] {
					t.Fatalf("kept %v, want %v", offs, tc.want)
				}
			}
		})
	}
}

func TestDecodeEvent(t *testing.T) {
	recv := time.Date(2024, 5, 1, 10, 0, 1, 0, time.UTC)
	for _, tc := range []struct {
		name, value string
		ok          bool
		received    time.Time
	}{
		{"valid", `{"eventId":"a","type":"search","regionId":"r","timestamp":"2024-05-01T10:00:00Z","receivedAt":"2024-05-01T10:00:02Z"}`, true, recv.Add(time.Second)},
		{"received from the record", `{"eventId":"a","type":"search","regionId":"r","timestamp":"2024-05-01T10:00:00Z"}`, true, recv},
		{"unknown type lands", `{"eventId":"a","type":"page_view","regionId":"r","timestamp":"2024-05-01T10:00:00Z"}`, true, recv},
		{"not JSON", `{`, false, time.Time{}},
		{"no id", `{"type":"search","regionId":"r","timestamp":"2024-05-01T10:00:00Z"}`, false, time.Time{}},
		{"no type", `{"eventId":"a","regionId":"r","timestamp":"2024-05-01T10:00:00Z"}`, false, time.Time{}},
		{"no region", `{"eventId":"a","type":"search","timestamp":"2024-05-01T10:00:00Z"}`, false, time.Time{}},
		{"no time", `{"eventId":"a","type":"search","regionId":"r"}`, false, time.Time{}},
		{"after 2106", `{"eventId":"a","type":"search","regionId":"r","timestamp":"2107-01-01T00:00:00Z"}`, false, time.Time{}},
		{"wrong field type", `{"eventId":"a","type":"booking","regionId":"r","timestamp":"2024-05-01T10:00:00Z","price":"12"}`, false, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := decodeEvent(&kafka.Message{Value: []byte(tc.value), Time: recv})
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && !e.ReceivedAt.Equal(tc.received) {
				t.Errorf("received at %s, want %s", e.ReceivedAt, tc.received)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	o := Options{MinBackoff: time.Second, MaxBackoff: time.Millisecond}.withDefaults()
	if o.MaxBackoff != time.Second {
		t.Errorf("MaxBackoff below MinBackoff kept: %s", o.MaxBackoff)
	}
	if o := (Options{SessionTimeout: 6 * time.Second}).withDefaults(); o.HeartbeatInterval != 2*time.Second {
		t.Errorf("heartbeat %s for a 6 s session", o.HeartbeatInterval)
	}
}

// TestExpiredRecordsAreSkipped deletes records of a partition that the
// sink has not inserted yet, as retention would: the sink reports them as
// expired, goes on from the first retained offset and inserts the rest
// exactly once.
func TestExpiredRecordsAreSkipped(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := genEvents(600, 13)
	produceEvents(t, e.brokers, evs[:300])
	first, stop := runSink(t, e.brokers, e.conn, e.db, Options{})
	waitFor(t, "the first wave", func() bool { return caughtUp(first.Status(), allPartitions) })
	positions := first.Status().Partitions // before stop: a stopped sink has no partitions
	stop()
	produceEvents(t, e.brokers, evs[300:])

	// Delete the next 5 records of a partition of user-events that got
	// more than that in the second wave.
	const topic, expired = ingest.TopicUserEvents, 5
	c := &kafka.Client{Addr: kafka.TCP(e.brokers...)}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1), kafka.LastOffsetOf(2)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	partition, from := -1, int64(-1)
	for _, p := range positions {
		for _, po := range resp.Topics[topic] {
			if p.Topic == topic && p.Partition == po.Partition && po.LastOffset-p.NextOffset > expired {
				partition, from = p.Partition, p.NextOffset
			}
		}
	}
	if partition < 0 {
		t.Fatalf("no partition of %s got %d records: %+v", topic, expired, resp.Topics)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.brokers, Topic: topic, Partition: partition})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		t.Fatal(err)
	}
	gone := map[string]bool{}
	for range expired {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := ingest.DecodeEvent(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		gone[ev.EventID] = true
	}
	if err := e.kafka.Cluster().DeleteRecords(topic, int32(partition), from+expired); err != nil {
		t.Fatal(err)
	}
	var kept []ingest.Event
	for _, ev := range evs {
		if !gone[ev.EventID] {
			kept = append(kept, ev)
		}
	}

	reg := prometheus.NewRegistry()
	s, stop2 := runSink(t, e.brokers, e.conn, e.db, Options{Registerer: reg})
	waitFor(t, "the second wave", func() bool { return caughtUp(s.Status(), allPartitions) })
	stop2()
	checkExact(t, ctx, e.conn, kept)
	if n := testutil.ToFloat64(s.m.skipped.WithLabelValues(topic)); n != expired {
		t.Errorf("surge_sink_skipped_offsets_total = %v, want %d", n, expired)
	}
	if st := s.Status(); !strings.Contains(st.LastError, "not delivered") {
		t.Errorf("LastError %q does not report the expired records", st.LastError)
	}
}

// TestKafkaRestart restarts the broker under a running sink: the sink
// rejoins, resumes from ClickHouse and inserts every event exactly once.
func TestKafkaRestart(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := genEvents(2000, 17)
	produceEvents(t, e.brokers, evs[:1000])
	s, stop := runSink(t, e.brokers, e.conn, e.db, Options{})
	waitFor(t, "the first wave", func() bool { return rawCount(t, ctx, e.conn) == 1000 })
	if err := e.kafka.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	produceEvents(t, e.brokers, evs[1000:])
	waitFor(t, "the second wave", func() bool { return caughtUp(s.Status(), allPartitions) && rawCount(t, ctx, e.conn) >= 2000 })
	stop()
	checkExact(t, ctx, e.conn, evs)
}
