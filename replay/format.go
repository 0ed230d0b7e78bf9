package replay

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/surgeworks/surge/ingest"
)

// Format is the encoding of a history file.
type Format int

const (
	// CSV: a header line naming the columns (see Columns), then one event per
	// record.
	CSV Format = iota + 1
	// JSONL: JSON Lines, one ingest.Event object per line.
	JSONL
)

func (f Format) String() string {
	switch f {
	case CSV:
		return "csv"
	case JSONL:
		return "jsonl"
	}
	return "format(" + strconv.Itoa(int(f)) + ")"
}

// FormatOf tells the format from a file name: .csv is CSV; .jsonl, .ndjson
// and .json are JSON Lines; a further .gz means gzip-compressed.
func FormatOf(path string) (Format, bool, error) {
	name := strings.ToLower(filepath.Base(path))
	gz := strings.HasSuffix(name, ".gz")
	name = strings.TrimSuffix(name, ".gz")
	switch filepath.Ext(name) {
	case ".csv":
		return CSV, gz, nil
	case ".jsonl", ".ndjson", ".json":
		return JSONL, gz, nil
	}
	return 0, false, fmt.Errorf("%s: unknown history format: want .csv, .jsonl or .ndjson (optionally .gz)", path)
}

// Columns are the CSV column names, in the order Writer writes them.
// timestamp, regionId and type are required; the others are optional and
// may come in any order. Names match case-insensitively, ignoring "_" and
// "-" (region_id is regionId).
//
//	timestamp         event time: RFC 3339 ("2026-01-05T08:00:00Z", with
//	                  optional fractions and offset), "2026-01-05 08:00:00"
//	                  (UTC), or a number: Unix seconds (decimals allowed),
//	                  milliseconds when above 10^12
//	regionId, type    as in the event
//	eventId           the idempotency key; when empty, one is derived from
//	                  the line number and the line (see EventID)
//	userId, productType, signal, quoteId
//	price, availableSupply, value   numbers
//	experimentId, experimentVariant the event's experiment
//
// An empty cell is an absent field.
var Columns = [...]string{
	"timestamp", "regionId", "type", "eventId", "userId", "productType", "price",
	"availableSupply", "signal", "value", "quoteId", "experimentId", "experimentVariant",
}

const (
	colTimestamp = iota
	colRegion
	colType
	colEventID
	colUser
	colProduct
	colPrice
	colSupply
	colSignal
	colValue
	colQuote
	colExperiment
	colVariant
)

func normColumn(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.NewReplacer("_", "", "-", "", " ", "").Replace(s)
}

