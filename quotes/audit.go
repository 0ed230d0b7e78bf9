package quotes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/encoding/json"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/auditrecord"
	"github.com/surgeworks/surge/pricing"
)

// Audit is the decision record of a quote, recomputed.
type Audit struct {
	QuoteID       string
	At            time.Time
	RegionID      string
	ProductType   string
	Currency      string
	Multiplier    float64 // as quoted
	Price         float64 // as quoted
	RuleVersion   uint32
	ModelVersion  string
	EngineVersion string // of the engine that priced it; "" before versions were recorded
	Degraded      bool
	// Source is where the record was found: "cache" (Redis, while the quote
	// is valid) or "clickhouse" (the audit trail).
	Source string
	// Record is the decision record, byte for byte as published (CBOR, or
	// JSON for records written before December 2026: auditrecord).
	Record []byte
	// Format is Record's encoding.
	Format auditrecord.Format
	// Recomputed is what this build's engine gives for the record's input.
	Recomputed pricing.Quote
	// Identical: the recomputed multiplier and price are bit for bit the
	// quoted ones.
	Identical bool

	decoded *decision
}

// RecordJSON is the record as JSON: Record itself when it is JSON, its
// decoded value in the same JSON form when it is CBOR (rendered only when
// asked for: `surge reprice --since` never needs it).
func (a Audit) RecordJSON() ([]byte, error) {
	if a.Format == auditrecord.JSON || a.decoded == nil {
		return a.Record, nil
	}
	js, err := json.Marshal(a.decoded)
	if err != nil {
		return nil, fmt.Errorf("render the decision record of %s as JSON: %w", a.QuoteID, err)
	}
	return js, nil
}

// Where an audit record was found.
const (
	AuditFromCache      = "cache"
	AuditFromClickHouse = "clickhouse"
)

// Reprice decodes a decision record and recomputes its price with
// pricing.Compute.
func Reprice(record []byte) (Audit, error) {
	var d decision
	if err := auditrecord.Unmarshal(record, &d); err != nil {
		return Audit{}, fmt.Errorf("decode the decision record: %w", err)
	}
	if d.QuoteID == "" {
		return Audit{}, errors.New("decode the decision record: no quoteId")
	}
	a := Audit{
		QuoteID: d.QuoteID, At: d.At, RegionID: d.RegionID, ProductType: d.ProductType, Currency: d.Currency,
		Multiplier: d.Multiplier, Price: d.Price, RuleVersion: d.RuleVersion, ModelVersion: d.ModelVersion,
		EngineVersion: d.EngineVersion, Degraded: d.Degraded, Record: record, decoded: &d,
	}
	a.Format, _ = auditrecord.FormatOf(record) // Unmarshal accepted it
	q, err := pricing.Compute(d.Input)
	if err != nil {
		return a, fmt.Errorf("recompute quote %s: %w", d.QuoteID, err)
	}
	a.Recomputed = q
	a.Identical = math.Float64bits(q.Multiplier) == math.Float64bits(d.Multiplier) &&
		math.Float64bits(q.Price) == math.Float64bits(d.Price)
	return a, nil
}

// Audit finds the decision record of a quote — in Redis while the quote is
// cached, then in the audit trail (Options.Decisions) — and recomputes it.
func (s *Service) Audit(ctx context.Context, quoteID string) (Audit, error) {
	if quoteID == "" || len(quoteID) > 64 {
		return Audit{}, &InputError{Field: "quoteId", Msg: "must be 1 to 64 characters", Err: ErrInvalidInput}
	}
	var record []byte
	source := AuditFromCache
	if s.rdb != nil {
		rctx, cancel := context.WithTimeout(ctx, 10*s.opts.RedisTimeout)
		b, err := s.rdb.Get(rctx, quoteKey(quoteID)).Bytes()
		cancel()
		if err == nil {
			record = b
		} else if !errors.Is(err, redis.Nil) {
			s.opts.Logger.Debug("audit: quote cache unavailable; reading the audit trail", "quote", quoteID, "err", err)
		}
	}
	if record == nil && s.opts.Decisions != nil {
		b, err := s.opts.Decisions.DecisionByQuote(ctx, quoteID)
		if err != nil && !errors.Is(err, analytics.ErrDecisionNotFound) {
			return Audit{}, fmt.Errorf("audit quote %s: %w", quoteID, err)
		}
		record, source = b, AuditFromClickHouse
	}
	if record == nil {
		return Audit{}, &InputError{Field: "quoteId", Msg: fmt.Sprintf("no decision record of quote %q (unknown, or not in the audit trail yet: it lands within seconds)", quoteID), Err: ErrQuoteNotFound}
	}
	a, err := Reprice(record)
	a.Source = source
	return a, err
}
