package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/intakeclient"
)

// ShopperOptions configures Shoppers. Zero values take the defaults.
type ShopperOptions struct {
	// APIURL is the service's base URL (default http://127.0.0.1:8000):
	// prices come from APIURL/graphql, bookings go to APIURL/v1/book.
	APIURL string
	// APIKey is sent in X-Api-Key when not empty.
	APIKey string
	// HTTPClient sends the price queries and bookings (default a client
	// with a 10 s timeout).
	HTTPClient *http.Client
	// Events sends the cancellations to the intake; nil sends none.
	Events EventSender
	// Regions and Products are where shoppers shop (defaults: the demo
	// regions, "ride").
	Regions, Products []string
	// Users is the size of the shopper pool (default 5,000). Each shopper
	// has a propensity to book that stays with them (lognormal, mean 1),
	// so that what they did before an experiment predicts what they do in
	// it, as with real customers (what CUPED uses).
	Users int
	// Rate is shopping sessions per second (default 20): each asks for a
	// price with its userId and may book it.
	Rate float64
	// Concurrency bounds the sessions in flight (default 8).
	Concurrency int
	// Sessions ends the run after this many sessions (0: when the context
	// ends or the duration passes).
	Sessions int64
	// Conversion is the probability that an average shopper books at the
	// reference price (default 0.10).
	Conversion float64
	// Elasticity of the booking probability to the price (default 1):
	// p = Conversion × propensity × (price / reference)^-Elasticity, where
	// the reference is the recent mean price of the region and product. A
	// negative value makes shoppers blind to the price.
	Elasticity float64
	// Lift multiplies the booking probability of the shoppers a variant
	// prices, by variant name: {"cheaper": 0.15} makes them book 15 % more
	// on top of what its price does. It is the simulator's ground truth,
	// which the experiment results should find.
	Lift map[string]float64
	// CancelRate is the probability that a booking is cancelled (default
	// 0.05; negative: none).
	CancelRate float64
	// Seed makes the shopper pool and their choices reproducible, and
	// names the users ("s<seed>-user-<i>"), so that a second run with the
	// same seed brings the same shoppers back. Booking and cancel ids are
	// unique per run.
	Seed uint64
	// Logger receives failed requests (default slog.Default()).
	Logger *slog.Logger
}

// EventSender sends events to the intake; intakeclient.Client implements it.
type EventSender interface {
	Send(ctx context.Context, events []ingest.Event) (intakeclient.BatchResult, error)
}

