package replay

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/ingest"
)

func ptr(v float64) *float64 { return &v }

// readAll reads every event, collecting malformed lines.
func readAll(t *testing.T, rd *Reader) (events []ingest.Event, lines []int, bad []*LineError) {
	t.Helper()
	for {
		ev, line, err := rd.Next()
		if err == io.EOF {
			return
		}
		if le, ok := errors.AsType[*LineError](err); ok {
			if le.Line != line {
				t.Errorf("LineError at line %d, Next said %d", le.Line, line)
			}
			bad = append(bad, le)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		events, lines = append(events, ev), append(lines, line)
	}
}

func TestCSVAllColumns(t *testing.T) {
	// Columns in another order, snake_case and odd case, plus one unknown column.
	in := "type,region_id,Timestamp,event_id,userId,product_type,price,available_supply,signal,value,quoteId,experiment_id,experimentVariant,note\n" +
		"booking,berlin,2026-01-05T08:00:00.250Z,e-1,u-7,ride,12.5,,,,q-9,exp-1,treatment,hello\n" +
		"supply_update,paris,2026-01-05 08:00:01,e-2,,,,42,,,,,,\n" +
		"external_signal,nyc,1767600002,e-3,,,,,weather,0.75,,,,\n"
	rd, err := NewReader(strings.NewReader(in), CSV)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rd.Ignored(), []string{"note"}) {
		t.Errorf("ignored %v, want [note]", rd.Ignored())
	}
	events, lines, bad := readAll(t, rd)
	if len(bad) > 0 {
		t.Fatalf("malformed: %v", bad)
	}
	want := []ingest.Event{
		{EventID: "e-1", Type: "booking", RegionID: "berlin", Timestamp: time.Date(2026, 1, 5, 8, 0, 0, 250e6, time.UTC),
			UserID: "u-7", ProductType: "ride", Price: ptr(12.5), QuoteID: "q-9", Experiment: &ingest.Experiment{ID: "exp-1", Variant: "treatment"}},
		{EventID: "e-2", Type: "supply_update", RegionID: "paris", Timestamp: time.Date(2026, 1, 5, 8, 0, 1, 0, time.UTC), AvailableSupply: ptr(42)},
		{EventID: "e-3", Type: "external_signal", RegionID: "nyc", Timestamp: time.Unix(1767600002, 0).UTC(), Signal: "weather", Value: ptr(0.75)},
	}
	if !reflect.DeepEqual(events, want) {
		t.Errorf("events\n%+v\nwant\n%+v", events, want)
	}
	if !reflect.DeepEqual(lines, []int{2, 3, 4}) {
		t.Errorf("lines %v, want 2 3 4", lines)
	}
}

func TestCSVHeader(t *testing.T) {
	tests := []struct{ header, wantErr string }{
		{"timestamp,regionId,type", ""},
		{"\ufefftimestamp,regionId,type", ""}, // byte-order mark
		{"timestamp,type", "missing column(s) regionId"},
		{"regionId", "missing column(s) timestamp, type"},
		{"timestamp,regionId,type,region_id", `column "region_id" twice`},
		{"", "empty file"},
	}
	for _, tt := range tests {
		_, err := NewReader(strings.NewReader(tt.header), CSV)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("header %q: err %v, want %q", tt.header, err, tt.wantErr)
		}
	}
}

