package ingest

import (
	stdjson "encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"

	"github.com/surgeworks/surge/userhash"
)

// The clock and limits of the fuzzed intake (IntakeOptions' defaults).
var (
	fuzzNow      = time.Date(2026, 11, 25, 21, 50, 30, 0, time.UTC)
	fuzzSkew     = 30 * time.Second
	fuzzLateness = 24 * time.Hour
)

// decodeRequest decodes a POST /v1/events body as serveHTTP does — the
// one-pass decoder when every event is well typed, else event by event —
// and validates what decoded. ok is false when serveHTTP refuses the body
// as a whole (400 INVALID_JSON or INVALID_REQUEST). Keep it in step with
// serveHTTP.
func decodeRequest(body []byte) (items []item, ok bool) {
	if fast, ok := decodeWellTyped(body); ok {
		items = make([]item, len(fast))
		for i := range fast {
			items[i].ev, items[i].errs = fast[i].decode()
		}
	} else {
		raws, ok := rawEvents(body)
		if !ok {
			return nil, false
		}
		items = make([]item, len(raws))
		for i, raw := range raws {
			items[i].ev, items[i].errs = DecodeEventJSON(raw)
		}
	}
	for i := range items {
		if items[i].errs == nil {
			items[i].errs = Validate(&items[i].ev, fuzzNow, fuzzSkew, fuzzLateness)
		}
	}
	return items, true
}

// rawEvents splits a body into its events, as serveHTTP's slow path does.
func rawEvents(body []byte) ([]json.RawMessage, bool) {
	var b struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil || b.Events == nil {
		return nil, false
	}
	return b.Events, true
}

// Field names a FieldError may carry, and the codes of decoding and
// validation (the intake adds rate_limited and in_flight later).
var (
	fuzzFields = map[string]bool{
		"eventId": true, "type": true, "regionId": true, "timestamp": true, "userId": true, "productType": true,
		"price": true, "availableSupply": true, "signal": true, "value": true, "quoteId": true, "backfill": true,
		"experiment": true, "experiment.id": true, "experiment.variant": true,
	}
	fuzzCodes = map[string]bool{
		CodeRequired: true, CodeInvalid: true, CodeTooLong: true, CodeUnknownType: true,
		CodeOutOfRange: true, CodeInFuture: true, CodeTooLate: true, CodeWrongType: true,
	}
)

// checkFieldErrors: every error has a known code and a short, readable
// message, and names a known field (only an event that is not an object,
// or that does not decode at all, is refused as a whole); no field is
// named twice.
func checkFieldErrors(t *testing.T, i int, errs []FieldError) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range errs {
		switch {
		case !fuzzCodes[e.Code]:
			t.Fatalf("event %d: unknown code in %+v", i, e)
		case e.Message == "" || len(e.Message) > 512 || !utf8.ValidString(e.Message):
			t.Fatalf("event %d: message of %s/%s empty, over 512 bytes or not UTF-8: %q", i, e.Field, e.Code, e.Message)
		case e.Field == "" && e != notObject && !(e.Code == CodeInvalid && strings.HasPrefix(e.Message, "event does not decode")):
			t.Fatalf("event %d: error names no field: %+v", i, e)
		case e.Field != "" && !fuzzFields[e.Field]:
			t.Fatalf("event %d: error names an unknown field: %+v", i, e)
		case seen[e.Field]:
			t.Fatalf("event %d: field %q named twice in %+v", i, e.Field, errs)
		}
		seen[e.Field] = true
	}
}

func sameFloat(a, b *float64) bool {
	return a == nil && b == nil || a != nil && b != nil && math.Float64bits(*a) == math.Float64bits(*b)
}

// sameEvent compares every field; times by instant.
func sameEvent(a, b Event) bool {
	return a.EventID == b.EventID && a.Type == b.Type && a.RegionID == b.RegionID && a.Timestamp.Equal(b.Timestamp) &&
		a.UserID == b.UserID && a.UserHash == b.UserHash && a.ProductType == b.ProductType &&
		sameFloat(a.Price, b.Price) && sameFloat(a.AvailableSupply, b.AvailableSupply) && sameFloat(a.Value, b.Value) &&
		a.Signal == b.Signal && a.QuoteID == b.QuoteID && reflect.DeepEqual(a.Experiment, b.Experiment) &&
		a.ReceivedAt.Equal(b.ReceivedAt) && a.Backfill == b.Backfill
}

