package analytics

import (
	"errors"
	"testing"
	"time"
)

func TestDecisionByQuote(t *testing.T) {
	ctx := ctxT(t)
	conn := migrated(t)
	b, err := conn.PrepareBatch(ctx, `INSERT INTO pricing_decisions (quote_id, at, region_id, record, kafka_topic, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]string{
		"01a21487-a3e8-7644-ab00-c7f01ac30b58": `{"quoteId":"01a21487-a3e8-7644-ab00-c7f01ac30b58","price":10,"note":"é ✓"}`,
		"01a21487-a3e8-7644-ab00-c7f01ac30b59": `{"quoteId":"01a21487-a3e8-7644-ab00-c7f01ac30b59","price":11}`,
	}
	at := time.Date(2026, 11, 25, 21, 7, 3, 0, time.UTC)
	var off uint64
	for id, rec := range records {
		if err := b.Append(id, at, "berlin", rec, "pricing-decisions", uint32(0), off); err != nil {
			t.Fatal(err)
		}
		off++
		at = at.AddDate(0, 1, 0) // another partition
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	d := NewDecisions(conn)
	for id, rec := range records {
		got, err := d.DecisionByQuote(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != rec {
			t.Errorf("DecisionByQuote(%s) = %s, want %s", id, got, rec)
		}
	}
	for _, id := range []string{"01a21487-a3e8-7644-ab00-c7f01ac30b50", ""} {
		if _, err := d.DecisionByQuote(ctx, id); !errors.Is(err, ErrDecisionNotFound) {
			t.Errorf("DecisionByQuote(%q) err = %v, want ErrDecisionNotFound", id, err)
		}
	}
}
