// Package bookings records bookings of quotes: the conversions of pricing
// experiments and booking events of the demand features. A booking names
// the quote it was made at (which says the region, product, user and the
// experiment variants that priced it), is kept in Redis under its
// bookingId so that a retry is counted once and a reused id with another
// amount is refused, and flows through the event intake as a booking event
// (exactly once into ClickHouse, where the experiment results count it).
package bookings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/quotes"
)

// Errors a caller can act on; check them with errors.Is.
var (
	ErrInvalid = errors.New("invalid booking")
	// ErrConflict: the bookingId was recorded before with another quote or amount.
	ErrConflict = errors.New("bookingId already used for another booking")
	// ErrUnavailable: Redis or the intake failed; nothing is lost by
	// sending the same booking again.
	ErrUnavailable = errors.New("booking store temporarily unavailable")
)

// FieldError is bad input, naming the field.
type FieldError struct {
	Field, Msg string
	Err        error // ErrInvalid or ErrConflict
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }
func (e *FieldError) Unwrap() error { return e.Err }

// Quotes looks quotes up; quotes.Service implements it.
type Quotes interface {
	Lookup(ctx context.Context, quoteID string) (quotes.Quote, error)
	UserHash(userID string) string
}

// Ingester takes events in; ingest.Intake implements it.
type Ingester interface {
	Ingest(ctx context.Context, client ingest.ClientID, events []ingest.Event) (ingest.Response, error)
}