// FuzzDecodeEvents fuzzes the body of POST /v1/events through decoding and
// validation. Beyond not panicking:
//   - every field error has a known code, a message, and names one known
//     field at most once (see checkFieldErrors);
//   - an event decodes the same alone as in its batch (serveHTTP picks the
//     one-pass or the per-event decoder by the whole body);
//   - the valid events, encoded again as a client would, decode to the
//     same events, still valid;
//   - a valid event is not older than the ClickHouse sink stores (it would
//     be accepted, then dropped), and, normalised as the intake does,
//     encodes for Kafka and decodes back (DecodeEvent) to the same event.
func FuzzDecodeEvents(f *testing.F) {
	for _, body := range []string{
		// The README's example, at fuzzNow.
		`{"events": [
  {"eventId": "e1", "type": "search",  "regionId": "berlin", "timestamp": "2026-11-25T21:50:27Z", "userId": "u1"},
  {"eventId": "e2", "type": "booking", "regionId": "berlin", "timestamp": "2026-11-25T21:50:27Z", "price": 12.5},
  {"eventId": "e3", "type": "bogus",   "regionId": "berlin", "timestamp": "2026-11-25T21:50:27Z"}]}`,
		`{"events":[{"eventId":"s1","type":"supply_update","regionId":"paris","timestamp":"2026-11-25T22:50:00.250+01:00","availableSupply":42},` +
			`{"eventId":"x1","type":"external_signal","regionId":"nyc","timestamp":"2026-11-25T16:50:00-05:00","signal":"weather","value":0.75},` +
			`{"eventId":"c1","type":"cancel","regionId":"berlin","timestamp":"2026-11-25T21:49:00Z","quoteId":"01a21487-a3e8-7644-ab00-c7f01ac30b58","experiment":{"id":"exp.7","variant":"B"}}]}`,
		`{"events":[{"eventId":"old-1","type":"search","regionId":"ANC","timestamp":"2001-01-01T00:01:00Z","backfill":true}]}`,
		`{"events":[{"eventId":7,"type":true,"availableSupply":"3","value":[1],"backfill":"yes","experiment":{"id":1,"variant":"A"}}]}`,
		`{"events":[{"eventId":"e1","price":"abc"},null,"event",[1,2],{"eventId":"e2","timestamp":"25/11/2026 12:00"}]}`,
		`{"events":[{"eventId":"e1","experiment":"A"},{"eventId":"e2","timestamp":1764072000}]}`,
		`{"events":[{"eventId":"e1","EventId":"e2","type":"search","regionId":"berlin","timestamp":"2026-11-25T21:50:27Z"}]}`,
		`{"events":[]}`, `{"events":{}}`, `{"events":null}`, `[]`, `{}`, ``, `{"events":[{}]}`,
		// Edges of the timestamp: the allowed skew, the lateness, years 0 and 9999.
		`{"events":[{"eventId":"t1","type":"search","regionId":"r","timestamp":"2026-11-25T21:51:00Z"},` +
			`{"eventId":"t2","type":"search","regionId":"r","timestamp":"2026-11-24T21:50:30Z"},` +
			`{"eventId":"t3","type":"search","regionId":"r","timestamp":"0001-01-01T00:00:00Z","backfill":true},` +
			`{"eventId":"t4","type":"search","regionId":"r","timestamp":"0000-12-31T23:59:59-01:00","backfill":true},` +
			`{"eventId":"t5","type":"search","regionId":"r","timestamp":"0000-01-01T00:30:00+01:00","backfill":true},` +
			`{"eventId":"t6","type":"search","regionId":"r","timestamp":"1969-12-31T23:59:59Z","backfill":true}]}`,
	} {
		f.Add([]byte(body))
	}
	in := &Intake{users: userhash.New([]byte("fuzz-user-hash-key"))}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, ok := decodeRequest(body)
		if !ok {
			return
		}
		var valid []Event
		for i := range items {
			checkFieldErrors(t, i, items[i].errs)
			if items[i].errs == nil {
				valid = append(valid, items[i].ev)
			}
		}

		if raws, ok := rawEvents(body); !ok || len(raws) != len(items) {
			t.Fatalf("%d events decoded, but the body does not split into as many (ok %v, %d)", len(items), ok, len(raws))
		} else {
			for i, raw := range raws {
				ev, errs := DecodeEventJSON(raw)
				if errs == nil {
					errs = Validate(&ev, fuzzNow, fuzzSkew, fuzzLateness)
				}
				if !sameEvent(ev, items[i].ev) || !reflect.DeepEqual(errs, items[i].errs) {
					t.Fatalf("event %d decodes alone to %+v %v, in its batch to %+v %v", i, ev, errs, items[i].ev, items[i].errs)
				}
			}
		}

		if len(valid) == 0 {
			return
		}
		again, err := stdjson.Marshal(map[string]any{"events": valid})
		if err != nil {
			t.Fatalf("valid events do not encode: %v", err)
		}
		back, ok := decodeRequest(again)
		if !ok || len(back) != len(valid) {
			t.Fatalf("re-encoded body %s decodes to %d events (ok %v), want %d", again, len(back), ok, len(valid))
		}
		for i := range back {
			if back[i].errs != nil || !sameEvent(back[i].ev, valid[i]) {
				t.Fatalf("valid event %+v re-encoded as %s decodes to %+v %v", valid[i], again, back[i].ev, back[i].errs)
			}
		}

		for _, ev := range valid {
			if ev.Timestamp.Before(time.Unix(0, 0)) {
				t.Fatalf("valid event %+v is older than the ClickHouse sink stores (DateTime, from 1970)", ev)
			}
			e := ev
			in.normalise(&e, fuzzNow)
			b, err := e.Marshal()
			if err != nil {
				t.Fatalf("valid event %+v does not encode for Kafka: %v", ev, err)
			}
			k, err := DecodeEvent(b)
			if err != nil || !sameEvent(k, e) {
				t.Fatalf("Kafka value %s of a valid event decodes to %+v %v, want %+v", b, k, err, e)
			}
		}
	})
}
