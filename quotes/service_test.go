package quotes

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
