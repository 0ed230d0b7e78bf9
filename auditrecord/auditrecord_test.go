package auditrecord

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
)

type inner struct {
	Name  string
	Value float64
}

type rec struct {
	ID       string             `json:"id"`
	At       time.Time          `json:"at"`
	Later    time.Time          `json:"later,omitzero"`
	Price    float64            `json:"price"`
	Count    uint32             `json:"count"`
	Flag     bool               `json:"flag"`
	Opt      string             `json:"opt,omitempty"`
	Features map[string]float64 `json:"features,omitempty"`
	Parts    []inner            `json:"parts"`
	Ptr      *inner             `json:"ptr"`
}

func sample() rec {
	return rec{
		ID: "q1", At: time.Date(2026, 12, 7, 20, 19, 18, 955268180, time.FixedZone("+01:00", 3600)),
		Price: 0.1 + 0.2, Count: 7, Flag: true,
		Features: map[string]float64{"b": 1.0 / 3, "a": math.MaxFloat64, "c": math.SmallestNonzeroFloat64},
		Parts:    []inner{{"x", -0.0031}, {"y", 1e-300}},
	}
}

func TestRoundTrip(t *testing.T) {
	want := sample()
	b, err := Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := FormatOf(b); err != nil || f != CBOR {
		t.Fatalf("FormatOf = %q, %v; want cbor", f, err)
	}
	var got rec
	if err := Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !got.At.Equal(want.At) || got.At.Format(time.RFC3339Nano) != want.At.Format(time.RFC3339Nano) {
		t.Errorf("at = %v, want %v (same instant, nanoseconds and offset)", got.At, want.At)
	}
	got.At, want.At = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if math.Float64bits(got.Price) != math.Float64bits(0.1+0.2) {
		t.Errorf("price %v is not the same float64", got.Price)
	}
	// One value, one byte string (the map is sorted).
	for range 20 {
		again, _ := Marshal(sample())
		if string(again) != string(b) {
			t.Fatal("two encodings of one value differ")
		}
	}
	// The zero Later is left out, like the JSON form's omitzero.
	var m map[string]any
	if err := decMode.Unmarshal(b[len(selfDescribe):], &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"later", "opt"} {
		if _, ok := m[k]; ok {
			t.Errorf("empty %q was written", k)
		}
	}
	if _, ok := m["price"]; !ok {
		t.Errorf("keys are not the json names: %v", m)
	}
}

// A JSON record of before decodes into the same value as its CBOR form.
func TestJSONRecordsStillDecode(t *testing.T) {
	want := sample()
	js, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := FormatOf(js); f != JSON {
		t.Fatalf("FormatOf(JSON) = %q", f)
	}
	var fromJSON, fromCBOR rec
	if err := Unmarshal(js, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := Unmarshal(cb, &fromCBOR); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromJSON, fromCBOR) {
		t.Errorf("JSON and CBOR decode differently:\n json %+v\n cbor %+v", fromJSON, fromCBOR)
	}
	// A reader that knows fewer fields takes its own and skips the rest.
	var few struct {
		ID    string  `json:"id"`
		Price float64 `json:"price"`
	}
	for _, b := range [][]byte{js, cb} {
		if err := Unmarshal(b, &few); err != nil || few.ID != "q1" || few.Price != want.Price {
			t.Errorf("partial decode: %+v, %v", few, err)
		}
	}
}

func TestBadRecords(t *testing.T) {
	good, _ := Marshal(sample())
	for _, tc := range []struct {
		name string
		rec  []byte
		want error
	}{
		{"empty", nil, ErrUnknownFormat},
		{"spaces", []byte("  "), ErrUnknownFormat},
		{"text", []byte("hello"), ErrUnknownFormat},
		{"bare CBOR without the tag", good[len(selfDescribe):], ErrUnknownFormat},
		{"truncated CBOR", good[:len(good)/2], nil},
		{"truncated JSON", []byte(`{"id":"q1","pri`), nil},
		{"CBOR of another shape", append(append([]byte{}, selfDescribe...), 0x83, 1, 2, 3), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r rec
			err := Unmarshal(tc.rec, &r)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// A record nested deeper than any decision is refused, not followed.
func TestDepthBounded(t *testing.T) {
	b := append([]byte{}, selfDescribe...)
	for range 100 {
		b = append(b, 0x81) // array of one
	}
	b = append(b, 0x01)
	var v any
	if err := Unmarshal(b, &v); err == nil {
		t.Fatal("100 levels decoded")
	}
}