func (o *ShopperOptions) defaults() {
	if o.APIURL == "" {
		o.APIURL = "http://127.0.0.1:8000"
	}
	o.APIURL = strings.TrimRight(o.APIURL, "/")
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if len(o.Regions) == 0 {
		for _, r := range Regions(5) {
			o.Regions = append(o.Regions, r.ID)
		}
	}
	if len(o.Products) == 0 {
		o.Products = []string{"ride"}
	}
	if o.Users <= 0 {
		o.Users = 5000
	}
	if o.Rate <= 0 {
		o.Rate = 20
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Conversion <= 0 {
		o.Conversion = 0.10
	}
	switch {
	case o.Elasticity == 0:
		o.Elasticity = 1
	case o.Elasticity < 0:
		o.Elasticity = 0
	}
	switch {
	case o.CancelRate == 0:
		o.CancelRate = 0.05
	case o.CancelRate < 0:
		o.CancelRate = 0
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// VariantTally is what the shoppers of one experiment variant did; the key
// "" is the shoppers no experiment enrolled.
type VariantTally struct {
	Quotes, Bookings, Cancels int64
	Revenue                   float64
}

// ShopperStats are the totals of a Shoppers run.
type ShopperStats struct {
	Sessions, Errors int64
	// Variants by "experiment/variant" of the quote's first experiment.
	Variants map[string]VariantTally
}

// Shoppers simulate customers of the marketplace: they ask for prices with
// their user id (so experiments enrol them), book some of them through
// POST /v1/book, and cancel a few bookings through the intake. How likely
// they book depends on the price they are shown, on themselves, and on the
// configured lift of the variant that priced them.
type Shoppers struct {
	opts       ShopperOptions
	prefix     string // of the user ids
	run        string // of the booking and cancel ids
	propensity []float64
	limiter    *rate.Limiter

	mu   sync.Mutex
	rng  *rand.Rand
	ref  map[string]float64 // EWMA of the prices by region|product
	tall map[string]VariantTally

	started, sessions, errors, seq atomic.Int64
}

// NewShoppers returns the shopper pool of opts.
func NewShoppers(opts ShopperOptions) (*Shoppers, error) {
	opts.defaults()
	if opts.Conversion > 1 {
		return nil, fmt.Errorf("simulate: conversion %g: want at most 1", opts.Conversion)
	}
	if opts.CancelRate > 1 {
		return nil, fmt.Errorf("simulate: cancel rate %g: want at most 1", opts.CancelRate)
	}
	for name, l := range opts.Lift {
		if l <= -1 || math.IsNaN(l) || math.IsInf(l, 0) {
			return nil, fmt.Errorf("simulate: lift of %q is %g: want more than -1", name, l)
		}
	}
	s := &Shoppers{
		opts: opts, prefix: fmt.Sprintf("s%d", opts.Seed), run: fmt.Sprintf("s%d-%x", opts.Seed, time.Now().UnixNano()),
		propensity: make([]float64, opts.Users),
		limiter:    rate.NewLimiter(rate.Limit(opts.Rate), 1),
		rng:        rand.New(rand.NewPCG(opts.Seed, 0x5eed5)),
		ref:        map[string]float64{}, tall: map[string]VariantTally{},
	}
	const sigma = 0.8 // lognormal with mean 1: most shoppers rarely book, a few often
	for i := range s.propensity {
		s.propensity[i] = math.Exp(sigma*s.rng.NormFloat64() - sigma*sigma/2)
	}
	return s, nil
}

// UserID is the id shopper i sends.
func (s *Shoppers) UserID(i int) string { return fmt.Sprintf("%s-user-%d", s.prefix, i) }

// Run shops until ctx ends, or for d when d > 0, and returns the totals.
// Failed requests are counted and logged, never fatal: the simulator keeps
// shopping through a service restart.
func (s *Shoppers) Run(ctx context.Context, d time.Duration) ShopperStats {
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	var wg sync.WaitGroup
	for range s.opts.Concurrency {
		wg.Go(func() {
			for s.limiter.Wait(ctx) == nil {
				if n := s.started.Add(1); s.opts.Sessions > 0 && n > s.opts.Sessions {
					return
				}
				if err := s.session(ctx); err != nil && ctx.Err() == nil {
					s.errors.Add(1)
					s.opts.Logger.Warn("shopper session failed", "err", err)
				}
			}
		})
	}
	wg.Wait()
	return s.Stats()
}

// Stats returns the totals so far.
func (s *Shoppers) Stats() ShopperStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := ShopperStats{Sessions: s.sessions.Load(), Errors: s.errors.Load(), Variants: make(map[string]VariantTally, len(s.tall))}
	for k, v := range s.tall {
		out.Variants[k] = v
	}
	return out
}

// choice is one session's random draws, taken under the lock.
type choice struct {
	user            int
	region, product string
	book, cancel    float64 // uniform draws
}

func (s *Shoppers) draw() choice {
	s.mu.Lock()
	defer s.mu.Unlock()
	return choice{
		user:    s.rng.IntN(s.opts.Users),
		region:  s.opts.Regions[s.rng.IntN(len(s.opts.Regions))],
		product: s.opts.Products[s.rng.IntN(len(s.opts.Products))],
		book:    s.rng.Float64(), cancel: s.rng.Float64(),
	}
}

// quote is what a shopper reads of the price query's answer.
type quote struct {
	QuoteID     string  `json:"quoteId"`
	Price       float64 `json:"price"`
	Experiments []struct {
		ID      string `json:"id"`
		Variant string `json:"variant"`
	} `json:"experiments"`
}

const priceQuery = `query Shop($in: PriceInput!) { price(input: $in) { quoteId price experiments { id variant } } }`

// session is one shopper asking for a price and maybe booking it.
func (s *Shoppers) session(ctx context.Context) error {
	s.sessions.Add(1)
	c := s.draw()
	user := s.UserID(c.user)
	q, err := s.price(ctx, c.region, c.product, user)
	if err != nil {
		return err
	}
	key, lift := "", 1.0
	for i, e := range q.Experiments {
		if i == 0 {
			key = e.ID + "/" + e.Variant
		}
		lift *= 1 + s.opts.Lift[e.Variant]
	}
	p := s.probability(c.region+"|"+c.product, q.Price, s.propensity[c.user]) * lift
	s.tally(key, func(t *VariantTally) { t.Quotes++ })
	if c.book >= min(p, 0.95) {
		return nil
	}
	n := s.seq.Add(1)
	if err := s.book(ctx, q, user, fmt.Sprintf("%s-booking-%d", s.run, n)); err != nil {
		return err
	}
	s.tally(key, func(t *VariantTally) { t.Bookings++; t.Revenue += q.Price })
	if c.cancel >= s.opts.CancelRate || s.opts.Events == nil {
		return nil
	}
	ev := ingest.Event{
		EventID: fmt.Sprintf("%s-cancel-%d", s.run, n), Type: ingest.TypeCancel, RegionID: c.region,
		Timestamp: time.Now().UTC(), UserID: user, ProductType: c.product, QuoteID: q.QuoteID,
	}
	if _, err := s.opts.Events.Send(ctx, []ingest.Event{ev}); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	s.tally(key, func(t *VariantTally) { t.Cancels++ })
	return nil
}

// probability of booking at price: the base conversion, the shopper's
// propensity and the price against the recent mean price of the market,
// which the quote then updates.
func (s *Shoppers) probability(market string, price, propensity float64) float64 {
	s.mu.Lock()
	ref, ok := s.ref[market]
	if !ok || ref <= 0 {
		ref = price
	}
	s.ref[market] = 0.98*ref + 0.02*price
	s.mu.Unlock()
	p := s.opts.Conversion * propensity
	if price > 0 && ref > 0 {
		p *= math.Pow(price/ref, -s.opts.Elasticity)
	}
	return p
}

func (s *Shoppers) tally(key string, f func(*VariantTally)) {
	s.mu.Lock()
	t := s.tall[key]
	f(&t)
	s.tall[key] = t
	s.mu.Unlock()
}

func (s *Shoppers) price(ctx context.Context, region, product, user string) (quote, error) {
	body, err := json.Marshal(map[string]any{
		"query": priceQuery, "variables": map[string]any{"in": map[string]any{"regionId": region, "productType": product, "userId": user}},
	})
	if err != nil {
		return quote{}, err
	}
	var out struct {
		Data *struct {
			Price quote `json:"price"`
		} `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := s.post(ctx, "/graphql", body, &out, http.StatusOK); err != nil {
		return quote{}, fmt.Errorf("price: %w", err)
	}
	if len(out.Errors) > 0 || out.Data == nil {
		msg := "no data"
		if len(out.Errors) > 0 {
			msg = out.Errors[0].Message
		}
		return quote{}, fmt.Errorf("price of %s/%s: %s", region, product, msg)
	}
	return out.Data.Price, nil
}

func (s *Shoppers) book(ctx context.Context, q quote, user, bookingID string) error {
	body, err := json.Marshal(map[string]any{"quoteId": q.QuoteID, "userId": user, "amount": q.Price, "bookingId": bookingID})
	if err != nil {
		return err
	}
	if err := s.post(ctx, "/v1/book", body, nil, http.StatusCreated, http.StatusOK); err != nil {
		return fmt.Errorf("book %s: %w", q.QuoteID, err)
	}
	return nil
}

// post sends one JSON request and decodes the answer into out (when not
// nil); any status but want is an error with the answer's first bytes.
func (s *Shoppers) post(ctx context.Context, path string, body []byte, out any, want ...int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.APIURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.opts.APIKey != "" {
		req.Header.Set("X-Api-Key", s.opts.APIKey)
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	ok := false
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		return fmt.Errorf("%s answered %d: %.200s", path, resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return errors.Join(fmt.Errorf("%s: undecodable answer %.200s", path, b), err)
	}
	return nil
}
