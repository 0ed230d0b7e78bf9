// Package simulate generates realistic synthetic marketplace traffic: live
// events for demos and benchmarks (Generator) and recorded histories for
// replay and training (History). Demand comes from training.GenerateHistory
// (daily and weekly seasonality in local time, regional rates, weather,
// traffic and local-event episodes, supply following demand); simulate
// turns its per-minute figures into individual events — searches by users
// of a pool, bookings and cancellations converting from them, supply
// updates and external signals per region — and adds short random bursts of
// demand that supply cannot follow, which is what makes prices surge.
// DemoFeatures keeps the demo regions' online features fresh from the same
// generator, for `surge dev`.
package simulate

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/rules"
	"github.com/surgeworks/surge/training"
)

// Regions returns n regions: the demo regions first (berlin, paris, london,
// nyc, sf: training.DefaultRegions), then region-6, region-7, … whose base
// rates (20-70 searches per minute) and time zones (UTC-8 to UTC+9) are
// derived from their ids.
func Regions(n int) []training.RegionSpec {
	out := make([]training.RegionSpec, 0, n)
	for i := range n {
		if i < len(training.DefaultRegions) {
			out = append(out, training.DefaultRegions[i])
			continue
		}
		id := "region-" + strconv.Itoa(i+1)
		h := hash64(id)
		out = append(out, training.RegionSpec{ID: id, BaseRate: float64(20 + h%51), UTCShift: int(h/51%18) - 8})
	}
	return out
}

