package auditrecord

import (
	"bytes"
	"testing"

	"github.com/segmentio/encoding/json"
)

// FuzzUnmarshal: any bytes (records come back from Kafka, Redis and
// ClickHouse) decode or fail without panicking, and a value decoded from
// either form is encoded again into one byte string that decodes back to it.
func FuzzUnmarshal(f *testing.F) {
	cb, _ := Marshal(sample())
	js, _ := json.Marshal(sample())
	for _, seed := range [][]byte{cb, js, nil, []byte("{}"), selfDescribe, cb[:len(cb)/3]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v rec
		if err := Unmarshal(b, &v); err != nil {
			return
		}
		once, err := Marshal(v)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", v, err)
		}
		var w rec
		if err := Unmarshal(once, &w); err != nil {
			t.Fatalf("own encoding %x does not decode: %v", once, err)
		}
		twice, err := Marshal(w)
		if err != nil || !bytes.Equal(once, twice) {
			t.Fatalf("encoding is not stable: %x then %x (%v)", once, twice, err)
		}
	})
}
