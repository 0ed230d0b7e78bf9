package quotes

import (
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/encoding/json"

	"github.com/surgeworks/surge/auditrecord"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/pricing"
)

// recorder is an audit publisher that keeps the records, or refuses them
// all when full.
type recorder struct {
	mu   sync.Mutex
	recs [][]byte
	full bool
}

func (r *recorder) Publish(topic, _ string, v []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.full || topic != AuditTopic {
		return false
	}
	r.recs = append(r.recs, v)
	return true
}

// TestEveryQuoteRecomputes: thousands of quotes — demand moving, supply
// moving, time passing so that smoothing and its state matter — each
// recompute bit for bit from its audit record alone, which names the
// engine version; a non-finite forecast or supply never reaches the
// engine or the record.
func TestEveryQuoteRecomputes(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	demand := float32(10)
	fc := inference.NewForecaster(nil, nil, inference.ForecasterOptions{})
	fc.SetModel(&inference.Model{Name: "demand", Version: "v1", Predictor: constPredictor{&demand}})
	rec := &recorder{}
	s := New(fakeRules{berlinRide}, rdb, fc, rec, Options{Now: func() time.Time { return now }, SnapshotTTL: -1})
	store := features.NewStore(rdb, time.Hour)
	quoted := map[string]Quote{}
	for i := range 3000 {
		now = now.Add(time.Duration(1+i%7) * time.Second)
		demand = float32(math.Abs(math.Sin(float64(i)/40)) * 400)
		supply := float64(1 + i%23)
		switch i % 500 {
		case 7:
			demand = float32(math.NaN())
		case 9:
			supply = math.Inf(1)
		}
		if err := store.Write(ctx, "berlin", features.Online{features.Supply: supply}, now); err != nil {
			t.Fatal(err)
		}
		q, err := s.Quote(ctx, Request{RegionID: "berlin", ProductType: "ride", UserID: "u"})
		if err != nil {
			t.Fatalf("quote %d: %v", i, err)
		}
		if i%500 == 7 || i%500 == 9 {
			if !q.Degraded || !strings.Contains(strings.Join(q.Warnings, ";"), "not a number") {
				t.Fatalf("quote %d with a non-finite input: degraded %v, warnings %q", i, q.Degraded, q.Warnings)
			}
		}
		quoted[q.ID] = q
	}
	if len(rec.recs) != len(quoted) {
		t.Fatalf("%d audit records for %d quotes", len(rec.recs), len(quoted))
	}
	multipliers := map[float64]bool{}
	for _, r := range rec.recs {
		a, err := Reprice(r)
		if err != nil {
			t.Fatal(err)
		}
		q := quoted[a.QuoteID]
		if !a.Identical || a.Multiplier != q.Multiplier || a.Price != q.Price || a.EngineVersion != pricing.EngineVersion {
			t.Fatalf("quote %s: recomputed %v/%v from its record, quoted %v/%v (identical %v, engine %q)",
				a.QuoteID, a.Recomputed.Multiplier, a.Recomputed.Price, q.Multiplier, q.Price, a.Identical, a.EngineVersion)
		}
		multipliers[q.Multiplier] = true
	}
	if len(multipliers) < 10 {
		t.Fatalf("only %d distinct multipliers: the test does not exercise the engine", len(multipliers))
	}
}

// TestQuoteRefusedWhenUnauditable: when the audit publisher cannot take
// the record (its buffer full while Kafka is away), no quote is given.
func TestQuoteRefusedWhenUnauditable(t *testing.T) {
	demand := float32(10)
	fc := inference.NewForecaster(nil, nil, inference.ForecasterOptions{})
	fc.SetModel(&inference.Model{Name: "demand", Version: "v1", Predictor: constPredictor{&demand}})
	rec := &recorder{full: true}
	s := New(fakeRules{berlinRide}, nil, fc, rec, Options{})
	if _, err := s.Quote(context.Background(), Request{RegionID: "berlin", ProductType: "ride"}); !errors.Is(err, ErrAuditUnavailable) {
		t.Fatalf("quote with a full audit buffer: %v, want ErrAuditUnavailable", err)
	}
	rec.full = false
	if _, err := s.Quote(context.Background(), Request{RegionID: "berlin", ProductType: "ride"}); err != nil {
		t.Fatalf("once the buffer has room: %v", err)
	}
}

// TestRecordFormats: a record written before December 2026 (JSON, from a
// running server of then: testdata/decision-v1.json) still reprices, and
// the same decision in today's CBOR form decodes to the same value, whose
// JSON rendering is the old record byte for byte.
func TestRecordFormats(t *testing.T) {
	old, rec := decisionFixture(t)
	a, err := Reprice(old)
	if err != nil {
		t.Fatal(err)
	}
	aj, err := a.RecordJSON()
	if err != nil {
		t.Fatal(err)
	}
	if a.Format != auditrecord.JSON || string(aj) != string(old) || !a.Identical || a.Multiplier != 1.1 || a.Price != 8.8 {
		t.Fatalf("JSON record: format %q, identical %v, %v × → %v", a.Format, a.Identical, a.Multiplier, a.Price)
	}
	if len(rec) >= len(old) {
		t.Errorf("CBOR record %d bytes, JSON %d", len(rec), len(old))
	}
	b, err := Reprice(rec)
	if err != nil {
		t.Fatal(err)
	}
	if b.Format != auditrecord.CBOR || !b.Identical || b.QuoteID != a.QuoteID || !b.At.Equal(a.At) {
		t.Fatalf("CBOR record: format %q, identical %v, quote %s at %s", b.Format, b.Identical, b.QuoteID, b.At)
	}
	bj, err := b.RecordJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(bj) != string(old) {
		t.Errorf("the CBOR record rendered as JSON differs from the JSON record:\n got %s\nwant %s", bj, old)
	}
	if string(b.Record) != string(rec) {
		t.Error("Audit.Record is not the record as written")
	}
}

// BenchmarkDecisionRecord: encoding and decoding the decision record of a
// quote (testdata/decision-v1.json) in the CBOR form written now and the
// JSON form written before.
func BenchmarkDecisionRecord(b *testing.B) {
	old, cb := decisionFixture(b)
	var d decision
	if err := auditrecord.Unmarshal(old, &d); err != nil {
		b.Fatal(err)
	}
	encoders := []struct {
		name string
		enc  func(any) ([]byte, error)
		rec  []byte
	}{{"cbor", auditrecord.Marshal, cb}, {"json", json.Marshal, old}}
	for _, e := range encoders {
		b.Run("encode/"+e.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.enc(d); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(e.rec)), "bytes")
		})
	}
	for _, e := range encoders {
		b.Run("decode/"+e.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var x decision
				if err := auditrecord.Unmarshal(e.rec, &x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// decisionFixture is the JSON record of testdata/decision-v1.json and the
// same decision in today's CBOR form.
func decisionFixture(tb testing.TB) (old, cbor []byte) {
	tb.Helper()
	old, err := os.ReadFile("testdata/decision-v1.json")
	if err != nil {
		tb.Fatal(err)
	}
	var d decision
	if err := auditrecord.Unmarshal(old, &d); err != nil {
		tb.Fatal(err)
	}
	if cbor, err = auditrecord.Marshal(d); err != nil {
		tb.Fatal(err)
	}
	return old, cbor
}