func hash64(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// Products and their shares of searches.
var products = []struct {
	name  string
	share float64
}{{"ride", 0.6}, {"xl", 0.15}, {"delivery", 0.25}}

// Options configures a Generator. A zero field takes the documented default.
type Options struct {
	// Regions default to Regions(5), the demo regions.
	Regions []training.RegionSpec
	// Start is the time of the first event; default the current time.
	Start time.Time
	// Seed makes the traffic reproducible: same seed and Start, same events.
	Seed uint64
	// Rate is the total of events per second across regions and event
	// types. Zero keeps the history's own rates — the demo regions then send
	// about 3-12 events/s together, depending on the hour, which is the
	// scale the bootstrap model learned, so prices react to the traffic.
	// With a Rate, the regions' demand is scaled so that the total is Rate
	// on average at every moment (seasonality, episodes and bursts then
	// shape how it is shared among regions).
	Rate float64
	// SupplyInterval is the time between supply updates of a region;
	// default 5 s.
	SupplyInterval time.Duration
	// SignalInterval is the time between a region's external signals (one
	// event each for weather, traffic and local event); default 60 s.
	SignalInterval time.Duration
	// BurstEvery is the mean time between bursts of a region (1-4 minutes
	// of 1.5-3× demand, rising and falling); default 15 min; negative: none.
	BurstEvery time.Duration
	// Users is the size of the user pool that searches, bookings and
	// cancellations are drawn from; default ten seconds of traffic (at
	// least 200), so a user sends about one event every ten seconds on
	// average and stays under per-user rate limits.
	Users int
	// IDPrefix starts every eventId (followed by "-" and a counter); default
	// derived from Seed and Start, so separate runs do not collide.
	IDPrefix string
	// Experiment, when set, is put on searches and bookings, with variant
	// control or treatment by user.
	Experiment string
}

const (
	bookingDelayMin, bookingDelayMax = 2 * time.Second, 30 * time.Second
	cancelDelayMin, cancelDelayMax   = 10 * time.Second, 2 * time.Minute
	// warmUp is simulated before Start so that bookings and cancellations
	// of earlier searches are already under way at Start.
	warmUp   = bookingDelayMax + cancelDelayMax
	calSlots = 256 // > warmUp in seconds: the ring of pending events
)

// Generator produces live traffic one second at a time, in timestamp order.
// It is not safe for concurrent use.
type Generator struct {
	opts     Options
	rng      *rand.Rand
	regions  []*region
	userRate float64 // user events/s wanted in rate mode

	slot     int64 // next slot, in seconds from Start (negative: warm-up)
	cal      [calSlots][]ingest.Event
	seq      uint64
	idBuf    []byte
	chunk    int
	chunkT0  time.Time
	expected float64 // expected events/s at the last slot
	states   []slotState
	scratch  []ingest.Event
	keys     []sortKey
	users    []string // user ids by pool index, filled as used
}

// slotState is a region's demand in the slot being generated.
type slotState struct {
	m                           features.Minute
	searches, conv, cancel, mul float64 // searches/s at the history's scale, shares, surge
}

type region struct {
	spec    training.RegionSpec
	minutes []features.Minute // the current chunk's, from chunkT0
	prices  map[string]float64
	rule    struct{ threshold, sensitivity, lo, hi float64 }

	burstLeft, burstLen int // seconds
	burstPeak           float64
	nextSupply          time.Time
	nextSignal          time.Time
}

// New returns a generator. It fails when Rate is positive but too low to
// carry the regions' supply updates and signals.
func New(opts Options) (*Generator, error) {
	if len(opts.Regions) == 0 {
		opts.Regions = Regions(5)
	}
	if opts.Start.IsZero() {
		opts.Start = time.Now()
	}
	opts.Start = opts.Start.UTC()
	if opts.SupplyInterval <= 0 {
		opts.SupplyInterval = 5 * time.Second
	}
	if opts.SignalInterval <= 0 {
		opts.SignalInterval = time.Minute
	}
	if opts.BurstEvery == 0 {
		opts.BurstEvery = 15 * time.Minute
	}
	if opts.IDPrefix == "" {
		opts.IDPrefix = "sim" + strconv.FormatUint(hash64(strconv.FormatUint(opts.Seed, 10), opts.Start.Format(time.RFC3339Nano))%(1<<40), 36)
	}
	if opts.Rate < 0 || math.IsNaN(opts.Rate) || math.IsInf(opts.Rate, 0) {
		return nil, fmt.Errorf("simulate: rate %v: want a positive number of events/s, or 0 for the history's own", opts.Rate)
	}
	g := &Generator{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, 0x5eed_51_3a7e))}
	n := float64(len(opts.Regions))
	gauges := n/opts.SupplyInterval.Seconds() + 3*n/opts.SignalInterval.Seconds()
	if opts.Rate > 0 {
		g.userRate = opts.Rate - gauges
		if g.userRate <= 0 {
			return nil, fmt.Errorf("simulate: rate %.2f/s is below the %.2f/s of supply updates and signals of %d regions", opts.Rate, gauges, len(opts.Regions))
		}
	}
	regions, err := newRegions(opts.Regions)
	if err != nil {
		return nil, err
	}
	for i, r := range regions {
		// Stagger the regions' gauges over their intervals.
		frac := float64(i) / n
		r.nextSupply = opts.Start.Add(-warmUp + time.Duration(frac*float64(opts.SupplyInterval)))
		r.nextSignal = opts.Start.Add(-warmUp + time.Duration(frac*float64(opts.SignalInterval)))
	}
	g.regions = regions
	g.slot = -int64(warmUp / time.Second)
	g.loadChunk(0)
	if g.opts.Users <= 0 {
		g.opts.Users = max(200, int(math.Ceil(10*g.rateAt(g.opts.Start))))
	}
	for g.slot < 0 {
		g.step(nil)
	}
	return g, nil
}

// newRegions prepares the regions' state: prices and pricing rule from
// rules.DefaultRules (Berlin's for a region that is not a demo region).
func newRegions(specs []training.RegionSpec) ([]*region, error) {
	type rule = struct{ threshold, sensitivity, lo, hi float64 }
	prices := map[string]map[string]float64{}
	ruleOf := map[string]rule{}
	for _, r := range rules.DefaultRules() {
		if prices[r.RegionID] == nil {
			prices[r.RegionID] = map[string]float64{}
		}
		prices[r.RegionID][r.ProductType] = r.BasePrice
		ruleOf[r.RegionID] = rule{r.Threshold, r.Sensitivity, r.MinMultiplier, r.MaxMultiplier}
	}
	seen := map[string]bool{}
	var out []*region
	for _, spec := range specs {
		if seen[spec.ID] {
			return nil, fmt.Errorf("simulate: region %q twice", spec.ID)
		}
		seen[spec.ID] = true
		r := &region{spec: spec, prices: prices[spec.ID], rule: ruleOf[spec.ID]}
		if r.prices == nil {
			r.prices, r.rule = prices["berlin"], ruleOf["berlin"]
		}
		out = append(out, r)
	}
	return out, nil
}

