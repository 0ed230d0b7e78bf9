package ingest

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"
)

// Codes of FieldError, machine-readable; Message says the same for people.
const (
	CodeRequired    = "required"     // a required field is missing or empty
	CodeInvalid     = "invalid"      // a value breaks a format or is not allowed
	CodeTooLong     = "too_long"     // a string is over its length limit
	CodeUnknownType = "unknown_type" // type is none of the known event types
	CodeOutOfRange  = "out_of_range" // a number is outside its range
	CodeInFuture    = "in_future"    // timestamp beyond the allowed clock skew
	CodeTooLate     = "too_late"     // timestamp older than the accepted lateness
	CodeWrongType   = "wrong_type"   // a JSON value of the wrong type (HTTP only)
	CodeRateLimited = "rate_limited" // the event's user is over its rate limit; retry later
	CodeInFlight    = "in_flight"    // the same eventId is being ingested by another request; retry later
	CodeForbidden   = "forbidden"    // the client may not send this type of event (supply role)
	CodeImplausible = "implausible"  // a supply fall too large for one report, held until a second report confirms it (SupplyGuard)
)

// FieldError is one problem with one field of an event.
type FieldError struct {
	// Field is the JSON name of the field ("regionId", "experiment.id");
	// empty when the problem is the event as a whole.
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Limits of the event fields.
const (
	MaxEventIDLen = 128 // eventId: 1-128 printable ASCII characters, no spaces
	MaxIDLen      = 64  // regionId, productType, quoteId, experiment id and variant: [A-Za-z0-9._-]
	MaxUserIDLen  = 128 // userId: any UTF-8 text
)

// MinTimestamp is the earliest event time accepted, backfills included: the
// ClickHouse sink stores event times as DateTime (from the Unix epoch) and
// drops older events, and a time before year 1 in UTC would not even
// decode from the Kafka record (RFC 3339 has no negative years).
var MinTimestamp = time.Unix(0, 0).UTC()

// typeRules holds the rules particular to each event type; a new type needs
// an entry here and a topic in TopicFor.
var typeRules = map[string]func(e *Event) []FieldError{
	TypeSearch: nil,
	TypeBooking: func(e *Event) []FieldError {
		if e.Price == nil {
			return []FieldError{{"price", CodeRequired, "a booking needs a price"}}
		}
		return nil
	},
	TypeCancel: nil,
	TypeSupplyUpdate: func(e *Event) []FieldError {
		if e.AvailableSupply == nil {
			return []FieldError{{"availableSupply", CodeRequired, "a supply_update needs availableSupply"}}
		}
		return nil
	},
	TypeExternalSignal: func(e *Event) []FieldError {
		var errs []FieldError
		if e.Signal == "" {
			errs = append(errs, FieldError{"signal", CodeRequired, "an external_signal needs a signal (" + strings.Join(signals, ", ") + ")"})
		}
		if e.Value == nil {
			errs = append(errs, FieldError{"value", CodeRequired, "an external_signal needs a value in [0, 1]"})
		}
		return errs
	},
}

var signals = []string{SignalWeather, SignalTraffic, SignalEvent}

// knownTypes lists typeRules' keys, sorted, for messages.
var knownTypes = func() string {
	ts := make([]string, 0, len(typeRules))
	for t := range typeRules {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return strings.Join(ts, ", ")
}()

// Validate checks one event as clients send it, at time now: an event
// timestamp may be at most maxSkew ahead of now and, unless the event is a
// Backfill, at most maxLateness behind. It returns every problem found, or
// nil. Fields set by the intake (UserHash, ReceivedAt) are not checked.
func Validate(e *Event, now time.Time, maxSkew, maxLateness time.Duration) []FieldError {
	var errs []FieldError
	add := func(field, code, format string, args ...any) {
		errs = append(errs, FieldError{field, code, fmt.Sprintf(format, args...)})
	}

	switch {
	case e.EventID == "":
		add("eventId", CodeRequired, "eventId is required")
	case len(e.EventID) > MaxEventIDLen:
		add("eventId", CodeTooLong, "eventId must be at most %d characters", MaxEventIDLen)
	case !printableASCII(e.EventID):
		add("eventId", CodeInvalid, "eventId may hold only printable ASCII characters without spaces")
	}

	rules, known := typeRules[e.Type]
	switch {
	case e.Type == "":
		add("type", CodeRequired, "type is required (%s)", knownTypes)
	case !known:
		add("type", CodeUnknownType, "unknown event type %q (known: %s)", clip(e.Type), knownTypes)
	case rules != nil:
		errs = append(errs, rules(e)...)
	}

	checkID(&errs, "regionId", e.RegionID, true)

	switch {
	case e.Timestamp.IsZero():
		add("timestamp", CodeRequired, "timestamp is required (RFC 3339, e.g. 2026-11-25T21:07:03Z)")
	case e.Timestamp.Before(MinTimestamp):
		add("timestamp", CodeInvalid, "timestamp %s is before %s, the earliest time events are stored with",
			e.Timestamp.UTC().Format(time.RFC3339Nano), MinTimestamp.Format(time.RFC3339))
	case e.Timestamp.After(now.Add(maxSkew)):
		add("timestamp", CodeInFuture, "timestamp %s is %s ahead of the server clock; at most %s is allowed",
			e.Timestamp.UTC().Format(time.RFC3339Nano), e.Timestamp.Sub(now).Round(time.Millisecond), maxSkew)
	case !e.Backfill && e.Timestamp.Before(now.Add(-maxLateness)):
		add("timestamp", CodeTooLate, "timestamp %s is %s old; live events may be at most %s old (older history is sent as a backfill)",
			e.Timestamp.UTC().Format(time.RFC3339Nano), now.Sub(e.Timestamp).Round(time.Second), maxLateness)
	}

	switch {
	case len(e.UserID) > MaxUserIDLen:
		add("userId", CodeTooLong, "userId must be at most %d bytes", MaxUserIDLen)
	case !utf8.ValidString(e.UserID):
		add("userId", CodeInvalid, "userId must be valid UTF-8")
	}
	checkID(&errs, "productType", e.ProductType, false)
	checkID(&errs, "quoteId", e.QuoteID, false)
	if x := e.Experiment; x != nil {
		checkID(&errs, "experiment.id", x.ID, true)
		checkID(&errs, "experiment.variant", x.Variant, true)
	}

	checkNumber(&errs, "price", e.Price, 0, math.Inf(1))
	checkNumber(&errs, "availableSupply", e.AvailableSupply, 0, math.Inf(1))
	checkNumber(&errs, "value", e.Value, 0, 1)
	if e.Signal != "" && !slices.Contains(signals, e.Signal) {
		add("signal", CodeInvalid, "unknown signal %q (known: %s)", clip(e.Signal), strings.Join(signals, ", "))
	}
	return errs
}

// checkID checks an identifier: 1 to 64 characters of letters, digits, '.',
// '_' and '-'; empty is fine unless required.
func checkID(errs *[]FieldError, field, id string, required bool) {
	switch {
	case id == "":
		if required {
			*errs = append(*errs, FieldError{field, CodeRequired, field + " is required"})
		}
	case len(id) > MaxIDLen:
		*errs = append(*errs, FieldError{field, CodeTooLong, fmt.Sprintf("%s must be at most %d characters", field, MaxIDLen)})
	default:
		for _, c := range id {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				*errs = append(*errs, FieldError{field, CodeInvalid, field + " may hold only letters, digits, '-', '_' and '.'"})
				return
			}
		}
	}
}

// checkNumber checks an optional number against [lo, hi] (and NaN, which
// JSON cannot carry but a Go caller can).
func checkNumber(errs *[]FieldError, field string, v *float64, lo, hi float64) {
	if v == nil {
		return
	}
	if math.IsNaN(*v) || math.IsInf(*v, 0) || *v < lo || *v > hi {
		rng := fmt.Sprintf("in [%g, %g]", lo, hi)
		if math.IsInf(hi, 1) {
			rng = fmt.Sprintf("≥ %g", lo)
		}
		*errs = append(*errs, FieldError{field, CodeOutOfRange, fmt.Sprintf("%s must be a finite number %s, got %g", field, rng, *v)})
	}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// clip shortens a client's value quoted in a message.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}

// wireEvent is an event as clients send it in JSON. It leaves out the
// fields the intake sets itself (userHash, receivedAt): a client cannot
// choose them.
type wireEvent struct {
	EventID         string      `json:"eventId"`
	Type            string      `json:"type"`
	RegionID        string      `json:"regionId"`
	Timestamp       string      `json:"timestamp"`
	UserID          string      `json:"userId"`
	ProductType     string      `json:"productType"`
	Price           *float64    `json:"price"`
	AvailableSupply *float64    `json:"availableSupply"`
	Signal          string      `json:"signal"`
	Value           *float64    `json:"value"`
	QuoteID         string      `json:"quoteId"`
	Experiment      *Experiment `json:"experiment"`
	Backfill        bool        `json:"backfill"`
}

// DecodeEventJSON decodes one event sent by a client. A value of the wrong
// JSON type (say "price": "abc") or a timestamp that is not RFC 3339 is
// reported as a FieldError for that field, with every other problem of the
// same kind; unknown fields are ignored.
func DecodeEventJSON(raw []byte) (Event, []FieldError) {
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return Event{}, []FieldError{notObject}
	}
	var w wireEvent
	if err := json.Unmarshal(raw, &w); err != nil {
		return decodeFields(raw)
	}
	return w.decode()
}

// decode is the event of a well-typed wire event, or the timestamp's error.
func (w *wireEvent) decode() (Event, []FieldError) {
	e := w.event()
	if w.Timestamp != "" {
		ts, err := time.Parse(time.RFC3339, w.Timestamp)
		if err != nil {
			return e, []FieldError{badTimestamp(w.Timestamp)}
		}
		e.Timestamp = ts
	}
	return e, nil
}

func (w *wireEvent) event() Event {
	return Event{
		EventID: w.EventID, Type: w.Type, RegionID: w.RegionID, UserID: w.UserID, ProductType: w.ProductType,
		Price: w.Price, AvailableSupply: w.AvailableSupply, Signal: w.Signal, Value: w.Value,
		QuoteID: w.QuoteID, Experiment: w.Experiment, Backfill: w.Backfill,
	}
}

var notObject = FieldError{"", CodeWrongType, "an event must be a JSON object"}

func badTimestamp(s string) FieldError {
	return FieldError{"timestamp", CodeInvalid, fmt.Sprintf("timestamp %q is not an RFC 3339 time (e.g. 2026-11-25T21:07:03Z)", clip(s))}
}

// decodeFields is the slow path of DecodeEventJSON for an event that did
// not decode: it decodes field by field to name every bad one. The event
// returned has only its eventId (when that is a string), for the response.
func decodeFields(raw []byte) (Event, []FieldError) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return Event{}, []FieldError{notObject}
	}
	var e Event
	_ = json.Unmarshal(fields["eventId"], &e.EventID)
	var errs []FieldError
	wrong := func(field, want string) {
		errs = append(errs, FieldError{field, CodeWrongType, fmt.Sprintf("%s must be %s", field, want)})
	}
	check := func(prefix string, fields map[string]json.RawMessage, names []string, target func() any, want string) {
		for _, name := range names {
			v, ok := fields[name]
			if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				continue
			}
			if err := json.Unmarshal(v, target()); err != nil {
				wrong(prefix+name, want)
			}
		}
	}
	strs := []string{"eventId", "type", "regionId", "timestamp", "userId", "productType", "signal", "quoteId"}
	nums := []string{"price", "availableSupply", "value"}
	check("", fields, strs, func() any { return new(string) }, "a string")
	check("", fields, nums, func() any { return new(float64) }, "a number")
	check("", fields, []string{"backfill"}, func() any { return new(bool) }, "true or false")
	var ts string
	if v, ok := fields["timestamp"]; ok && json.Unmarshal(v, &ts) == nil && ts != "" {
		if _, err := time.Parse(time.RFC3339, ts); err != nil {
			errs = append(errs, badTimestamp(ts))
		}
	}
	if v, ok := fields["experiment"]; ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		var x map[string]json.RawMessage
		if err := json.Unmarshal(v, &x); err != nil || x == nil {
			wrong("experiment", "an object with id and variant")
		} else {
			check("experiment.", x, []string{"id", "variant"}, func() any { return new(string) }, "a string")
		}
	}
	if len(errs) == 0 {
		// The struct decoder refused something the field checks accept
		// (for example a case-variant duplicate key): report it whole.
		var w wireEvent
		err := json.Unmarshal(raw, &w)
		errs = append(errs, FieldError{"", CodeInvalid, fmt.Sprintf("event does not decode: %v", err)})
	}
	return e, errs
}
