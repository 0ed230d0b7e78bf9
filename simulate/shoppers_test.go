package simulate

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/intakeclient"
)

// market is a fake of the service's contract: the price query assigns
// users to control or cheaper by a hash of the user id (cheaper: 10 %
// off), POST /v1/book checks the booking against the quote.
type market struct {
	t        *testing.T
	mu       sync.Mutex
	quotes   map[string]bookedQuote
	bookings map[string]string // bookingId → quoteId
	users    map[string]bool
	key      string // the X-Api-Key expected
	failBook bool
	refused  int64
	events   []ingest.Event
}

type bookedQuote struct {
	user, variant string
	price         float64
}

func newMarket(t *testing.T) (*market, *httptest.Server) {
	m := &market{t: t, quotes: map[string]bookedQuote{}, bookings: map[string]string{}, users: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /graphql", m.price)
	mux.HandleFunc("POST /v1/book", m.book)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return m, srv
}

func (m *market) price(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Query     string
		Variables struct {
			In struct{ RegionID, ProductType, UserID string }
		}
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !strings.Contains(req.Query, "price(input: $in)") {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	in := req.Variables.In
	if in.UserID == "" || in.RegionID == "" || in.ProductType != "ride" || r.Header.Get("X-Api-Key") != m.key {
		m.t.Errorf("price request %+v key %q", in, r.Header.Get("X-Api-Key"))
	}
	h := fnv.New32a()
	h.Write([]byte(in.UserID))
	variant, price := "control", 10.0
	if h.Sum32()%2 == 1 {
		variant, price = "cheaper", 9.0
	}
	m.mu.Lock()
	id := fmt.Sprintf("q%d", len(m.quotes))
	m.quotes[id] = bookedQuote{in.UserID, variant, price}
	m.users[in.UserID] = true
	m.mu.Unlock()
	fmt.Fprintf(w, `{"data":{"price":{"quoteId":%q,"price":%g,"experiments":[{"id":"exp","variant":%q}]}}}`, id, price, variant)
}

func (m *market) book(w http.ResponseWriter, r *http.Request) {
	var in struct {
		QuoteID, UserID, BookingID string
		Amount                     float64
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failBook {
		m.refused++
		http.Error(w, `{"error":{"code":"UNAVAILABLE"}}`, http.StatusServiceUnavailable)
		return
	}
	q, ok := m.quotes[in.QuoteID]
	if !ok || q.user != in.UserID || q.price != in.Amount {
		m.t.Errorf("booking %+v does not match quote %+v", in, q)
	}
	if _, dup := m.bookings[in.BookingID]; dup || in.BookingID == "" {
		m.t.Errorf("booking id %q reused", in.BookingID)
	}
	m.bookings[in.BookingID] = in.QuoteID
	w.WriteHeader(http.StatusCreated)
	fmt.Fprint(w, `{"recorded":true}`)
}

func (m *market) Send(_ context.Context, evs []ingest.Event) (intakeclient.BatchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, evs...)
	return intakeclient.BatchResult{Accepted: len(evs)}, nil
}

func TestShoppers(t *testing.T) {
	m, srv := newMarket(t)
	m.key = "k"
	opts := ShopperOptions{
		APIURL: srv.URL + "/", APIKey: "k", Events: m, Regions: []string{"berlin", "paris"},
		Users: 2000, Rate: 1e6, Sessions: 20000, Conversion: 0.1, Lift: map[string]float64{"cheaper": 0.5}, CancelRate: 0.2, Seed: 7,
	}
	s, err := NewShoppers(opts)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Run(t.Context(), 0)
	if st.Sessions != 20000 || st.Errors != 0 {
		t.Fatalf("sessions %d, errors %d; want 20000, 0", st.Sessions, st.Errors)
	}
	ctl, chp := st.Variants["exp/control"], st.Variants["exp/cheaper"]
	if ctl.Quotes+chp.Quotes != 20000 || int(ctl.Bookings+chp.Bookings) != len(m.bookings) {
		t.Fatalf("tallies %+v, %d bookings at the market", st.Variants, len(m.bookings))
	}
	// The pool is fixed: user ids repeat, so a shopper's history exists.
	if len(m.users) > 2000 || len(m.users) < 1900 {
		t.Errorf("%d distinct users, want the pool of 2000", len(m.users))
	}
	// Cheaper converts more: 1.5 × the lift times the price effect (about
	// 1.05 / 0.95 against the mean price with elasticity 1), about 1.66×.
	rc, rt := float64(ctl.Bookings)/float64(ctl.Quotes), float64(chp.Bookings)/float64(chp.Quotes)
	t.Logf("conversion control %.4f (%d/%d), cheaper %.4f (%d/%d), ratio %.2f", rc, ctl.Bookings, ctl.Quotes, rt, chp.Bookings, chp.Quotes, rt/rc)
	if rc < 0.07 || rc > 0.13 || rt/rc < 1.4 || rt/rc > 1.95 {
		t.Errorf("conversion control %.4f, cheaper/control %.2f; want about 0.095 and 1.66", rc, rt/rc)
	}
	if chp.Revenue != 9*float64(chp.Bookings) || ctl.Revenue != 10*float64(ctl.Bookings) {
		t.Errorf("revenue %+v", st.Variants)
	}
	// Cancellations: about 20 % of the bookings, as cancel events of the quote's user.
	books := ctl.Bookings + chp.Bookings
	if n := int64(len(m.events)); n != ctl.Cancels+chp.Cancels || n < books/10 || n > books*3/10 {
		t.Errorf("%d cancel events for %d bookings (tally %d)", n, books, ctl.Cancels+chp.Cancels)
	}
	for _, ev := range m.events {
		q := m.quotes[ev.QuoteID]
		if ev.Type != ingest.TypeCancel || ev.UserID != q.user || ev.EventID == "" || len(ingest.Validate(&ev, time.Now(), time.Minute, time.Hour)) != 0 {
			t.Fatalf("cancel event %+v for quote %+v", ev, q)
		}
	}
	// A second run with the same seed brings the same shoppers back with
	// new booking ids (the market fails the test on a reused one).
	opts.Sessions = 2000
	again, err := NewShoppers(opts)
	if err != nil {
		t.Fatal(err)
	}
	before := len(m.users)
	if st := again.Run(t.Context(), 0); st.Errors != 0 || again.UserID(5) != s.UserID(5) || len(m.users) != before {
		t.Errorf("second run: %+v, users %d then %d", st, before, len(m.users))
	}
}

// TestShoppersHeterogeneous: a shopper's propensity stays with them, so
// that their bookings before an experiment predict those during it.
func TestShoppersHeterogeneous(t *testing.T) {
	m, srv := newMarket(t)
	s, err := NewShoppers(ShopperOptions{APIURL: srv.URL, Users: 500, Rate: 1e6, Sessions: 20000, Conversion: 0.2, Elasticity: -1, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	// bookings runs the shoppers once and counts the bookings per user so far.
	bookings := func() map[string]int {
		if st := s.Run(t.Context(), 0); st.Errors != 0 {
			t.Fatalf("errors: %+v", st)
		}
		s.started.Store(0)
		m.mu.Lock()
		defer m.mu.Unlock()
		counts := map[string]int{}
		for _, q := range m.bookings {
			counts[m.quotes[q].user]++
		}
		return counts
	}
	first := bookings()
	all := bookings()
	// Correlation between the users' bookings in the first and second run.
	var xs, ys []float64
	for i := range 500 {
		u := s.UserID(i)
		x := float64(first[u])
		xs = append(xs, x)
		ys = append(ys, float64(all[u])-x)
	}
	if r := stat.Correlation(xs, ys, nil); r < 0.5 {
		t.Errorf("correlation of a shopper's bookings across periods %.2f, want a lasting propensity (> 0.5)", r)
	} else {
		t.Logf("correlation across periods %.2f", r)
	}
}

func TestShoppersFailures(t *testing.T) {
	m, srv := newMarket(t)
	m.failBook = true
	s, err := NewShoppers(ShopperOptions{APIURL: srv.URL, Users: 100, Rate: 1e6, Sessions: 500, Conversion: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	st := s.Run(t.Context(), 0)
	// Every booking failed (503): counted as errors, the run went on.
	var books int64
	for _, v := range st.Variants {
		books += v.Bookings
	}
	if st.Sessions != 500 || books != 0 || st.Errors != m.refused || st.Errors < 100 {
		t.Errorf("with bookings refused: %+v", st)
	}
	for _, c := range []ShopperOptions{
		{Conversion: 1.5}, {CancelRate: 2}, {Lift: map[string]float64{"x": -1}},
	} {
		if _, err := NewShoppers(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