// Options returns the options in effect, defaults filled in.
func (g *Generator) Options() Options { return g.opts }

// ExpectedRate is the expected number of events per second at the last
// generated second (at Start before the first), bursts included.
func (g *Generator) ExpectedRate() float64 {
	if g.slot <= 0 {
		return g.rateAt(g.opts.Start)
	}
	return g.expected
}

// rateAt estimates the events per second at t without bursts.
func (g *Generator) rateAt(t time.Time) float64 {
	if g.opts.Rate > 0 {
		return g.opts.Rate
	}
	n := float64(len(g.regions))
	total := n/g.opts.SupplyInterval.Seconds() + 3*n/g.opts.SignalInterval.Seconds()
	for _, r := range g.regions {
		m := g.minute(r, t)
		total += m.Searches / 60 * (1 + conversion(m)*(1+cancellation(m)))
	}
	return total
}

// loadChunk generates the history of day c after Start for every region,
// after a warm-up day (so supply already follows demand). Each day has its
// own seed.
func (g *Generator) loadChunk(c int) {
	g.chunk = c
	g.chunkT0 = g.opts.Start.Add(-warmUp).Truncate(time.Minute).Add(time.Duration(c) * 24 * time.Hour)
	specs := make([]training.RegionSpec, len(g.regions))
	for i, r := range g.regions {
		specs[i] = r.spec
	}
	hist := training.GenerateHistory(training.HistoryOptions{
		Regions: specs, Days: 2, Start: g.chunkT0.Add(-24 * time.Hour),
		Seed: g.opts.Seed + uint64(c)*0x9e3779b97f4a7c15,
	})
	for i, h := range hist {
		g.regions[i].minutes = h.Minutes[24*60:]
	}
}

// minute is region r's history minute holding t (within the current chunk).
func (g *Generator) minute(r *region, t time.Time) features.Minute {
	i := int(t.Sub(g.chunkT0) / time.Minute)
	return r.minutes[max(0, min(i, len(r.minutes)-1))]
}

// conversion is the share of searches that book in a history minute,
// smoothed towards 0.3 when the minute has few searches.
func conversion(m features.Minute) float64 { return (m.Bookings + 1.5) / (m.Searches + 5) }

// cancellation is the share of bookings cancelled, smoothed towards 5 %.
func cancellation(m features.Minute) float64 { return (m.Cancels + 0.5) / (m.Bookings + 10) }

// Next appends the events of the next second to dst, in timestamp order,
// and returns it with the second's start.
func (g *Generator) Next(dst []ingest.Event) ([]ingest.Event, time.Time) {
	at := g.opts.Start.Add(time.Duration(g.slot) * time.Second)
	return g.step(dst), at
}

