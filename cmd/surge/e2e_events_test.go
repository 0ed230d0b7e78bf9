package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestE2EEventsIn drives issue 3's path through the whole service: events
// posted to /v1/events (and through the ingestEvents mutation) reach the
// online features in Redis and, exactly once, the ClickHouse views behind
// demandHistory; ingestionStatus shows the consumers caught up.
func TestE2EEventsIn(t *testing.T) {
	s := newStack(t, stackOptions{consumers: true, noFeatures: true})
	now := time.Now().UTC().Truncate(time.Second)
	var events []map[string]any
	for i := range 30 {
		events = append(events, map[string]any{
			"eventId": fmt.Sprintf("s-%d", i), "type": "search", "regionId": "paris",
			"timestamp": now.Add(-time.Duration(i) * time.Second).Format(time.RFC3339), "userId": fmt.Sprintf("u%d", i%5),
		})
	}
	events = append(events,
		map[string]any{"eventId": "b-1", "type": "booking", "regionId": "paris", "timestamp": now.Format(time.RFC3339), "price": 14.5},
		map[string]any{"eventId": "sup-1", "type": "supply_update", "regionId": "paris", "timestamp": now.Format(time.RFC3339), "availableSupply": 12},
		map[string]any{"eventId": "bad-1", "type": "teleport", "regionId": "paris", "timestamp": now.Format(time.RFC3339)},
	)
	body, _ := json.Marshal(map[string]any{"events": events})
	post := func() map[string]any {
		req, _ := http.NewRequest(http.MethodPost, s.base+"/v1/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Api-Key", testIngestKey)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /v1/events: %d", resp.StatusCode)
		}
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := post(); out["accepted"] != 32.0 || out["rejected"] != 1.0 {
		t.Fatalf("first post: %v", out)
	}
	// The client retries the whole batch: nothing is counted twice.
	if out := post(); out["duplicates"] != 32.0 || out["accepted"] != 0.0 {
		t.Fatalf("retry: %v", out)
	}
	// The GraphQL mutation takes events through the same intake.
	var m struct {
		IngestEvents struct {
			Accepted, Duplicates, Rejected int
			Results                        []struct {
				Status string
				Errors []struct{ Field string }
			}
		}
	}
	s.mustDataAs(t, ingestHeader, `mutation($ts: Time!) { ingestEvents(events: [
		{eventId: "gql-1", type: "cancel", regionId: "paris", timestamp: $ts},
		{eventId: "s-0", type: "search", regionId: "paris", timestamp: $ts},
		{eventId: "gql-2", type: "booking", regionId: "paris", timestamp: $ts, price: -3}]) {
		accepted duplicates rejected results { status errors { field } } } }`, map[string]any{"ts": now.Format(time.RFC3339)}, &m)
	if m.IngestEvents.Accepted != 1 || m.IngestEvents.Duplicates != 1 || m.IngestEvents.Rejected != 1 ||
		m.IngestEvents.Results[2].Status != "REJECTED" || m.IngestEvents.Results[2].Errors[0].Field != "price" {
		t.Fatalf("ingestEvents: %+v", m.IngestEvents)
	}

	// The online features reflect the events.
	var f struct {
		Features struct {
			Stale  bool
			Values []struct {
				Name  string
				Value float64
			}
		}
	}
	waitCond(t, "the features of paris to reflect the events", func() bool {
		s.mustData(t, `{ features(regionId: "paris") { stale values { name value } } }`, nil, &f)
		got := map[string]float64{}
		for _, v := range f.Features.Values {
			got[v.Name] = v.Value
		}
		return got["supply_current"] == 12 && got["last_event_received_ms"] > 0 && !f.Features.Stale
	})

	// ClickHouse holds each accepted event once; demandHistory reads it.
	type point struct {
		Bucket                      time.Time
		Searches, Bookings, Cancels int
		Supply                      *float64
	}
	var h struct{ DemandHistory []point }
	vars := map[string]any{"from": now.Add(-time.Hour).Format(time.RFC3339), "to": now.Add(time.Hour).Format(time.RFC3339)}
	waitCond(t, "demandHistory to count 30 searches, 1 booking, 1 cancel", func() bool {
		s.mustData(t, `query($from: Time!, $to: Time!) { demandHistory(regionId: "paris", from: $from, to: $to, granularity: HOUR) { bucket searches bookings cancels supply } }`, vars, &h)
		var searches, bookings, cancels int
		for _, p := range h.DemandHistory {
			searches, bookings, cancels = searches+p.Searches, bookings+p.Bookings, cancels+p.Cancels
		}
		if searches > 30 || bookings > 1 || cancels > 1 {
			t.Fatalf("demandHistory: %+v, want 30 searches, 1 booking, 1 cancel: an event counted twice", h.DemandHistory)
		}
		return searches == 30 && bookings == 1 && cancels == 1
	})

	var st struct {
		IngestionStatus struct {
			LastSinkError    *string
			SinkRowsInserted int
			Partitions       []struct {
				Group string
				Lag   int
			}
		}
	}
	// The sink counts its rows once their offsets are committed, a moment
	// after ClickHouse shows them.
	waitCond(t, "ingestionStatus to show both groups and the rows inserted", func() bool {
		s.mustData(t, `{ ingestionStatus { lastSinkError sinkRowsInserted partitions { group lag } } }`, nil, &st)
		if st.IngestionStatus.LastSinkError != nil {
			t.Fatalf("ingestionStatus: %+v", st.IngestionStatus)
		}
		groups := map[string]bool{}
		for _, p := range st.IngestionStatus.Partitions {
			groups[p.Group] = true
		}
		return groups["features"] && groups["clickhouse-sink"] && st.IngestionStatus.SinkRowsInserted >= 33
	})

	// Bad input on the read side.
	if r := s.gql(t, `{ demandHistory(regionId: "paris", from: "2026-01-02T00:00:00Z", to: "2026-01-01T00:00:00Z") { searches } }`, nil, nil); r.code() != "BAD_USER_INPUT" {
		t.Fatalf("inverted range: %+v", r)
	}
	if r := s.gql(t, `{ features(regionId: "atlantis") { stale } }`, nil, nil); r.code() != "NOT_FOUND" {
		t.Fatalf("features of an unknown region: %+v", r)
	}
}
