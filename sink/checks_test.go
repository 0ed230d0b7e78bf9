package sink

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/ingest"
)

type minuteKey struct {
	region string
	minute time.Time
}

// minuteAgg is one demand_minute row, summed.
type minuteAgg struct {
	searches, bookings, cancels         uint64
	supply, weather, traffic, event     float64
	supplyN, weatherN, trafficN, eventN uint64
}

// expectedDemand is what demand_minute must hold for evs.
func expectedDemand(evs []ingest.Event) map[minuteKey]minuteAgg {
	out := map[minuteKey]minuteAgg{}
	for _, e := range evs {
		k := minuteKey{e.RegionID, e.Timestamp.UTC().Truncate(time.Minute)}
		a := out[k]
		switch e.Type {
		case ingest.TypeSearch:
			a.searches++
		case ingest.TypeBooking:
			a.bookings++
		case ingest.TypeCancel:
			a.cancels++
		case ingest.TypeSupplyUpdate:
			if e.AvailableSupply != nil {
				a.supply += *e.AvailableSupply
				a.supplyN++
			}
		case ingest.TypeExternalSignal:
			if e.Value != nil {
				switch e.Signal {
				case ingest.SignalWeather:
					a.weather += *e.Value
					a.weatherN++
				case ingest.SignalTraffic:
					a.traffic += *e.Value
					a.trafficN++
				case ingest.SignalEvent:
					a.event += *e.Value
					a.eventN++
				}
			}
		}
		out[k] = a
	}
	return out
}

func readDemand(t testing.TB, ctx context.Context, conn driver.Conn) map[minuteKey]minuteAgg {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT region_id, minute,
		sum(searches), sum(bookings), sum(cancels),
		sum(supply_sum), sum(supply_samples), sum(weather_sum), sum(weather_samples),
		sum(traffic_sum), sum(traffic_samples), sum(event_sum), sum(event_samples)
		FROM demand_minute GROUP BY region_id, minute`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[minuteKey]minuteAgg{}
	for rows.Next() {
		var k minuteKey
		var a minuteAgg
		if err := rows.Scan(&k.region, &k.minute, &a.searches, &a.bookings, &a.cancels,
			&a.supply, &a.supplyN, &a.weather, &a.weatherN, &a.traffic, &a.trafficN, &a.event, &a.eventN); err != nil {
			t.Fatal(err)
		}
		k.minute = k.minute.UTC()
		out[k] = a
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type expKey struct {
	experiment, variant string
	day                 time.Time
}

type expAgg struct {
	exposures, conversions uint64
	revenue, revenueSq     float64
}

// expectedExperiments is what experiment_metrics_daily must hold for evs.
func expectedExperiments(evs []ingest.Event) map[expKey]expAgg {
	out := map[expKey]expAgg{}
	for _, e := range evs {
		if e.Experiment == nil || e.Experiment.ID == "" {
			continue
		}
		ts := e.Timestamp.UTC()
		k := expKey{e.Experiment.ID, e.Experiment.Variant, time.Date(ts.Year(), ts.Month(), ts.Day(), 0, 0, 0, 0, time.UTC)}
		a := out[k]
		switch e.Type {
		case ingest.TypeSearch:
			a.exposures++
		case ingest.TypeBooking:
			a.conversions++
			if e.Price != nil {
				a.revenue += *e.Price
				a.revenueSq += *e.Price * *e.Price
			}
		default:
			continue
		}
		out[k] = a
	}
	return out
}

func readExperiments(t testing.TB, ctx context.Context, conn driver.Conn) map[expKey]expAgg {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT experiment_id, variant, day,
		sum(exposures), sum(conversions), sum(revenue), sum(revenue_sq)
		FROM experiment_metrics_daily GROUP BY experiment_id, variant, day`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[expKey]expAgg{}
	for rows.Next() {
		var k expKey
		var a expAgg
		if err := rows.Scan(&k.experiment, &k.variant, &k.day, &a.exposures, &a.conversions, &a.revenue, &a.revenueSq); err != nil {
			t.Fatal(err)
		}
		k.day = time.Date(k.day.Year(), k.day.Month(), k.day.Day(), 0, 0, 0, 0, time.UTC)
		out[k] = a
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rawCounts returns the rows of events_raw, their distinct Kafka positions
// and their distinct event ids.
func rawCounts(t testing.TB, ctx context.Context, conn driver.Conn) (rows, positions, ids uint64) {
	t.Helper()
	if err := conn.QueryRow(ctx, `SELECT count(), uniqExact(kafka_topic, kafka_partition, kafka_offset), uniqExact(event_id) FROM events_raw`).
		Scan(&rows, &positions, &ids); err != nil {
		t.Fatal(err)
	}
	return rows, positions, ids
}

func rawCount(t testing.TB, ctx context.Context, conn driver.Conn) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM events_raw`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkExact fails unless ClickHouse holds evs exactly once: every event
// one row, and the materialized views' sums those of evs.
func checkExact(t testing.TB, ctx context.Context, conn driver.Conn, evs []ingest.Event) {
	t.Helper()
	rows, positions, ids := rawCounts(t, ctx, conn)
	n := uint64(len(evs))
	if rows != n || positions != n || ids != n {
		t.Fatalf("events_raw: %d rows, %d distinct offsets, %d distinct event ids; want %d of each", rows, positions, ids, n)
	}
	if got, want := readDemand(t, ctx, conn), expectedDemand(evs); !maps.Equal(got, want) {
		for k, w := range want {
			if g := got[k]; g != w {
				t.Errorf("demand_minute %s %s = %+v, want %+v", k.region, k.minute.Format(time.RFC3339), g, w)
			}
		}
		for k, g := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("demand_minute %s %s = %+v, want no row", k.region, k.minute.Format(time.RFC3339), g)
			}
		}
		t.FailNow()
	}
	if got, want := readExperiments(t, ctx, conn), expectedExperiments(evs); !maps.Equal(got, want) {
		t.Fatalf("experiment_metrics_daily = %+v, want %+v", got, want)
	}
}