// LineError is a malformed line: the Reader skips it and goes on.
type LineError struct {
	Line int // 1-based; for CSV the line where the record starts
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// EventID is the id of an event recorded without one: the first 16 bytes,
// in hex, of sha256(line number, newline, content), where the content is
// the JSON line without surrounding blanks, or the CSV record's fields
// joined by the unit separator (0x1f). The same file replayed twice gives
// the same ids (the intake deduplicates them); two equal lines at different
// places give different ids.
func EventID(line int, content []byte) string {
	h := sha256.New()
	h.Write(strconv.AppendInt(nil, int64(line), 10))
	h.Write([]byte{'\n'})
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Reader reads the events of a history file one by one.
type Reader struct {
	format Format
	line   int // line of the last record

	// CSV
	cr      *csv.Reader
	cols    [len(Columns)]int // column index of each field, -1 when absent
	width   int
	ignored []string

	// JSON Lines
	br *bufio.Reader
}

// NewReader reads a history in the given format; for CSV it reads the
// header, which must name timestamp, regionId and type.
func NewReader(r io.Reader, f Format) (*Reader, error) {
	rd := &Reader{format: f}
	switch f {
	case JSONL:
		rd.br = bufio.NewReaderSize(r, 64<<10)
		return rd, nil
	case CSV:
	default:
		return nil, fmt.Errorf("history format %v: want csv or jsonl", f)
	}
	rd.cr = csv.NewReader(r)
	rd.cr.FieldsPerRecord = -1 // checked per record, so one bad line does not stop the rest
	rd.cr.ReuseRecord = true
	header, err := rd.cr.Read()
	if err == io.EOF {
		return nil, errors.New("csv: empty file, want a header line")
	}
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	rd.line = 1
	for i := range rd.cols {
		rd.cols[i] = -1
	}
	byName := map[string]int{}
	for i, c := range Columns {
		byName[normColumn(c)] = i
	}
	for i, name := range header {
		if i == 0 {
			name = strings.TrimPrefix(name, "\ufeff") // a byte-order mark
		}
		field, ok := byName[normColumn(name)]
		switch {
		case !ok:
			rd.ignored = append(rd.ignored, name)
		case rd.cols[field] >= 0:
			return nil, fmt.Errorf("csv header: column %q twice", name)
		default:
			rd.cols[field] = i
		}
	}
	var missing []string
	for _, f := range []int{colTimestamp, colRegion, colType} {
		if rd.cols[f] < 0 {
			missing = append(missing, Columns[f])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("csv header %q: missing column(s) %s", strings.Join(header, ","), strings.Join(missing, ", "))
	}
	rd.width = len(header)
	return rd, nil
}

// Ignored lists the CSV columns that name no event field (they are skipped).
func (r *Reader) Ignored() []string { return r.ignored }

// Next returns the next event and the line it starts on. A malformed line
// gives a *LineError, after which Next can be called again; the end of the
// input gives io.EOF; any other error is the input's and ends the reading.
// Blank lines are skipped.
func (r *Reader) Next() (ingest.Event, int, error) {
	if r.format == CSV {
		return r.nextCSV()
	}
	return r.nextJSON()
}

func (r *Reader) nextCSV() (ingest.Event, int, error) {
	rec, err := r.cr.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			r.line = pe.StartLine
			return ingest.Event{}, pe.StartLine, &LineError{Line: pe.StartLine, Err: pe.Err}
		}
		return ingest.Event{}, r.line, err // io.EOF or the input's error
	}
	r.line, _ = r.cr.FieldPos(0)
	if len(rec) != r.width {
		return ingest.Event{}, r.line, &LineError{Line: r.line, Err: fmt.Errorf("%d fields, the header has %d", len(rec), r.width)}
	}
	ev, err := r.decodeCSV(rec)
	if err != nil {
		return ingest.Event{}, r.line, &LineError{Line: r.line, Err: err}
	}
	if ev.EventID == "" {
		ev.EventID = EventID(r.line, []byte(strings.Join(rec, "\x1f")))
	}
	return ev, r.line, nil
}

func (r *Reader) decodeCSV(rec []string) (ingest.Event, error) {
	get := func(field int) string {
		if i := r.cols[field]; i >= 0 {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	num := func(field int) (*float64, error) {
		s := get(field)
		if s == "" {
			return nil, nil
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%s: %q is not a number", Columns[field], s)
		}
		return &v, nil
	}
	var (
		ev  ingest.Event
		err error
	)
	if ev.Timestamp, err = ParseTimestamp(get(colTimestamp)); err != nil {
		return ev, err
	}
	ev.RegionID, ev.Type = get(colRegion), get(colType)
	ev.EventID, ev.UserID, ev.ProductType = get(colEventID), get(colUser), get(colProduct)
	ev.Signal, ev.QuoteID = get(colSignal), get(colQuote)
	if ev.Price, err = num(colPrice); err != nil {
		return ev, err
	}
	if ev.AvailableSupply, err = num(colSupply); err != nil {
		return ev, err
	}
	if ev.Value, err = num(colValue); err != nil {
		return ev, err
	}
	if id, variant := get(colExperiment), get(colVariant); id != "" || variant != "" {
		ev.Experiment = &ingest.Experiment{ID: id, Variant: variant}
	}
	return ev, required(ev)
}

func (r *Reader) nextJSON() (ingest.Event, int, error) {
	for {
		raw, err := r.br.ReadBytes('\n')
		if len(raw) == 0 && err != nil {
			return ingest.Event{}, r.line, err // io.EOF or the input's error
		}
		r.line++
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			if err != nil {
				return ingest.Event{}, r.line, err
			}
			continue
		}
		var ev ingest.Event
		if jerr := json.Unmarshal(raw, &ev); jerr != nil {
			return ingest.Event{}, r.line, &LineError{Line: r.line, Err: jsonProblem(jerr)}
		}
		if verr := required(ev); verr != nil {
			return ingest.Event{}, r.line, &LineError{Line: r.line, Err: verr}
		}
		if ev.EventID == "" {
			ev.EventID = EventID(r.line, raw)
		}
		return ev, r.line, nil
	}
}

// jsonProblem words a decoding error without Go type names where it can.
func jsonProblem(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%s: wrong type (%s)", te.Field, te.Value)
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("timestamp: %q is not RFC 3339", pe.Value)
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

// required checks what a replay needs to send an event at all; the intake
// validates the rest.
func required(ev ingest.Event) error {
	var missing []string
	if ev.Timestamp.IsZero() {
		missing = append(missing, "timestamp")
	}
	if ev.RegionID == "" {
		missing = append(missing, "regionId")
	}
	if ev.Type == "" {
		missing = append(missing, "type")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// ParseTimestamp reads a CSV timestamp (see Columns).
func ParseTimestamp(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("timestamp: empty")
	}
	// A time is kept within the years RFC 3339 writes in UTC (0000 to
	// 9999), so that the event can be written and sent.
	inRange := func(t time.Time) (time.Time, error) {
		if y := t.Year(); y < 0 || y > 9999 {
			return time.Time{}, fmt.Errorf("timestamp: %q is out of range (years 0000 to 9999 in UTC)", s)
		}
		return t, nil
	}
	const maxMilli = 253402300799999 // 9999-12-31T23:59:59.999Z
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return inRange(t.UTC())
		}
	}
	if v, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) && v > 0 {
		if v > 1e12 {
			return inRange(time.UnixMilli(int64(min(v, maxMilli+1))).UTC()) // min: no int64 overflow
		}
		sec, frac := math.Modf(v)
		return inRange(time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC())
	}
	return time.Time{}, fmt.Errorf("timestamp: %q is neither RFC 3339 nor Unix seconds", s)
}

// Writer writes events in a history format that Reader reads back.
type Writer struct {
	format Format
	bw     *bufio.Writer
	cw     *csv.Writer
	rec    []string
	header bool
}

// NewWriter writes to w; call Flush at the end.
func NewWriter(w io.Writer, f Format) (*Writer, error) {
	if f != CSV && f != JSONL {
		return nil, fmt.Errorf("history format %v: want csv or jsonl", f)
	}
	wr := &Writer{format: f, bw: bufio.NewWriterSize(w, 256<<10)}
	if f == CSV {
		wr.cw = csv.NewWriter(wr.bw)
		wr.rec = make([]string, len(Columns))
	}
	return wr, nil
}

// Write appends one event.
func (w *Writer) Write(ev ingest.Event) error {
	if w.format == JSONL {
		b, err := json.Marshal(&ev)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", ev.EventID, err)
		}
		w.bw.Write(b)
		return w.bw.WriteByte('\n')
	}
	if !w.header {
		w.header = true
		if err := w.cw.Write(Columns[:]); err != nil {
			return err
		}
	}
	num := func(p *float64) string {
		if p == nil {
			return ""
		}
		return strconv.FormatFloat(*p, 'g', -1, 64)
	}
	rec := w.rec
	rec[colTimestamp] = ev.Timestamp.UTC().Format(time.RFC3339Nano)
	rec[colRegion], rec[colType], rec[colEventID] = ev.RegionID, ev.Type, ev.EventID
	rec[colUser], rec[colProduct] = ev.UserID, ev.ProductType
	rec[colPrice], rec[colSupply], rec[colValue] = num(ev.Price), num(ev.AvailableSupply), num(ev.Value)
	rec[colSignal], rec[colQuote] = ev.Signal, ev.QuoteID
	rec[colExperiment], rec[colVariant] = "", ""
	if ev.Experiment != nil {
		rec[colExperiment], rec[colVariant] = ev.Experiment.ID, ev.Experiment.Variant
	}
	return w.cw.Write(rec)
}

