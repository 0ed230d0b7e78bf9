package bookings

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/quotes"
)

// Path is where Handler is meant to be mounted.
const Path = "/v1/book"

// maxBody bounds a booking request.
const maxBody = 16 << 10

// Handler serves POST /v1/book with the body
// {"quoteId", "userId", "amount", "bookingId"}. Answers:
//   - 201 with the Booking when recorded, 200 with "duplicate": true when
//     the same booking had been recorded before;
//   - 400 {"error": {"code": "INVALID_BOOKING", "message", "fields":
//     [{"field", "message"}]}} for bad input (INVALID_JSON for a body that
//     is not JSON);
//   - 404 QUOTE_NOT_FOUND for an unknown or expired quote;
//   - 409 BOOKING_CONFLICT for a bookingId used with another quote or amount;
//   - 503 UNAVAILABLE with Retry-After: send the same booking again;
//   - 413 for a body over 16 KiB, 405 for another method.
func (s *Service) Handler(logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			fail(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "use POST", nil)
			return
		}
		var in Input
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			var tooLarge *http.MaxBytesError
			var typeErr *json.UnmarshalTypeError
			switch {
			case errors.As(err, &tooLarge):
				fail(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", "request body over 16 KiB", nil)
			case errors.As(err, &typeErr):
				fail(w, http.StatusBadRequest, "INVALID_BOOKING", "a field has the wrong JSON type",
					[]fieldMsg{{typeErr.Field, "must be a JSON " + typeErr.Type.Kind().String()}})
			default:
				fail(w, http.StatusBadRequest, "INVALID_JSON", err.Error(), nil)
			}
			return
		}
		b, err := s.Book(r.Context(), ingest.ClientOf(auth.FromContext(r.Context())), in)
		if err != nil {
			status, code, fields := classify(err)
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
				logger.Warn("booking failed", "bookingId", in.BookingID, "err", err)
			}
			msg := err.Error()
			if status == http.StatusInternalServerError {
				logger.Error("booking failed", "bookingId", in.BookingID, "err", err)
				msg = "internal error"
			}
			fail(w, status, code, msg, fields)
			return
		}
		status := http.StatusCreated
		if b.Duplicate {
			status = http.StatusOK
		}
		reply(w, status, b)
	})
}

type fieldMsg struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// classify maps an error of Book to an HTTP answer.
func classify(err error) (int, string, []fieldMsg) {
	var fields []fieldMsg
	for _, e := range unjoin(err) {
		var fe *FieldError
		var qe *quotes.InputError
		switch {
		case errors.As(e, &fe):
			fields = append(fields, fieldMsg{fe.Field, fe.Msg})
		case errors.As(e, &qe):
			fields = append(fields, fieldMsg{qe.Field, qe.Msg})
		}
	}
	switch {
	case errors.Is(err, ErrConflict):
		return http.StatusConflict, "BOOKING_CONFLICT", fields
	case errors.Is(err, quotes.ErrQuoteNotFound):
		return http.StatusNotFound, "QUOTE_NOT_FOUND", fields
	case errors.Is(err, ErrInvalid), errors.Is(err, quotes.ErrInvalidInput):
		return http.StatusBadRequest, "INVALID_BOOKING", fields
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, "UNAVAILABLE", nil
	}
	return http.StatusInternalServerError, "INTERNAL", nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func fail(w http.ResponseWriter, status int, code, msg string, fields []fieldMsg) {
	body := map[string]any{"code": code, "message": msg}
	if fields != nil {
		body["fields"] = fields
	}
	reply(w, status, map[string]any{"error": body})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
