package compat

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/monitoring"
	"github.com/surgeworks/surge/retrain"
	"github.com/surgeworks/surge/training"
)

// TestDemandHistory: demand_minute written by analytics.History and read by
// its queries, the trainer's history loader and the accuracy monitor,
// which joins it with the forecasts of the pricing audit trail.
func TestDemandHistory(t *testing.T) {
	conn, _ := migrated(t)
	ctx := t.Context()
	h := analytics.NewHistory(conn, analytics.HistoryOptions{})
	end := time.Now().UTC().Truncate(time.Minute)
	start := end.Add(-3 * time.Hour)
	rows := make([]features.Minute, 180)
	for i := range rows {
		rows[i] = features.Minute{Start: start.Add(time.Duration(i) * time.Minute), Searches: 12, Bookings: 2, Supply: 30, Weather: 0.5}
	}
	for _, region := range []string{"berlin", "paris"} {
		if err := h.InsertDemandMinutes(ctx, region, rows); err != nil {
			t.Fatal(err)
		}
	}

	mins, err := h.DemandMinutes(ctx, "berlin", start, end)
	if err != nil || len(mins) != 180 || mins[0].Searches != 12 || mins[0].Supply != 30 || mins[0].Weather != 0.5 || !mins[0].Start.Equal(start) {
		t.Fatalf("DemandMinutes: %d minutes, first %+v, %v", len(mins), mins[:min(1, len(mins))], err)
	}
	hourly, err := h.DemandHistory(ctx, "berlin", start, end, analytics.GranularityHour)
	if err != nil {
		t.Fatal(err)
	}
	var searches uint64
	for _, p := range hourly {
		searches += p.Searches
	}
	if searches != 180*12 || hourly[0].Supply != 30 {
		t.Fatalf("DemandHistory by hour: %d searches over %d points (first %+v), want %d", searches, len(hourly), hourly[0], 180*12)
	}
	byMinute, err := h.DemandHistory(ctx, "paris", end.Add(-10*time.Minute), end, analytics.GranularityMinute)
	if err != nil || len(byMinute) != 10 {
		t.Fatalf("DemandHistory by minute: %d points, %v; want 10", len(byMinute), err)
	}
	avg, err := h.HourOfWeekAverages(ctx)
	if err != nil || avg["berlin"][analytics.HourOfWeek(start.Add(90*time.Minute))] != 12 {
		t.Fatalf("HourOfWeekAverages: %v, %v", avg["berlin"], err)
	}
	prof, err := h.HourOfWeekProfiles(ctx)
	if err != nil || prof["paris"] == nil || prof["paris"].Mean != 12 {
		t.Fatalf("HourOfWeekProfiles: %+v, %v", prof["paris"], err)
	}

	hist, err := training.LoadHistory(ctx, conn, training.LoadOptions{From: start, End: end})
	if err != nil || len(hist) != 2 {
		t.Fatalf("LoadHistory: %d regions, %v", len(hist), err)
	}
	back, err := training.Backfill(conn)(ctx, start, end)
	if err != nil || len(back["berlin"]) != 180 {
		t.Fatalf("Backfill: %d berlin minutes, %v", len(back["berlin"]), err)
	}

	// Forecasts of 5 minutes made an hour ago: berlin forecast 50 (actual
	// 60), paris 60 (actual 60).
	made := end.Add(-time.Hour)
	b, err := conn.PrepareBatch(ctx, `INSERT INTO pricing_decisions
		(quote_id, at, region_id, product_type, model_version, forecast_source, record, kafka_topic, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range []inference.Forecast{
		{RegionID: "berlin", HorizonMinutes: 5, Demand: 50, ModelVersion: "v1", Source: inference.SourceModel, GeneratedAt: made},
		{RegionID: "paris", HorizonMinutes: 5, Demand: 60, ModelVersion: "v1", Source: inference.SourceModel, GeneratedAt: made},
	} {
		quote := "q-" + f.RegionID
		rec, err := json.Marshal(map[string]any{"quoteId": quote, "at": made, "regionId": f.RegionID, "forecast": f, "modelVersion": "v1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(quote, made, f.RegionID, "ride", "v1", string(f.Source), string(rec), "pricing-decisions", uint32(0), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	acc, err := monitoring.New(conn, monitoring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := acc.Compute(ctx, monitoring.Query{Since: end.Add(-2 * time.Hour)})
	if err != nil || len(res) != 2 {
		t.Fatalf("Compute: %+v, %v; want berlin and paris", res, err)
	}
	if math.Abs(res[0].MAPE-1.0/6) > 1e-9 || res[1].MAPE != 0 {
		t.Fatalf("Compute: MAPE berlin %g, paris %g; want 1/6, 0", res[0].MAPE, res[1].MAPE)
	}
	mape, n, err := acc.MAPE(ctx, "demand", "v1", end.Add(-2*time.Hour))
	if err != nil || n != 2 || math.Abs(mape-1.0/12) > 1e-9 {
		t.Fatalf("MAPE = %g over %d, %v; want 1/12 over 2", mape, n, err)
	}
	if err := acc.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	dec := analytics.NewDecisions(conn)
	rec, err := dec.DecisionByQuote(ctx, "q-paris")
	if err != nil || len(rec) == 0 {
		t.Fatalf("DecisionByQuote: %q, %v", rec, err)
	}
	var seen int
	if err := dec.DecisionsSince(ctx, made, func([]byte) error { seen++; return nil }); err != nil || seen != 2 {
		t.Fatalf("DecisionsSince: %d records, %v; want 2", seen, err)
	}
}

// TestRealHistory: retrain's count of the intake's events.
func TestRealHistory(t *testing.T) {
	conn, _ := migrated(t)
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	insert(t, conn, `INSERT INTO events_raw (event_id, type, region_id, event_time, received_at, backfill, kafka_topic, kafka_partition, kafka_offset)`, [][]any{
		{"a", "search", "berlin", at, at, uint8(0), "user-events", uint32(0), uint64(1)},
		{"b", "search", "berlin", at.Add(time.Hour), at, uint8(0), "user-events", uint32(0), uint64(2)},
		{"c", "search", "berlin", at.Add(-time.Hour), at, uint8(1), "user-events", uint32(0), uint64(3)},
	})
	first, last, err := retrain.RealHistory(t.Context(), conn, at.Add(-24*time.Hour), at.Add(24*time.Hour))
	if err != nil || !first.Equal(at) || !last.Equal(at.Add(time.Hour)) {
		t.Fatalf("RealHistory = %s, %s, %v; want %s, %s", first, last, err, at, at.Add(time.Hour))
	}
}

// TestKeys: API keys stored, listed and revoked.
func TestKeys(t *testing.T) {
	conn, db := migrated(t)
	ctx := t.Context()
	keys := auth.NewKeys(conn, nil, db, auth.KeysOptions{})
	secret, key, err := keys.Create(ctx, "acme", "ci", auth.RoleClient|auth.RoleAdmin, "compat")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok, err := keys.Verify(ctx, secret); err != nil || !ok || p.Roles != auth.RoleClient|auth.RoleAdmin {
		t.Fatalf("Verify = %+v, %v, %v", p, ok, err)
	}
	if _, err := keys.Revoke(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	again := auth.NewKeys(conn, nil, db, auth.KeysOptions{})
	list, err := again.List(ctx)
	if err != nil || len(list) != 1 || list[0].RevokedAt.IsZero() || list[0].Client != "acme" {
		t.Fatalf("List = %+v, %v; want the revoked key", list, err)
	}
	if _, ok, _ := again.Verify(ctx, secret); ok {
		t.Fatal("a revoked key verifies")
	}
}