// Flush writes what is buffered.
func (w *Writer) Flush() error {
	if w.cw != nil {
		if !w.header { // an empty history still has its header
			w.header = true
			if err := w.cw.Write(Columns[:]); err != nil {
				return err
			}
		}
		w.cw.Flush()
		if err := w.cw.Error(); err != nil {
			return err
		}
	}
	return w.bw.Flush()
}

// Open opens a history file for reading, decompressing .gz. Close the
// returned closer when done.
func Open(path string) (*Reader, io.Closer, error) {
	f, gz, err := FormatOf(path)
	if err != nil {
		return nil, nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	var in io.Reader = file
	var closer io.Closer = file
	if gz {
		zr, err := gzip.NewReader(file)
		if err != nil {
			file.Close()
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		in = zr
	}
	rd, err := NewReader(in, f)
	if err != nil {
		file.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return rd, closer, nil
}

// CountRecords estimates the events of a history file for progress
// displays: its lines, less the CSV header. Blank lines and CSV records
// spanning lines make it slightly high.
func CountRecords(path string) (int64, error) {
	f, gz, err := FormatOf(path)
	if err != nil {
		return 0, err
	}
	file, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer file.Close()
	var in io.Reader = file
	if gz {
		zr, err := gzip.NewReader(file)
		if err != nil {
			return 0, err
		}
		in = zr
	}
	var n int64
	buf := make([]byte, 1<<20)
	last := byte('\n')
	for {
		k, err := in.Read(buf)
		if k > 0 {
			n += int64(bytes.Count(buf[:k], []byte{'\n'}))
			last = buf[k-1]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if last != '\n' {
		n++
	}
	if f == CSV && n > 0 {
		n--
	}
	return n, nil
}

// Create creates a history file for writing, in the format of its name
// (gzip-compressed for .gz). Flush the writer, then Close the closer.
func Create(path string) (*Writer, io.Closer, error) {
	f, gz, err := FormatOf(path)
	if err != nil {
		return nil, nil, err
	}
	file, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	var out io.Writer = file
	closer := io.Closer(file)
	if gz {
		zw := gzip.NewWriter(file)
		out = zw
		closer = closers{zw, file}
	}
	w, err := NewWriter(out, f)
	if err != nil {
		file.Close()
		return nil, nil, err
	}
	return w, closer, nil
}

// closers closes in order and returns the first error.
type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
