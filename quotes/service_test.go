package quotes

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/rules"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type fakeRules struct{ rule pricing.Rule }

func (f fakeRules) Get(region, product string, _ time.Time) (pricing.Rule, bool) {
	return f.rule, region == f.rule.RegionID && product == f.rule.ProductType
}

func (f fakeRules) Region(id string) (rules.Region, bool) {
	return rules.Region{ID: id, Products: []string{f.rule.ProductType}}, id == f.rule.RegionID
}

var berlinRide = pricing.Rule{
	RegionID: "berlin", RegionName: "Berlin", ProductType: "ride", Currency: "EUR", Version: 3,
	BasePrice: 8, MinMultiplier: 1, MaxMultiplier: 3, MaxStepPerMinute: 0.5,
	Threshold: 1, Sensitivity: 0.5, MultiplierStep: 0.05, PriceStep: 0.1,
}

// TestQuoteLookupAcrossReplicas: a quote given by one replica is explained
// by another through Redis, and expires with its validity.
func TestQuoteLookupAcrossReplicas(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	newReplica := func() *Service {
		s := New(fakeRules{berlinRide}, rdb, inference.NewForecaster(nil, nil, inference.ForecasterOptions{}), nil, Options{Validity: time.Second})
		go s.Run(ctx)
		return s
	}
	a, b := newReplica(), newReplica()
	q, err := a.Quote(ctx, Request{RegionID: "berlin", ProductType: "ride", UserID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if q.Forecast.Source != inference.SourceStatic || q.Price != 8 || !q.Degraded || q.RuleVersion != 3 {
		t.Fatalf("quote without model or features: %+v", q)
	}
	var got Quote
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err = b.Lookup(ctx, q.ID)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("replica b: %v", err)
	}
	if !reflect.DeepEqual(got.Factors, q.Factors) || got.Price != q.Price || got.Multiplier != q.Multiplier || !got.ValidUntil.Equal(q.ValidUntil) {
		t.Fatalf("replica b read %+v, want %+v", got, q)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := b.Lookup(ctx, q.ID); !errors.Is(err, ErrQuoteNotFound) {
		t.Fatalf("after validity: %v, want ErrQuoteNotFound", err)
	}
}

func TestQuoteErrors(t *testing.T) {
	s := New(fakeRules{berlinRide}, nil, inference.NewForecaster(nil, nil, inference.ForecasterOptions{}), nil, Options{})
	cases := []struct {
		req   Request
		want  error
		field string
	}{
		{Request{RegionID: "atlantis", ProductType: "ride"}, ErrUnknownRegion, "regionId"},
		{Request{RegionID: "berlin", ProductType: "boat"}, ErrUnknownProduct, "productType"},
		{Request{RegionID: "", ProductType: "ride"}, ErrInvalidInput, "regionId"},
	}
	for _, c := range cases {
		_, err := s.Quote(context.Background(), c.req)
		var in *InputError
		if !errors.Is(err, c.want) || !errors.As(err, &in) || in.Field != c.field {
			t.Errorf("%+v: %v, want %v on %s", c.req, err, c.want, c.field)
		}
	}
	// No Redis at all: still a price, degraded, saying why.
	q, err := s.Quote(context.Background(), Request{RegionID: "berlin", ProductType: "ride"})
	if err != nil || !q.Degraded || len(q.Warnings) < 2 {
		t.Fatalf("without Redis: %+v %v", q, err)
	}
}

// constPredictor predicts the same demand for every row.
type constPredictor struct{ v *float32 }

func (p constPredictor) Predict(_ context.Context, rows [][]float32) ([]float32, error) {
	out := make([]float32, len(rows))
	for i := range out {
		out[i] = *p.v
	}
	return out, nil
}
func (constPredictor) Close() error { return nil }

// TestSurgeChangesArePublished: a quoted multiplier that moves is published
// on the region's channel; one that stays is not.
func TestSurgeChangesArePublished(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := rdb.Subscribe(ctx, SurgeChannel("berlin"))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // subscription confirmed
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	if err := features.NewStore(rdb, time.Hour).Write(ctx, "berlin", features.Online{features.Supply: 1}, now); err != nil {
		t.Fatal(err)
	}
	demand := float32(150) // 10 requests/min against 1 unit: far above the threshold
	fc := inference.NewForecaster(nil, nil, inference.ForecasterOptions{})
	fc.SetModel(&inference.Model{Name: "demand", Version: "v1", Predictor: constPredictor{&demand}})
	s := New(fakeRules{berlinRide}, rdb, fc, nil, Options{Now: func() time.Time { return now }, SnapshotTTL: -1})
	go s.Run(ctx)
	quote := func() Quote {
		t.Helper()
		q, err := s.Quote(ctx, Request{RegionID: "berlin", ProductType: "ride"})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	// First quote: from 1.0 with one minute of allowance (0.5) → 1.5; the
	// second, at the same instant, stays at 1.5: nothing to publish yet.
	if q := quote(); q.Multiplier != 1.5 || q.Forecast.Source != inference.SourceModel {
		t.Fatalf("first quote %v from %s, want 1.5 from MODEL", q.Multiplier, q.Forecast.Source)
	}
	quote()
	demand = 0 // demand vanishes; a minute later the multiplier is back to 1.0
	now = now.Add(time.Minute)
	q := quote()
	if q.Multiplier != 1 {
		t.Fatalf("third quote %v, want 1.0", q.Multiplier)
	}
	msgCtx, cancelMsg := context.WithTimeout(ctx, 5*time.Second)
	defer cancelMsg()
	msg, err := sub.ReceiveMessage(msgCtx)
	if err != nil {
		t.Fatal(err)
	}
	var ch SurgeChange
	if err := json.Unmarshal([]byte(msg.Payload), &ch); err != nil {
		t.Fatal(err)
	}
	if ch.RegionID != "berlin" || ch.ProductType != "ride" || ch.Previous != 1.5 || ch.Multiplier != 1 || ch.QuoteID != q.ID {
		t.Fatalf("change %+v", ch)
	}
	// What moved it and the figures behind it travel with the change.
	if ch.Demand == nil || *ch.Demand != 0 || ch.Supply == nil || *ch.Supply != 1 || !strings.HasPrefix(ch.Reason, "demand_supply: ") {
		t.Fatalf("change demand %v supply %v reason %q", ch.Demand, ch.Supply, ch.Reason)
	}
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		factors []pricing.Factor
		want    string
	}{
		{nil, "base: no factor moved the multiplier"},
		{[]pricing.Factor{{Name: "base", Contribution: 1}}, "base: no factor moved the multiplier"},
		{[]pricing.Factor{{Name: "base", Contribution: 1}, {Name: "demand_supply", Description: "d"}, {Name: "rounding", Description: "r"}}, "demand_supply: d"},
		{[]pricing.Factor{{Name: "base", Contribution: 1}, {Name: "demand_supply", Contribution: 0.5, Description: "d"},
			{Name: "smoothing", Contribution: -0.6, Description: "s"}}, "smoothing: s"},
		{[]pricing.Factor{{Name: "base", Contribution: 1}, {Name: "demand_supply", Contribution: 0.5, Description: "d"},
			{Name: "regulatory_cap", Contribution: -0.2, Description: "c"}}, "demand_supply: d"},
	} {
		if got := Reason(tc.factors); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.factors, got, tc.want)
		}
	}
}
