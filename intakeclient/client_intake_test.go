package intakeclient

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/ratelimit"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/ingest"
)

func fptr(v float64) *float64 { return &v }

// TestClientAgainstIntake drives the real intake (real Redis, kfake) with
// the client: statuses, reasons, duplicates on a second send, backfill past
// the lateness, and per-user rate limits answered by resending later.
func TestClientAgainstIntake(t *testing.T) {
	rs := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	kf := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: ingest.EventTopics, Partitions: 3})
	writer := ingest.NewEventWriter(kf.Brokers)
	t.Cleanup(func() { writer.Close() })
	in, err := ingest.NewIntake(rdb, writer, ratelimit.NewLimiter(rdb, ratelimit.Options{}), ingest.IntakeOptions{
		UserHashKey: []byte("k"), UserRate: 200, UserBurst: 100, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.Static{}
	keys.Add("test-client", "test-client", auth.RoleSupply) // every event type
	srv := httptest.NewServer(auth.New(auth.Options{Verifiers: []auth.Verifier{keys}}).Middleware(in.Handler()))
	t.Cleanup(srv.Close)
	c, err := NewClient(ClientOptions{URL: srv.URL, APIKey: "test-client", Senders: 2, BatchSize: 400, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().UTC()
	var events []ingest.Event
	for i := range 1500 {
		ev := ingest.Event{EventID: fmt.Sprintf("ci-%d", i), RegionID: "berlin", Timestamp: now.Add(-time.Second), UserID: fmt.Sprintf("user-%d", i%500)}
		switch i % 5 {
		case 0, 1:
			ev.Type = ingest.TypeSearch
		case 2:
			ev.Type, ev.Price = ingest.TypeBooking, fptr(12.5)
		case 3:
			ev.Type, ev.AvailableSupply, ev.UserID = ingest.TypeSupplyUpdate, fptr(40), ""
		case 4:
			ev.Type, ev.Signal, ev.Value, ev.UserID = ingest.TypeExternalSignal, ingest.SignalWeather, fptr(0.3), ""
		}
		events = append(events, ev)
	}
	old := now.Add(-48 * time.Hour)
	events = append(events,
		ingest.Event{EventID: "ci-bad-region", Type: ingest.TypeSearch, RegionID: "ber lin", Timestamp: now},
		ingest.Event{EventID: "ci-no-price", Type: ingest.TypeBooking, RegionID: "paris", Timestamp: now},
		ingest.Event{EventID: "ci-too-old", Type: ingest.TypeSearch, RegionID: "paris", Timestamp: old},
		ingest.Event{EventID: "ci-backfill", Type: ingest.TypeSearch, RegionID: "paris", Timestamp: old, Backfill: true},
	)
	send := func(evs []ingest.Event) {
		t.Helper()
		s := c.Stream(t.Context())
		for _, ev := range evs {
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	send(events)
	st := c.Stats()
	if st.Sent != 1504 || st.Accepted != 1501 || st.Rejected != 3 || st.Duplicate != 0 || st.Failed != 0 || st.Unconfirmed != 0 {
		t.Fatalf("first send: %+v", st)
	}
	for _, kind := range []string{"regionId: invalid", "price: required", "timestamp: too_late"} {
		if st.Reasons[kind] != 1 {
			t.Errorf("reasons %v, want one %q", st.Reasons, kind)
		}
	}

	send(events) // a replay of the same events
	st = c.Stats()
	if st.Accepted != 1501 || st.Duplicate != 1501 || st.Rejected != 6 {
		t.Fatalf("second send: %+v", st)
	}

	// One user over its burst of 100: the intake takes 100 and rejects the
	// rest "rate_limited" with a Retry-After; the client sends those again.
	var hot []ingest.Event
	for i := range 150 {
		hot = append(hot, ingest.Event{EventID: fmt.Sprintf("hot-%d", i), Type: ingest.TypeSearch, RegionID: "nyc", Timestamp: now, UserID: "hot-user"})
	}
	res, err := c.Send(context.Background(), hot)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 150 || res.Rejected != 0 {
		t.Errorf("hot user: %+v, want all 150 accepted after a retry", res)
	}
	if c.Stats().Retries == 0 {
		t.Error("the hot user's events passed without a retry: the limit did not apply")
	}
}
