// Package auditrecord owns the wire form of the audit trail's decision
// records: the bytes the quotes package writes to the quote cache, the
// spool and the pricing-decisions topic, and that the sink, quoteAudit and
// `surge reprice` read back.
//
// Records are written in CBOR (RFC 8949): a map keyed by the same names as
// the JSON form (the fields' json tags), times as RFC 3339 strings with
// nanoseconds, floats as their 8 bytes (no formatting, no rounding), behind
// the self-describe tag 55799 (bytes d9 d9 f7), which tells them apart from
// the JSON records written before December 2026, whose first byte is '{'.
// Unmarshal reads both, so a record of any age decodes into the same Go
// value; a new format would take another leading tag.
package auditrecord

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/segmentio/encoding/json"
)

// Format names a record's encoding.
type Format string

const (
	// CBOR: the records written now.
	CBOR Format = "cbor"
	// JSON: the records written before December 2026.
	JSON Format = "json"
)

// selfDescribe is CBOR tag 55799, "self-described CBOR" (RFC 8949 §3.4.6).
var selfDescribe = []byte{0xd9, 0xd9, 0xf7}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// Map keys (features) sorted, so that a record is one byte string for
	// one value; times keep their nanoseconds and their zone offset.
	encMode, err = cbor.EncOptions{Sort: cbor.SortBytewiseLexical, Time: cbor.TimeRFC3339Nano}.EncMode()
	if err != nil {
		panic(err)
	}
	// Limits well above any record, well below what hurts.
	decMode, err = cbor.DecOptions{MaxNestedLevels: 16, MaxArrayElements: 4096, MaxMapPairs: 4096}.DecMode()
	if err != nil {
		panic(err)
	}
}

// ErrUnknownFormat: the bytes are neither form.
var ErrUnknownFormat = errors.New("auditrecord: neither a CBOR nor a JSON record")

// Marshal encodes v as a CBOR record.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(2048)
	buf.Write(selfDescribe)
	if err := encMode.NewEncoder(&buf).Encode(v); err != nil {
		return nil, fmt.Errorf("auditrecord: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// FormatOf tells a record's encoding from its first bytes.
func FormatOf(rec []byte) (Format, error) {
	if bytes.HasPrefix(rec, selfDescribe) {
		return CBOR, nil
	}
	if bytes.HasPrefix(bytes.TrimLeft(rec, " \t\r\n"), []byte("{")) {
		return JSON, nil
	}
	return "", ErrUnknownFormat
}

// Unmarshal decodes a record of either form into v, which names its
// fields with json tags. Fields v does not have are skipped.
func Unmarshal(rec []byte, v any) error {
	f, err := FormatOf(rec)
	if err != nil {
		return err
	}
	if f == JSON {
		if err := json.Unmarshal(rec, v); err != nil {
			return fmt.Errorf("auditrecord: decode JSON record: %w", err)
		}
		return nil
	}
	if err := decMode.Unmarshal(rec[len(selfDescribe):], v); err != nil {
		return fmt.Errorf("auditrecord: decode CBOR record: %w", err)
	}
	return nil
}