// step generates slot g.slot: events due in it are appended to dst (nil
// during the warm-up, whose own events are dropped).
func (g *Generator) step(dst []ingest.Event) []ingest.Event {
	t0 := g.opts.Start.Add(time.Duration(g.slot) * time.Second)
	if t0.Sub(g.chunkT0) >= 24*time.Hour {
		g.loadChunk(g.chunk + 1)
	}
	emit := g.slot >= 0
	out := g.scratch[:0] // the slot's events, sorted into dst at the end
	bucket := &g.cal[mod(g.slot, calSlots)]
	if emit {
		out = append(out, *bucket...)
	}
	clear(*bucket)
	*bucket = (*bucket)[:0]

	states := g.states[:0]
	demand := 0.0 // user events/s expected at the natural scale
	for _, r := range g.regions {
		m := g.minute(r, t0)
		burst := g.burst(r)
		s := slotState{m: m, searches: m.Searches / 60 * burst, conv: conversion(m) / math.Sqrt(burst), cancel: cancellation(m)}
		s.mul = g.multiplier(r, s.searches*60, m.Supply)
		demand += s.searches * (1 + s.conv*(1+s.cancel))
		states = append(states, s)
	}
	g.states = states
	k := 1.0 // scale of the history's demand
	if g.userRate > 0 && demand > 0 {
		k = g.userRate / demand
	}
	g.expected = k*demand + float64(len(g.regions))*(1/g.opts.SupplyInterval.Seconds()+3/g.opts.SignalInterval.Seconds())

	t1 := t0.Add(time.Second)
	for i, r := range g.regions {
		s := states[i]
		if !emit {
			g.warm(r, s, k, t0)
		}
		n := poisson(g.rng, k*s.searches)
		if !emit {
			n = 0
		}
		for range n {
			ts := t0.Add(time.Duration(g.rng.Int64N(int64(time.Second))))
			user := g.rng.IntN(g.opts.Users)
			product := pickProduct(g.rng.Float64())
			if emit {
				out = append(out, g.event(ingest.TypeSearch, r, ts, user, product))
			}
			if g.rng.Float64() >= s.conv {
				continue
			}
			bts := ts.Add(uniform(g.rng, bookingDelayMin, bookingDelayMax))
			b := g.event(ingest.TypeBooking, r, bts, user, product)
			price := math.Round(r.prices[product]*s.mul*(0.85+0.4*g.rng.Float64())*100) / 100
			b.Price = &price
			g.schedule(b)
			if g.rng.Float64() < s.cancel {
				g.schedule(g.event(ingest.TypeCancel, r, bts.Add(uniform(g.rng, cancelDelayMin, cancelDelayMax)), user, product))
			}
		}
		for ; r.nextSupply.Before(t1); r.nextSupply = r.nextSupply.Add(g.opts.SupplyInterval) {
			if emit {
				next := g.minute(r, r.nextSupply.Add(time.Minute))
				cur := g.minute(r, r.nextSupply)
				frac := float64(r.nextSupply.Sub(g.chunkT0)%time.Minute) / float64(time.Minute)
				supply := math.Max(0, math.Round(k*(cur.Supply+(next.Supply-cur.Supply)*frac)))
				ev := g.event(ingest.TypeSupplyUpdate, r, r.nextSupply, -1, "")
				ev.AvailableSupply = &supply
				out = append(out, ev)
			}
		}
		for ; r.nextSignal.Before(t1); r.nextSignal = r.nextSignal.Add(g.opts.SignalInterval) {
			if emit {
				m := g.minute(r, r.nextSignal)
				for _, sig := range [...]struct {
					name  string
					value float64
				}{{ingest.SignalWeather, m.Weather}, {ingest.SignalTraffic, m.Traffic}, {ingest.SignalEvent, m.Event}} {
					ev := g.event(ingest.TypeExternalSignal, r, r.nextSignal, -1, "")
					v := sig.value
					ev.Signal, ev.Value = sig.name, &v
					out = append(out, ev)
				}
			}
		}
	}
	g.slot++
	// Sort small keys rather than the events; the index breaks ties, so
	// the order is total and the output deterministic.
	keys := g.keys[:0]
	for i := range out {
		keys = append(keys, sortKey{out[i].Timestamp.UnixNano(), int32(i)})
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if c := cmp.Compare(a.ts, b.ts); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	for _, k := range keys {
		dst = append(dst, out[k.idx])
	}
	clear(out) // drop references for the collector
	g.scratch, g.keys = out[:0], keys[:0]
	return dst
}

type sortKey struct {
	ts  int64
	idx int32
}

// warm simulates region r's second from t0 during the warm-up, cheaply:
// its searches are never sent, so only the bookings that follow them
// (Poisson thinning: Poisson(searches × conversion) of them) and their
// cancellations are drawn, and only those falling at or after Start are
// kept. Seconds whose bookings all fall before Start draw only the
// bookings that will be cancelled.
func (g *Generator) warm(r *region, s slotState, k float64, t0 time.Time) {
	late := !t0.Add(time.Second + bookingDelayMax).Before(g.opts.Start) // its bookings may fall after Start
	rate := k * s.searches * s.conv
	if !late {
		rate *= s.cancel
	}
	for range poisson(g.rng, rate) {
		ts := t0.Add(time.Duration(g.rng.Int64N(int64(time.Second))))
		user := g.rng.IntN(g.opts.Users)
		product := pickProduct(g.rng.Float64())
		bts := ts.Add(uniform(g.rng, bookingDelayMin, bookingDelayMax))
		price := math.Round(r.prices[product]*s.mul*(0.85+0.4*g.rng.Float64())*100) / 100
		if !bts.Before(g.opts.Start) {
			b := g.event(ingest.TypeBooking, r, bts, user, product)
			b.Price = &price
			g.schedule(b)
		}
		if !late || g.rng.Float64() < s.cancel {
			if cts := bts.Add(uniform(g.rng, cancelDelayMin, cancelDelayMax)); !cts.Before(g.opts.Start) {
				g.schedule(g.event(ingest.TypeCancel, r, cts, user, product))
			}
		}
	}
}

// burst advances region r's burst by one second and returns its demand
// factor (1 outside bursts; a half sine up to the peak during one).
func (g *Generator) burst(r *region) float64 {
	if r.burstLeft == 0 {
		if g.opts.BurstEvery < 0 || g.rng.Float64() >= 1/g.opts.BurstEvery.Seconds() {
			return 1
		}
		r.burstLen = 60 + g.rng.IntN(181)
		r.burstLeft = r.burstLen
		r.burstPeak = 1.5 + 1.5*g.rng.Float64()
	}
	p := (float64(r.burstLen-r.burstLeft) + 0.5) / float64(r.burstLen)
	r.burstLeft--
	return 1 + (r.burstPeak-1)*math.Sin(math.Pi*p)
}

// multiplier approximates the surge a booking paid: the demo rule's
// utilisation response (searches per minute against supply), within caps.
func (g *Generator) multiplier(r *region, perMinute, supply float64) float64 {
	util := perMinute / math.Max(1, supply)
	m := 1 + r.rule.sensitivity*math.Max(0, util-r.rule.threshold)
	return math.Max(r.rule.lo, math.Min(r.rule.hi, m))
}

// schedule files a future event (a booking or cancellation) in the slot of
// its timestamp.
func (g *Generator) schedule(ev ingest.Event) {
	s := int64(ev.Timestamp.Sub(g.opts.Start) / time.Second)
	if ev.Timestamp.Before(g.opts.Start) && ev.Timestamp.Sub(g.opts.Start)%time.Second != 0 {
		s-- // floor for negative offsets
	}
	g.cal[mod(s, calSlots)] = append(g.cal[mod(s, calSlots)], ev)
}

// event builds an event with the next id; user < 0 means none.
func (g *Generator) event(typ string, r *region, ts time.Time, user int, product string) ingest.Event {
	ev := ingest.Event{EventID: g.nextID(), Type: typ, RegionID: r.spec.ID, Timestamp: ts, ProductType: product}
	if user >= 0 {
		if g.users == nil {
			g.users = make([]string, g.opts.Users)
		}
		if user >= len(g.users) {
			ev.UserID = userID(user)
		} else {
			if g.users[user] == "" {
				g.users[user] = userID(user)
			}
			ev.UserID = g.users[user]
		}
		if g.opts.Experiment != "" && typ != ingest.TypeCancel {
			ev.Experiment = &ingest.Experiment{ID: g.opts.Experiment, Variant: variant(user)}
		}
	}
	return ev
}

func (g *Generator) nextID() string {
	g.seq++
	g.idBuf = append(g.idBuf[:0], g.opts.IDPrefix...)
	g.idBuf = append(g.idBuf, '-')
	g.idBuf = strconv.AppendUint(g.idBuf, g.seq, 36)
	return string(g.idBuf)
}

func userID(i int) string { return "user-" + strconv.Itoa(i) }

func variant(user int) string {
	if hash64(strconv.Itoa(user))%2 == 0 {
		return "control"
	}
	return "treatment"
}

func pickProduct(u float64) string {
	for _, p := range products {
		if u < p.share {
			return p.name
		}
		u -= p.share
	}
	return products[0].name
}

func mod(a, m int64) int64 { return ((a % m) + m) % m }

func uniform(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// poisson draws from Poisson(lambda): by multiplication for small lambda, a
// rounded normal above 30 (ample for traffic counts).
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l := math.Exp(-lambda)
	k, p := 0, rng.Float64()
	for p > l {
		k++
		p *= rng.Float64()
	}
	return k
}
