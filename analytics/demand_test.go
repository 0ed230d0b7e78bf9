package analytics

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/features"
)

// rawEvent is the part of an events_raw row the demand view reads.
type rawEvent struct {
	region, typ string
	at          time.Time
	supply      *float64
	signal      string
	value       *float64
}

// insertRawEvents inserts into events_raw, as the sink does, so that the
// materialized view fills demand_minute.
func insertRawEvents(t *testing.T, ctx context.Context, conn driver.Conn, evs []rawEvent) {
	t.Helper()
	b, err := conn.PrepareBatch(ctx, `INSERT INTO events_raw (event_id, type, region_id, event_time, received_at,
		available_supply, signal, value, kafka_topic, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		if err := b.Append("e"+strconv.Itoa(i), e.typ, e.region, e.at, e.at, e.supply, e.signal, e.value, "test", uint32(0), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

func f64(v float64) *float64 { return &v }

func TestDemandHistory(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	h := NewHistory(conn, HistoryOptions{})
	t0 := mustTime(t, "2024-03-10T08:00:00Z")
	at := func(d string) time.Time {
		dd, err := time.ParseDuration(d)
		if err != nil {
			t.Fatal(err)
		}
		return t0.Add(dd)
	}
	var evs []rawEvent
	add := func(n int, typ, when string) {
		for range n {
			evs = append(evs, rawEvent{region: "berlin", typ: typ, at: at(when)})
		}
	}
	add(3, "search", "5s")
	add(1, "booking", "40s")
	evs = append(evs,
		rawEvent{region: "berlin", typ: "supply_update", at: at("10s"), supply: f64(10)},
		rawEvent{region: "berlin", typ: "supply_update", at: at("50s"), supply: f64(20)},
		rawEvent{region: "berlin", typ: "external_signal", at: at("20s"), signal: "weather", value: f64(0.5)}, // no demand count
		rawEvent{region: "berlin", typ: "supply_update", at: at("1m10s")},                                     // no value: no sample
	)
	add(2, "search", "1m30s")
	add(1, "cancel", "1m59s")
	add(1, "search", "59m59s")
	add(4, "search", "1h")
	evs = append(evs, rawEvent{region: "berlin", typ: "supply_update", at: at("1h30s"), supply: f64(30)})
	add(1, "search", "2h15m") // outside the ranges below
	for range 7 {
		evs = append(evs, rawEvent{region: "paris", typ: "search", at: t0})
	}
	insertRawEvents(t, ctx, conn, evs)
	// A loaded history row for 09:00 adds to the view's: 2 searches, one
	// more supply sample of 40.
	if err := h.InsertDemandMinutes(ctx, "berlin", []features.Minute{{Start: at("1h"), Searches: 2, Supply: 40}}); err != nil {
		t.Fatal(err)
	}

	p := func(bucket string, searches, bookings, cancels uint64, supply float64, samples uint64) DemandPoint {
		return DemandPoint{Bucket: at(bucket), Searches: searches, Bookings: bookings, Cancels: cancels, Supply: supply, SupplySamples: samples}
	}
	minutes := []DemandPoint{
		p("0s", 3, 1, 0, 15, 2),
		p("1m", 2, 0, 1, 0, 0),
		p("59m", 1, 0, 0, 0, 0),
		p("1h", 6, 0, 0, 35, 2),
	}
	hours := []DemandPoint{
		p("0s", 6, 1, 1, 15, 2),
		p("1h", 6, 0, 0, 35, 2),
	}
	for _, tc := range []struct {
		name     string
		from, to time.Time
		g        Granularity
		want     []DemandPoint
	}{
		{"minutes", t0, at("2h"), GranularityMinute, minutes},
		{"minutes, to exclusive", t0, at("59m"), GranularityMinute, minutes[:2]},
		{"minutes, from and to widened", at("30s"), at("59m30s"), GranularityMinute, minutes[:3]},
		{"hours", t0, at("2h"), GranularityHour, hours},
		{"hours, widened to whole hours", at("30m"), at("1h10m"), GranularityHour, hours},
		{"hours, to on a boundary", at("59m"), at("1h"), GranularityHour, hours[:1]},
		{"given in another zone", t0.In(time.FixedZone("CET", 3600)), at("2h").In(time.FixedZone("X", -7200)), GranularityHour, hours},
		{"nothing", at("3h"), at("4h"), GranularityMinute, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := h.DemandHistory(ctx, "berlin", tc.from, tc.to, tc.g)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d points %+v, want %d %+v", len(got), got, len(tc.want), tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] || got[i].Bucket.Location() != time.UTC {
					t.Errorf("point %d = %+v, want %+v (UTC)", i, got[i], tc.want[i])
				}
			}
		})
	}

	for _, tc := range []struct {
		name     string
		region   string
		from, to time.Time
		g        Granularity
	}{
		{"empty region", "", t0, at("1h"), GranularityMinute},
		{"to before from", "berlin", at("1h"), t0, GranularityMinute},
		{"empty range", "berlin", t0, t0, GranularityHour},
		{"unknown granularity", "berlin", t0, at("1h"), Granularity(0)},
		{"too many minutes", "berlin", t0, t0.Add(MaxDemandPoints*time.Minute + time.Minute), GranularityMinute},
		{"before 1970", "berlin", time.Unix(-7200, 0), t0, GranularityHour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := h.DemandHistory(ctx, tc.region, tc.from, tc.to, tc.g); !errors.Is(err, ErrInvalidRange) {
				t.Fatalf("err = %v, want ErrInvalidRange", err)
			}
		})
	}
	if _, err := h.DemandHistory(ctx, "berlin", t0, t0.Add(MaxDemandPoints*time.Minute), GranularityMinute); err != nil {
		t.Fatalf("the largest range: %v", err)
	}
}
