package replay

import (
	"bytes"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/ingest"
)

// fuzzRead reads a whole history the way Run does and checks, beyond not
// panicking:
//   - Next ends with io.EOF, after at most one call per line and one more;
//     every other answer is an event or a *LineError (an in-memory input
//     has no read errors);
//   - a *LineError names the line Next returned, within the input, and the
//     lines of successive answers increase;
//   - an event has what a replay needs to send it: an eventId, a timestamp
//     (in UTC from CSV), a region and a type; CSV cells come trimmed and
//     numbers finite;
//   - the events read, written again by a Writer in the same format, read
//     back to the same events (the timestamp compared as an instant).
func fuzzRead(t *testing.T, data []byte, f Format) {
	rd, err := NewReader(bytes.NewReader(data), f)
	if err != nil {
		if f == JSONL {
			t.Fatalf("NewReader(JSONL): %v", err)
		}
		return // a CSV header that names no timestamp, regionId and type
	}
	lines := bytes.Count(data, []byte{'\n'}) + 1
	var events []ingest.Event
	last := 0
	if f == CSV {
		last = 1 // the header
	}
	for calls := 0; ; calls++ {
		if calls > lines+1 {
			t.Fatalf("Next called %d times on %d lines without io.EOF", calls, lines)
		}
		ev, line, err := rd.Next()
		if err == io.EOF {
			break
		}
		if le, ok := errors.AsType[*LineError](err); ok {
			if le.Line != line || line <= last || line > lines || le.Err == nil || !strings.HasPrefix(le.Error(), "line ") {
				t.Fatalf("LineError %v at line %d (previous answer at %d, %d lines)", le, line, last, lines)
			}
			last = line
			continue
		}
		if err != nil {
			t.Fatalf("Next at line %d: %v, want an event, a *LineError or io.EOF", line, err)
		}
		if line <= last || line > lines {
			t.Fatalf("event at line %d (previous answer at %d, %d lines)", line, last, lines)
		}
		last = line
		if ev.EventID == "" || ev.Timestamp.IsZero() || ev.RegionID == "" || ev.Type == "" {
			t.Fatalf("line %d: event %+v lacks what a replay sends", line, ev)
		}
		if f == CSV {
			checkCSVEvent(t, line, ev)
		}
		events = append(events, ev)
	}

	var buf bytes.Buffer
	w, err := NewWriter(&buf, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if err := w.Write(ev); err != nil {
			t.Fatalf("event %+v read, but does not write: %v", ev, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	written := buf.String()
	rd, err = NewReader(&buf, f)
	if err != nil {
		t.Fatalf("written history %q does not read: %v", written, err)
	}
	for i, want := range events {
		got, _, err := rd.Next()
		if err != nil || !sameReplayEvent(got, want) {
			t.Fatalf("event %d %+v written as %q reads back as %+v, %v", i, want, written, got, err)
		}
	}
	if _, _, err := rd.Next(); err != io.EOF {
		t.Fatalf("written history has more than its %d events: %v", len(events), err)
	}
}

func checkCSVEvent(t *testing.T, line int, ev ingest.Event) {
	t.Helper()
	if ev.Timestamp.Location() != time.UTC {
		t.Fatalf("line %d: timestamp %v not in UTC", line, ev.Timestamp)
	}
	fields := []string{ev.EventID, ev.Type, ev.RegionID, ev.UserID, ev.ProductType, ev.Signal, ev.QuoteID}
	if ev.Experiment != nil {
		fields = append(fields, ev.Experiment.ID, ev.Experiment.Variant)
	}
	for _, s := range fields {
		if s != strings.TrimSpace(s) {
			t.Fatalf("line %d: cell %q not trimmed", line, s)
		}
	}
	for _, p := range []*float64{ev.Price, ev.AvailableSupply, ev.Value} {
		if p != nil && (math.IsNaN(*p) || math.IsInf(*p, 0)) {
			t.Fatalf("line %d: number %v in %+v", line, *p, ev)
		}
	}
}

// sameReplayEvent compares events with their times as instants (a JSON
// time keeps its offset's location).
func sameReplayEvent(a, b ingest.Event) bool {
	if !a.Timestamp.Equal(b.Timestamp) || !a.ReceivedAt.Equal(b.ReceivedAt) {
		return false
	}
	a.Timestamp, b.Timestamp, a.ReceivedAt, b.ReceivedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func FuzzReadCSV(f *testing.F) {
	for _, s := range []string{
		// surge simulate --history, and the real departures (../shared/data).
		"timestamp,regionId,type,eventId,userId,productType,price,availableSupply,signal,value,quoteId,experimentId,experimentVariant\n" +
			"2026-01-05T08:00:00.123456789Z,berlin,search,w-1,user-1,ride,,,,,,exp,control\n" +
			"2026-01-05T08:00:01.123456789Z,berlin,booking,w-2,user-1,ride,11.37,,,,\"q,1\",,\n" +
			"2026-01-05T08:00:02.123456789Z,paris,supply_update,w-3,,,,0,,,,,\n" +
			"2026-01-05T08:00:03.123456789Z,nyc,external_signal,w-4,,,,,event,1,,,\n",
		"timestamp,regionId,type\n2001-01-01T00:01:00Z,ANC,search\n2001-01-01T00:01:00Z,MCI,search\n2001-01-01T00:04:00Z,OGG,search\n",
		"type,region_id,Timestamp,event_id,userId,product_type,price,available_supply,signal,value,quoteId,experiment_id,experimentVariant,note\n" +
			"booking,berlin,2026-01-05T08:00:00.250Z,e-1,u-7,ride,12.5,,,,q-9,exp-1,treatment,hello\n" +
			"supply_update,paris,2026-01-05 08:00:01,e-2,,,,42,,,,,,\n" +
			"external_signal,nyc,1767600002,e-3,,,,,weather,0.75,,,,\n",
		"\ufefftimestamp,regionId,type,price\n2026-01-05T08:00:00Z,berlin,search,\nyesterday,berlin,search,\n" +
			"2026-01-05T08:00:01Z,berlin,booking,cheap\n2026-01-05T08:00:03Z,berlin,search\n" +
			"2026-01-05T08:00:04Z,ber\"lin,search,\n2026-01-05T08:00:05Z,berlin,booking,NaN\n" +
			"2026-01-05T08:00:06Z,\"paris\",search,\n\r\n2026-01-05T08:00:07Z,berlin,booking,9.5,extra\n",
		"timestamp,regionId,type\n1767600000000,r,search\n1e20,r,search\n0.5,r,search\n\"2026-01-05T08:00:00Z\n\",r,search",
		"timestamp,type\n", "", "timestamp,regionId,type,region_id\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzRead(t, data, CSV) })
}

func FuzzReadJSONL(f *testing.F) {
	for _, s := range []string{
		`{"eventId":"w-1","type":"search","regionId":"berlin","timestamp":"2026-01-05T08:00:00.123456789Z","userId":"user-1","productType":"ride","experiment":{"id":"exp","variant":"control"}}` + "\n" +
			`{"eventId":"w-2","type":"booking","regionId":"berlin","timestamp":"2026-01-05T08:00:01.123456789Z","userId":"user-1","productType":"ride","price":11.37,"quoteId":"q,1"}` + "\n" +
			`{"eventId":"w-3","type":"supply_update","regionId":"paris","timestamp":"2026-01-05T08:00:02.123456789Z","availableSupply":0}` + "\n" +
			`{"eventId":"w-4","type":"external_signal","regionId":"nyc","timestamp":"2026-01-05T08:00:03.123456789Z","signal":"event","value":1}` + "\n",
		`{"eventId":"j-1","type":"booking","regionId":"sf","timestamp":"2026-01-05T08:00:00Z","userId":"u1","productType":"xl","price":20.5,"quoteId":"q","experiment":{"id":"e","variant":"a"},"userHash":"h","receivedAt":"2026-01-05T08:00:01Z"}` +
			"\n\n" + `{"eventId":"j-3","type":"booking","regionId":"sf","timestamp":"2026-01-05T08:00:02Z","price":"cheap"}` +
			"\n" + `{"eventId":"j-4","type":"search"` +
			"\n" + `{"eventId":"j-5","regionId":"sf","timestamp":"2026-01-05T08:00:03Z"}` +
			"\n" + `{"eventId":"j-6","type":"search","regionId":"sf","timestamp":"5 past 8"}` +
			"\n" + `  {"eventId":"j-7","type":"external_signal","regionId":"sf","timestamp":"2026-01-05T08:00:04+01:00","signal":"traffic","value":0.5,"backfill":true}  `,
		`{"timestamp":"2001-01-01T00:01:00Z","regionId":"ANC","type":"search"}` + "\r\n" + `{"timestamp":"2001-01-01T00:01:00Z","regionId":"MCI","type":"search"}`,
		"null\n[]\n\"x\"\n{}\n", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzRead(t, data, JSONL) })
}