// Options configures a Service. Zero values take the defaults.
type Options struct {
	// Retention is how long a bookingId is remembered (default 90 days):
	// a retry within it is a duplicate, never a second booking.
	Retention time.Duration
	// MaxAmount bounds the amount (default 1,000,000).
	MaxAmount float64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service records bookings. It is safe for concurrent use.
type Service struct {
	quotes Quotes
	rdb    redis.UniversalClient
	intake Ingester
	opts   Options
}

// New returns a booking service.
func New(q Quotes, rdb redis.UniversalClient, intake Ingester, opts Options) *Service {
	if opts.Retention <= 0 {
		opts.Retention = 90 * 24 * time.Hour
	}
	if opts.MaxAmount <= 0 {
		opts.MaxAmount = 1e6
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Service{quotes: q, rdb: rdb, intake: intake, opts: opts}
}

// Input is a booking as a client sends it.
type Input struct {
	QuoteID   string  `json:"quoteId"`
	UserID    string  `json:"userId"`
	Amount    float64 `json:"amount"`
	BookingID string  `json:"bookingId"`
}

// Booking is a recorded booking.
type Booking struct {
	BookingID   string                 `json:"bookingId"`
	QuoteID     string                 `json:"quoteId"`
	Amount      float64                `json:"amount"`
	Currency    string                 `json:"currency"`
	RegionID    string                 `json:"regionId"`
	ProductType string                 `json:"productType"`
	Experiments []quotes.ExperimentRef `json:"experiments"`
	BookedAt    time.Time              `json:"bookedAt"`
	// Duplicate: the booking had been recorded before (this is a retry).
	Duplicate bool `json:"duplicate"`
}

// stored is the Redis record of a booking.
type stored struct {
	Booking
	UserHash string `json:"userHash,omitempty"`
	// Recorded: the intake acknowledged the booking event. A record that is
	// not yet recorded is sent to the intake again by a retry (whose
	// dedup keeps it once).
	Recorded bool `json:"recorded"`
}

func key(id string) string { return "booking:{" + id + "}" }

// Validate checks the input fields.
func (in Input) Validate(maxAmount float64) error {
	var errs []error
	add := func(field, msg string) { errs = append(errs, &FieldError{Field: field, Msg: msg, Err: ErrInvalid}) }
	if err := quotes.ValidateID("bookingId", in.BookingID); err != nil {
		add("bookingId", err.(*quotes.InputError).Msg)
	}
	if in.QuoteID == "" || len(in.QuoteID) > 64 {
		add("quoteId", "must be 1 to 64 characters")
	}
	if len(in.UserID) > ingest.MaxUserIDLen {
		add("userId", fmt.Sprintf("must be at most %d characters", ingest.MaxUserIDLen))
	}
	if math.IsNaN(in.Amount) || math.IsInf(in.Amount, 0) || in.Amount < 0 || in.Amount > maxAmount {
		add("amount", fmt.Sprintf("must be a finite number between 0 and %g", maxAmount))
	}
	return errors.Join(errs...)
}

// Book records a booking of a quote given earlier, while the quote is
// valid. The same booking sent again (same bookingId, quote and amount) is
// a duplicate, answered as recorded, also after the quote expired; the
// same bookingId with another quote or amount is ErrConflict. A booking of
// a quote made for a user must name that user.
func (s *Service) Book(ctx context.Context, client ingest.ClientID, in Input) (Booking, error) {
	if err := in.Validate(s.opts.MaxAmount); err != nil {
		return Booking{}, err
	}
	prev, found, err := s.get(ctx, in.BookingID)
	if err != nil {
		return Booking{}, err
	}
	if found {
		return s.retry(ctx, client, in, prev)
	}
	q, err := s.quotes.Lookup(ctx, in.QuoteID)
	if err != nil {
		return Booking{}, err
	}
	if q.UserHash != "" && s.quotes.UserHash(in.UserID) != q.UserHash {
		msg := "must be the user the quote was made for"
		if in.UserID == "" {
			msg = "is required: the quote was made for a user"
		}
		return Booking{}, &FieldError{Field: "userId", Msg: msg, Err: ErrInvalid}
	}
	rec := stored{
		Booking: Booking{BookingID: in.BookingID, QuoteID: q.ID, Amount: in.Amount, Currency: q.Currency,
			RegionID: q.RegionID, ProductType: q.ProductType, Experiments: q.Experiments,
			BookedAt: s.opts.Now().UTC()},
		UserHash: s.quotes.UserHash(in.UserID),
	}
	if rec.Experiments == nil {
		rec.Experiments = []quotes.ExperimentRef{}
	}
	b, _ := json.Marshal(rec)
	ok, err := s.rdb.SetNX(ctx, key(in.BookingID), b, s.opts.Retention).Result()
	if err != nil {
		return Booking{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if !ok { // another request recorded the same id meanwhile
		prev, found, err := s.get(ctx, in.BookingID)
		if err != nil {
			return Booking{}, err
		}
		if !found {
			return Booking{}, fmt.Errorf("%w: booking %s vanished", ErrUnavailable, in.BookingID)
		}
		return s.retry(ctx, client, in, prev)
	}
	return s.record(ctx, client, in, rec)
}

// retry answers a booking whose id is known.
func (s *Service) retry(ctx context.Context, client ingest.ClientID, in Input, prev stored) (Booking, error) {
	if prev.QuoteID != in.QuoteID || prev.Amount != in.Amount {
		return Booking{}, &FieldError{Field: "bookingId", Err: ErrConflict,
			Msg: fmt.Sprintf("bookingId %q was recorded for quote %s with amount %g", in.BookingID, prev.QuoteID, prev.Amount)}
	}
	if prev.UserHash != s.quotes.UserHash(in.UserID) {
		return Booking{}, &FieldError{Field: "userId", Msg: "must be the user of the recorded booking", Err: ErrInvalid}
	}
	if !prev.Recorded {
		b, err := s.record(ctx, client, in, prev)
		if err == nil {
			b.Duplicate = true
		}
		return b, err
	}
	prev.Duplicate = true
	return prev.Booking, nil
}

// record sends the booking event through the intake and marks the record.
func (s *Service) record(ctx context.Context, client ingest.ClientID, in Input, rec stored) (Booking, error) {
	amount := rec.Amount
	ev := ingest.Event{
		EventID: "booking:" + rec.BookingID, Type: ingest.TypeBooking, RegionID: rec.RegionID,
		Timestamp: rec.BookedAt, UserID: in.UserID, ProductType: rec.ProductType, Price: &amount, QuoteID: rec.QuoteID,
	}
	if len(rec.Experiments) > 0 {
		// The event carries the first layer's variant (events have one);
		// results attribute bookings by user to every experiment.
		ev.Experiment = &ingest.Experiment{ID: rec.Experiments[0].ID, Variant: rec.Experiments[0].Variant}
	}
	resp, err := s.intake.Ingest(ctx, client, []ingest.Event{ev})
	if err != nil {
		return Booking{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if r := resp.Events[0]; r.Status == ingest.StatusRejected {
		// Validated above, so only rate limits and in-flight claims are left.
		return Booking{}, fmt.Errorf("%w: booking event refused: %v", ErrUnavailable, r.Errors)
	}
	rec.Recorded = true
	b, _ := json.Marshal(rec)
	if err := s.rdb.Set(ctx, key(rec.BookingID), b, s.opts.Retention).Err(); err != nil {
		// The event is in; a retry re-sends it and the intake's dedup
		// answers duplicate.
		return Booking{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return rec.Booking, nil
}

func (s *Service) get(ctx context.Context, id string) (stored, bool, error) {
	b, err := s.rdb.Get(ctx, key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return stored{}, false, nil
	}
	if err != nil {
		return stored{}, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var rec stored
	if err := json.Unmarshal(b, &rec); err != nil {
		return stored{}, false, fmt.Errorf("bookings: decode %s: %w", id, err)
	}
	return rec, true, nil
}