func TestCSVMalformedLines(t *testing.T) {
	in := strings.Join([]string{
		"timestamp,regionId,type,price",
		"2026-01-05T08:00:00Z,berlin,search,",           // 2 ok
		"yesterday,berlin,search,",                      // 3 bad timestamp
		"2026-01-05T08:00:01Z,berlin,booking,cheap",     // 4 bad number
		"2026-01-05T08:00:02Z,,search,",                 // 5 no region
		"2026-01-05T08:00:03Z,berlin,search",            // 6 too few fields
		`2026-01-05T08:00:04Z,ber"lin,search,`,          // 7 bare quote
		"2026-01-05T08:00:05Z,berlin,booking,NaN",       // 8 not a number
		`2026-01-05T08:00:06Z,"paris",search,`,          // 9 ok (quoted)
		"2026-01-05T08:00:07Z,berlin,booking,9.5,extra", // 10 too many fields
		"2026-01-05T08:00:08Z,london,search,",           // 11 ok
	}, "\n")
	rd, err := NewReader(strings.NewReader(in), CSV)
	if err != nil {
		t.Fatal(err)
	}
	events, lines, bad := readAll(t, rd)
	if !reflect.DeepEqual(lines, []int{2, 9, 11}) || len(events) != 3 || events[1].RegionID != "paris" {
		t.Errorf("good lines %v (%d events), want 2 9 11", lines, len(events))
	}
	wantBad := []struct {
		line int
		msg  string
	}{
		{3, "timestamp"}, {4, `price: "cheap" is not a number`}, {5, "missing regionId"}, {6, "3 fields, the header has 4"},
		{7, "bare"}, {8, `"NaN" is not a number`}, {10, "5 fields"},
	}
	if len(bad) != len(wantBad) {
		t.Fatalf("malformed %v, want %d", bad, len(wantBad))
	}
	for i, w := range wantBad {
		if bad[i].Line != w.line || !strings.Contains(bad[i].Error(), w.msg) || !strings.HasPrefix(bad[i].Error(), "line ") {
			t.Errorf("malformed %d: %v, want line %d with %q", i, bad[i], w.line, w.msg)
		}
	}
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestDerivedIDs(t *testing.T) {
	csvIn := "timestamp,regionId,type,eventId\n" +
		"2026-01-05T08:00:00Z,berlin,search,\n" +
		"2026-01-05T08:00:00Z,berlin,search,\n" + // the same content on another line
		"2026-01-05T08:00:00Z,berlin,search,given\n"
	jsonIn := `{"timestamp":"2026-01-05T08:00:00Z","regionId":"berlin","type":"search"}` + "\n" +
		`{"timestamp":"2026-01-05T08:00:00Z","regionId":"berlin","type":"search"}` + "\n" +
		`{"eventId":"given","timestamp":"2026-01-05T08:00:00Z","regionId":"berlin","type":"search"}` + "\n"
	for _, tt := range []struct {
		format Format
		in     string
	}{{CSV, csvIn}, {JSONL, jsonIn}} {
		t.Run(tt.format.String(), func(t *testing.T) {
			ids := func() []string {
				rd, err := NewReader(strings.NewReader(tt.in), tt.format)
				if err != nil {
					t.Fatal(err)
				}
				events, _, bad := readAll(t, rd)
				if len(bad) > 0 || len(events) != 3 {
					t.Fatalf("%d events, malformed %v", len(events), bad)
				}
				return []string{events[0].EventID, events[1].EventID, events[2].EventID}
			}
			first, second := ids(), ids()
			if !reflect.DeepEqual(first, second) {
				t.Errorf("ids differ between two reads: %v, %v", first, second)
			}
			if !hexID.MatchString(first[0]) || !hexID.MatchString(first[1]) {
				t.Errorf("derived ids %v, want 32 hex digits", first[:2])
			}
			if first[0] == first[1] {
				t.Errorf("equal lines at different places got the same id %s", first[0])
			}
			if first[2] != "given" {
				t.Errorf("explicit id replaced by %s", first[2])
			}
		})
	}
	// The id is sha256 of the line number, a newline and the content
	// (printf '2\nx' | sha256sum), its first 16 bytes in hex.
	if got := EventID(2, []byte("x")); got != "2f86eb61963f79c1f9f6558e74a75903" {
		t.Errorf("EventID(2, x) = %s", got)
	}
	if EventID(2, []byte("x")) != EventID(2, []byte("x")) || EventID(2, []byte("x")) == EventID(3, []byte("x")) || EventID(2, []byte("x")) == EventID(2, []byte("y")) {
		t.Error("EventID is not a function of line and content")
	}
}

func TestJSONL(t *testing.T) {
	in := strings.Join([]string{
		`{"eventId":"j-1","type":"booking","regionId":"sf","timestamp":"2026-01-05T08:00:00Z","userId":"u1","productType":"xl","price":20.5,"quoteId":"q","experiment":{"id":"e","variant":"a"},"userHash":"h","receivedAt":"2026-01-05T08:00:01Z"}`,
		``, // blank: skipped, still a line
		`{"eventId":"j-2","type":"supply_update","regionId":"sf","timestamp":"2026-01-05T08:00:01Z","availableSupply":12}`,
		`{"eventId":"j-3","type":"booking","regionId":"sf","timestamp":"2026-01-05T08:00:02Z","price":"cheap"}`,
		`{"eventId":"j-4","type":"search"`,
		`{"eventId":"j-5","regionId":"sf","timestamp":"2026-01-05T08:00:03Z"}`,
		`{"eventId":"j-6","type":"search","regionId":"sf","timestamp":"5 past 8"}`,
		`  {"eventId":"j-7","type":"external_signal","regionId":"sf","timestamp":"2026-01-05T08:00:04+01:00","signal":"traffic","value":0.5}  `,
	}, "\n") // no newline at the end
	rd, err := NewReader(strings.NewReader(in), JSONL)
	if err != nil {
		t.Fatal(err)
	}
	events, lines, bad := readAll(t, rd)
	if !reflect.DeepEqual(lines, []int{1, 3, 8}) {
		t.Errorf("good lines %v, want 1 3 8", lines)
	}
	if len(events) == 3 {
		e := events[0]
		if e.Price == nil || *e.Price != 20.5 || e.Experiment == nil || e.Experiment.Variant != "a" || e.UserID != "u1" || e.QuoteID != "q" {
			t.Errorf("booking decoded as %+v", e)
		}
		if events[1].AvailableSupply == nil || *events[1].AvailableSupply != 12 {
			t.Errorf("supply update decoded as %+v", events[1])
		}
		if !events[2].Timestamp.Equal(time.Date(2026, 1, 5, 7, 0, 4, 0, time.UTC)) || events[2].Signal != "traffic" {
			t.Errorf("signal decoded as %+v", events[2])
		}
	}
	wantBad := []struct {
		line int
		msg  string
	}{{4, "price: wrong type"}, {5, "invalid JSON"}, {6, "missing type"}, {7, "timestamp"}}
	if len(bad) != len(wantBad) {
		t.Fatalf("malformed %v, want %d", bad, len(wantBad))
	}
	for i, w := range wantBad {
		if bad[i].Line != w.line || !strings.Contains(bad[i].Error(), w.msg) {
			t.Errorf("malformed %d: %v, want line %d with %q", i, bad[i], w.line, w.msg)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	want := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"2026-01-05T08:00:00Z", "2026-01-05T09:00:00+01:00", "2026-01-05 08:00:00", "2026-01-05T08:00:00",
		"2026-01-05 08:00:00Z", "1767600000", "1767600000.0", "1767600000000",
	} {
		got, err := ParseTimestamp(s)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseTimestamp(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if got, _ := ParseTimestamp("1767600000.25"); !got.Equal(want.Add(250 * time.Millisecond)) {
		t.Errorf("fractional seconds: %v", got)
	}
	// Out of the years RFC 3339 writes in UTC: 1e20 ms would overflow int64.
	for _, s := range []string{"", "now", "-5", "2026-13-01T00:00:00Z", "Inf", "1e20", "253402300800000", "0000-01-01T00:30:00+01:00"} {
		if _, err := ParseTimestamp(s); err == nil {
			t.Errorf("ParseTimestamp(%q) accepted", s)
		}
	}
}

func sampleEvents() []ingest.Event {
	t0 := time.Date(2026, 1, 5, 8, 0, 0, 123456789, time.UTC)
	return []ingest.Event{
		{EventID: "w-1", Type: "search", RegionID: "berlin", Timestamp: t0, UserID: "user-1", ProductType: "ride",
			Experiment: &ingest.Experiment{ID: "exp", Variant: "control"}},
		{EventID: "w-2", Type: "booking", RegionID: "berlin", Timestamp: t0.Add(time.Second), UserID: "user-1", ProductType: "ride", Price: ptr(11.37), QuoteID: "q,1"},
		{EventID: "w-3", Type: "supply_update", RegionID: "paris", Timestamp: t0.Add(2 * time.Second), AvailableSupply: ptr(0)},
		{EventID: "w-4", Type: "external_signal", RegionID: "nyc", Timestamp: t0.Add(3 * time.Second), Signal: "event", Value: ptr(1)},
	}
}

func TestWriterRoundTrip(t *testing.T) {
	for _, f := range []Format{CSV, JSONL} {
		t.Run(f.String(), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range sampleEvents() {
				if err := w.Write(ev); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			rd, err := NewReader(&buf, f)
			if err != nil {
				t.Fatal(err)
			}
			got, _, bad := readAll(t, rd)
			if len(bad) > 0 || !reflect.DeepEqual(got, sampleEvents()) {
				t.Errorf("read back\n%+v\nwant\n%+v (malformed %v)", got, sampleEvents(), bad)
			}
		})
	}
}

func TestFilesAndCount(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"h.csv", "h.jsonl", "h.csv.gz", "h.ndjson.gz"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			w, closer, err := Create(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range sampleEvents() {
				if err := w.Write(ev); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := closer.Close(); err != nil {
				t.Fatal(err)
			}
			if n, err := CountRecords(path); err != nil || n != 4 {
				t.Errorf("CountRecords = %d, %v; want 4", n, err)
			}
			rd, c, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, _, _ := readAll(t, rd)
			if !reflect.DeepEqual(got, sampleEvents()) {
				t.Errorf("read back %+v", got)
			}
		})
	}
	if _, _, err := Open(filepath.Join(dir, "h.txt")); err == nil || !strings.Contains(err.Error(), "unknown history format") {
		t.Errorf("Open(.txt) err %v", err)
	}
}
