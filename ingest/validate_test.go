package ingest

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

var validateNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ptr(v float64) *float64 { return &v }

// validEvent is a valid event of each type.
func validEvent(typ string) Event {
	e := Event{EventID: "e-1", Type: typ, RegionID: "berlin", Timestamp: validateNow.Add(-time.Second)}
	switch typ {
	case TypeBooking:
		e.Price = ptr(12.5)
	case TypeSupplyUpdate:
		e.AvailableSupply = ptr(30)
	case TypeExternalSignal:
		e.Signal, e.Value = SignalWeather, ptr(0.7)
	}
	return e
}

func TestValidate(t *testing.T) {
	for _, typ := range []string{TypeSearch, TypeBooking, TypeCancel, TypeSupplyUpdate, TypeExternalSignal} {
		e := validEvent(typ)
		if errs := Validate(&e, validateNow, 30*time.Second, 24*time.Hour); errs != nil {
			t.Errorf("valid %s: %v", typ, errs)
		}
	}
	full := validEvent(TypeBooking)
	full.UserID, full.ProductType, full.QuoteID = strings.Repeat("ü", 64), "xl", "01a21487-a3e8-7644-ab00-c7f01ac30b58"
	full.Experiment = &Experiment{ID: "exp.7", Variant: "B"}
	full.EventID = strings.Repeat("x", 127) + "~"
	full.Timestamp = validateNow.Add(30 * time.Second) // exactly the allowed skew
	if errs := Validate(&full, validateNow, 30*time.Second, 24*time.Hour); errs != nil {
		t.Errorf("valid event with every field: %v", errs)
	}

	type fe struct{ field, code string }
	tests := []struct {
		name   string
		typ    string
		change func(*Event)
		want   []fe
	}{
		{"missing eventId", TypeSearch, func(e *Event) { e.EventID = "" }, []fe{{"eventId", CodeRequired}}},
		{"long eventId", TypeSearch, func(e *Event) { e.EventID = strings.Repeat("x", 129) }, []fe{{"eventId", CodeTooLong}}},
		{"eventId with a space", TypeSearch, func(e *Event) { e.EventID = "a b" }, []fe{{"eventId", CodeInvalid}}},
		{"eventId with a control character", TypeSearch, func(e *Event) { e.EventID = "a\nb" }, []fe{{"eventId", CodeInvalid}}},
		{"missing type", TypeSearch, func(e *Event) { e.Type = "" }, []fe{{"type", CodeRequired}}},
		{"unknown type", TypeSearch, func(e *Event) { e.Type = "click" }, []fe{{"type", CodeUnknownType}}},
		{"missing regionId", TypeSearch, func(e *Event) { e.RegionID = "" }, []fe{{"regionId", CodeRequired}}},
		{"long regionId", TypeSearch, func(e *Event) { e.RegionID = strings.Repeat("r", 65) }, []fe{{"regionId", CodeTooLong}}},
		{"regionId with a slash", TypeSearch, func(e *Event) { e.RegionID = "ber/lin" }, []fe{{"regionId", CodeInvalid}}},
		{"missing timestamp", TypeSearch, func(e *Event) { e.Timestamp = time.Time{} }, []fe{{"timestamp", CodeRequired}}},
		{"timestamp beyond the skew", TypeSearch, func(e *Event) { e.Timestamp = validateNow.Add(31 * time.Second) }, []fe{{"timestamp", CodeInFuture}}},
		{"timestamp older than the lateness", TypeSearch, func(e *Event) { e.Timestamp = validateNow.Add(-25 * time.Hour) }, []fe{{"timestamp", CodeTooLate}}},
		{"old backfill passes", TypeSearch, func(e *Event) { e.Timestamp, e.Backfill = validateNow.AddDate(-1, 0, 0), true }, nil},
		{"backfill before 1970 does not", TypeSearch, func(e *Event) { e.Timestamp, e.Backfill = time.Unix(-1, 0), true }, []fe{{"timestamp", CodeInvalid}}},
		{"backfill before year 1 in UTC does not", TypeSearch, func(e *Event) {
			e.Timestamp, e.Backfill = time.Date(0, 1, 1, 0, 30, 0, 0, time.FixedZone("", 3600)), true
		}, []fe{{"timestamp", CodeInvalid}}},
		{"future backfill does not", TypeSearch, func(e *Event) { e.Timestamp, e.Backfill = validateNow.Add(time.Hour), true }, []fe{{"timestamp", CodeInFuture}}},
		{"long userId", TypeSearch, func(e *Event) { e.UserID = strings.Repeat("u", 129) }, []fe{{"userId", CodeTooLong}}},
		{"userId not UTF-8", TypeSearch, func(e *Event) { e.UserID = "\xff" }, []fe{{"userId", CodeInvalid}}},
		{"bad productType", TypeSearch, func(e *Event) { e.ProductType = "x l" }, []fe{{"productType", CodeInvalid}}},
		{"bad quoteId", TypeSearch, func(e *Event) { e.QuoteID = strings.Repeat("q", 65) }, []fe{{"quoteId", CodeTooLong}}},
		{"experiment without variant", TypeSearch, func(e *Event) { e.Experiment = &Experiment{ID: "x"} }, []fe{{"experiment.variant", CodeRequired}}},
		{"experiment with a bad id", TypeSearch, func(e *Event) { e.Experiment = &Experiment{ID: "a b", Variant: "A"} }, []fe{{"experiment.id", CodeInvalid}}},
		{"booking without price", TypeBooking, func(e *Event) { e.Price = nil }, []fe{{"price", CodeRequired}}},
		{"negative price", TypeBooking, func(e *Event) { e.Price = ptr(-1) }, []fe{{"price", CodeOutOfRange}}},
		{"NaN price", TypeBooking, func(e *Event) { e.Price = ptr(math.NaN()) }, []fe{{"price", CodeOutOfRange}}},
		{"infinite price", TypeBooking, func(e *Event) { e.Price = ptr(math.Inf(1)) }, []fe{{"price", CodeOutOfRange}}},
		{"free booking passes", TypeBooking, func(e *Event) { e.Price = ptr(0) }, nil},
		{"supply_update without supply", TypeSupplyUpdate, func(e *Event) { e.AvailableSupply = nil }, []fe{{"availableSupply", CodeRequired}}},
		{"negative supply", TypeSupplyUpdate, func(e *Event) { e.AvailableSupply = ptr(-3) }, []fe{{"availableSupply", CodeOutOfRange}}},
		{"signal without a name", TypeExternalSignal, func(e *Event) { e.Signal = "" }, []fe{{"signal", CodeRequired}}},
		{"signal without a value", TypeExternalSignal, func(e *Event) { e.Value = nil }, []fe{{"value", CodeRequired}}},
		{"unknown signal", TypeExternalSignal, func(e *Event) { e.Signal = "rain" }, []fe{{"signal", CodeInvalid}}},
		{"signal value above 1", TypeExternalSignal, func(e *Event) { e.Value = ptr(1.01) }, []fe{{"value", CodeOutOfRange}}},
		{"signal value below 0", TypeExternalSignal, func(e *Event) { e.Value = ptr(-0.01) }, []fe{{"value", CodeOutOfRange}}},
		{"several problems at once", TypeBooking, func(e *Event) { e.EventID, e.RegionID, e.Price = "", "", nil },
			[]fe{{"eventId", CodeRequired}, {"price", CodeRequired}, {"regionId", CodeRequired}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent(tt.typ)
			tt.change(&e)
			errs := Validate(&e, validateNow, 30*time.Second, 24*time.Hour)
			var got []fe
			for _, err := range errs {
				got = append(got, fe{err.Field, err.Code})
				if err.Message == "" {
					t.Errorf("%s: empty message", err.Field)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("errors = %v, want %v", errs, tt.want)
			}
		})
	}
}

func TestDecodeEventJSON(t *testing.T) {
	tests := []struct {
		name   string
		json   string
		want   Event
		fields []string // fields with errors
	}{
		{"full event", `{"eventId":"e1","type":"booking","regionId":"paris","timestamp":"2026-11-25T11:59:59.5+01:00",
			"userId":"u-7","productType":"ride","price":12.5,"quoteId":"q1","experiment":{"id":"x","variant":"B"},"unknown":1}`,
			Event{EventID: "e1", Type: "booking", RegionID: "paris", Timestamp: time.Date(2026, 11, 25, 10, 59, 59, 5e8, time.UTC),
				UserID: "u-7", ProductType: "ride", Price: ptr(12.5), QuoteID: "q1", Experiment: &Experiment{ID: "x", Variant: "B"}}, nil},
		{"a client cannot set the intake's fields", `{"eventId":"e1","userHash":"forged","receivedAt":"2020-01-01T00:00:00Z"}`,
			Event{EventID: "e1"}, nil},
		{"nulls are absent", `{"eventId":"e1","price":null,"experiment":null}`, Event{EventID: "e1"}, nil},
		{"price as a string", `{"eventId":"e1","price":"abc"}`, Event{}, []string{"price"}},
		{"every wrong type named", `{"eventId":7,"type":true,"availableSupply":"3","value":[1],"backfill":"yes","experiment":{"id":1,"variant":"A"}}`,
			Event{}, []string{"eventId", "type", "availableSupply", "value", "backfill", "experiment.id"}},
		{"experiment not an object", `{"eventId":"e1","experiment":"A"}`, Event{}, []string{"experiment"}},
		{"timestamp not RFC 3339", `{"eventId":"e1","timestamp":"25/11/2026 12:00"}`, Event{EventID: "e1"}, []string{"timestamp"}},
		{"timestamp as a number", `{"eventId":"e1","timestamp":1764072000}`, Event{}, []string{"timestamp"}},
		{"not an object", `[1,2]`, Event{}, []string{""}},
		{"a string", `"event"`, Event{}, []string{""}},
		{"null", `null`, Event{}, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := DecodeEventJSON([]byte(tt.json))
			var fields []string
			for _, e := range errs {
				fields = append(fields, e.Field)
			}
			slices.Sort(fields)
			want := slices.Clone(tt.fields)
			slices.Sort(want)
			if !slices.Equal(fields, want) {
				t.Fatalf("error fields = %q (%v), want %q", fields, errs, want)
			}
			if errs != nil {
				return
			}
			if got.EventID != tt.want.EventID || got.Type != tt.want.Type || !got.Timestamp.Equal(tt.want.Timestamp) ||
				got.UserID != tt.want.UserID || got.UserHash != "" || !got.ReceivedAt.IsZero() ||
				!eqPtr(got.Price, tt.want.Price) || (got.Experiment == nil) != (tt.want.Experiment == nil) ||
				(got.Experiment != nil && *got.Experiment != *tt.want.Experiment) {
				t.Fatalf("decoded %+v, want %+v", got, tt.want)
			}
		})
	}
}

func eqPtr(a, b *float64) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
