package bookings

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/quotes"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fakeQuotes serves one quote made for user "alice".
type fakeQuotes struct{}

func (fakeQuotes) UserHash(id string) string {
	if id == "" {
		return ""
	}
	return "h:" + id
}

func (fakeQuotes) Lookup(_ context.Context, id string) (quotes.Quote, error) {
	if id != "q1" {
		return quotes.Quote{}, &quotes.InputError{Field: "quoteId", Msg: "not found", Err: quotes.ErrQuoteNotFound}
	}
	return quotes.Quote{ID: "q1", RegionID: "berlin", ProductType: "ride", Currency: "EUR", UserHash: "h:alice",
		Experiments: []quotes.ExperimentRef{{ID: "cut", Variant: "cheaper"}}}, nil
}

// intake records the events and fails while failing is set; it dedups
// by eventId as the real intake does.
type intake struct {
	mu      sync.Mutex
	failing bool
	seen    map[string]int
	events  []ingest.Event
}

func (in *intake) Ingest(_ context.Context, _ ingest.ClientID, evs []ingest.Event) (ingest.Response, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.failing {
		return ingest.Response{}, &ingest.RetryError{Err: ingest.ErrUnavailable, RetryAfter: time.Second}
	}
	st := ingest.StatusAccepted
	if in.seen[evs[0].EventID] > 0 {
		st = ingest.StatusDuplicate
	} else {
		in.events = append(in.events, evs[0])
	}
	in.seen[evs[0].EventID]++
	return ingest.Response{Events: []ingest.EventResult{{EventID: evs[0].EventID, Status: st}}}, nil
}

func setup(t *testing.T) (*Service, *intake, *redis.Client, func() error) {
	r := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	in := &intake{seen: map[string]int{}}
	return New(fakeQuotes{}, rdb, in, Options{}), in, rdb, r.Stop
}

func TestBookOnceAndRetries(t *testing.T) {
	ctx := context.Background()
	svc, in, _, _ := setup(t)
	good := Input{QuoteID: "q1", UserID: "alice", Amount: 12.5, BookingID: "b1"}

	// The intake is down: the booking fails as retryable, nothing is counted.
	in.failing = true
	if _, err := svc.Book(ctx, ingest.ClientID{}, good); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("intake down: %v, want ErrUnavailable", err)
	}
	in.failing = false
	// The client's retry records it (the pending record is sent again).
	b, err := svc.Book(ctx, ingest.ClientID{}, good)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Experiments) != 1 || b.Experiments[0].Variant != "cheaper" || b.Amount != 12.5 {
		t.Fatalf("booking: %+v", b)
	}
	// More retries are duplicates and send nothing.
	for range 3 {
		b, err := svc.Book(ctx, ingest.ClientID{}, good)
		if err != nil || !b.Duplicate {
			t.Fatalf("retry: %+v, %v", b, err)
		}
	}
	if len(in.events) != 1 {
		t.Fatalf("%d booking events, want 1", len(in.events))
	}
	ev := in.events[0]
	if ev.Type != ingest.TypeBooking || ev.EventID != "booking:b1" || *ev.Price != 12.5 || ev.UserID != "alice" ||
		ev.QuoteID != "q1" || ev.Experiment == nil || ev.Experiment.ID != "cut" || ev.Experiment.Variant != "cheaper" {
		t.Fatalf("booking event: %+v", ev)
	}
}

func TestBookRefusals(t *testing.T) {
	ctx := context.Background()
	svc, in, _, _ := setup(t)
	if _, err := svc.Book(ctx, ingest.ClientID{}, Input{QuoteID: "q1", UserID: "alice", Amount: 10, BookingID: "b1"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		in    Input
		err   error
		field string
	}{
		{"reused id, other amount", Input{QuoteID: "q1", UserID: "alice", Amount: 11, BookingID: "b1"}, ErrConflict, "bookingId"},
		{"unknown quote", Input{QuoteID: "q2", UserID: "alice", Amount: 1, BookingID: "b2"}, quotes.ErrQuoteNotFound, "quoteId"},
		{"other user", Input{QuoteID: "q1", UserID: "bob", Amount: 1, BookingID: "b3"}, ErrInvalid, "userId"},
		{"no user", Input{QuoteID: "q1", Amount: 1, BookingID: "b4"}, ErrInvalid, "userId"},
		{"negative", Input{QuoteID: "q1", UserID: "alice", Amount: -1, BookingID: "b5"}, ErrInvalid, "amount"},
		{"NaN", Input{QuoteID: "q1", UserID: "alice", Amount: math.NaN(), BookingID: "b6"}, ErrInvalid, "amount"},
		{"infinite", Input{QuoteID: "q1", UserID: "alice", Amount: math.Inf(1), BookingID: "b7"}, ErrInvalid, "amount"},
		{"bad id", Input{QuoteID: "q1", UserID: "alice", Amount: 1, BookingID: "a/b"}, ErrInvalid, "bookingId"},
	}
	for _, c := range cases {
		_, err := svc.Book(ctx, ingest.ClientID{}, c.in)
		if !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
			continue
		}
		status, _, fields := classify(err)
		if len(fields) == 0 || fields[0].Field != c.field || status/100 != 4 {
			t.Errorf("%s: HTTP %d fields %+v, want a 4xx on %s", c.name, status, fields, c.field)
		}
	}
	if len(in.events) != 1 {
		t.Fatalf("refused bookings sent events: %d", len(in.events))
	}
}

func TestBookRedisDown(t *testing.T) {
	ctx := context.Background()
	svc, in, _, stop := setup(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Book(ctx, ingest.ClientID{}, Input{QuoteID: "q1", UserID: "alice", Amount: 1, BookingID: "b1"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Redis down: %v, want ErrUnavailable", err)
	}
	if status, _, _ := classify(err); status != 503 {
		t.Fatalf("HTTP %d, want 503", status)
	}
	if len(in.events) != 0 {
		t.Fatal("an event was sent without a booking record")
	}
}
