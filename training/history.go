package training

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"

	"github.com/surgeworks/surge/features"
)

// RegionSpec describes a synthetic region.
type RegionSpec struct {
	ID       string
	BaseRate float64 // mean searches per minute before seasonality and signals
	UTCShift int     // local time = UTC + UTCShift hours (shapes the daily cycle)
}

// DefaultRegions are the demo regions (the ids of rules.DefaultRules).
var DefaultRegions = []RegionSpec{
	{ID: "berlin", BaseRate: 40, UTCShift: 1},
	{ID: "paris", BaseRate: 45, UTCShift: 1},
	{ID: "london", BaseRate: 60, UTCShift: 0},
	{ID: "nyc", BaseRate: 80, UTCShift: -5},
	{ID: "sf", BaseRate: 30, UTCShift: -8},
}

// HistoryOptions configures GenerateHistory. A zero field takes the
// documented default.
type HistoryOptions struct {
	Regions []RegionSpec // default DefaultRegions
	Days    int          // default 14
	// Start is the first minute (truncated to the minute, UTC); default
	// Monday 2026-01-05 00:00 UTC.
	Start time.Time
	Seed  uint64 // same seed, same history
}

func (o HistoryOptions) withDefaults() HistoryOptions {
	if len(o.Regions) == 0 {
		o.Regions = DefaultRegions
	}
	if o.Days <= 0 {
		o.Days = 14
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	}
	o.Start = o.Start.UTC().Truncate(time.Minute)
	return o
}

// RegionHistory is one region's activity, one closed minute per entry,
// consecutive and oldest first.
type RegionHistory struct {
	Region  RegionSpec
	Minutes []features.Minute
}

// GenerateHistory synthesises per-minute demand for each region over
// opts.Days: searches are Poisson around a rate with daily and weekly
// seasonality (local time; weekends have a late peak and a slow morning), a
// slowly wandering regional level, and boosts from bad weather, traffic and
// local events (random episodes). Supply follows demand about 15 minutes
// late; bookings convert searches less well when supply is short; some
// bookings are cancelled. Each region draws from its own stream seeded by
// (Seed, region id), so the result is deterministic.
func GenerateHistory(opts HistoryOptions) []RegionHistory {
	opts = opts.withDefaults()
	out := make([]RegionHistory, len(opts.Regions))
	for i, r := range opts.Regions {
		out[i] = RegionHistory{Region: r, Minutes: generateRegion(r, opts)}
	}
	return out
}

func generateRegion(r RegionSpec, opts HistoryOptions) []features.Minute {
	h := fnv.New64a()
	h.Write([]byte(r.ID))
	rng := rand.New(rand.NewPCG(opts.Seed, h.Sum64()))

	n := opts.Days * 24 * 60
	minutes := make([]features.Minute, n)
	const supplyLag = 15
	rates := make([]float64, n)
	var (
		level    float64 // log-level, AR(1)
		weather  episode
		event    episode
		incident episode
		supply   = r.BaseRate * 0.8
	)
	for i := range minutes {
		start := opts.Start.Add(time.Duration(i) * time.Minute)
		local := start.Add(time.Duration(r.UTCShift) * time.Hour)
		hour := float64(local.Hour()) + float64(local.Minute())/60
		weekend := local.Weekday() == time.Saturday || local.Weekday() == time.Sunday

		level = 0.995*level + rng.NormFloat64()*0.01

		// Weather: a few episodes a week, 1-6 hours, severity peaks mid-way.
		if !weather.active() && rng.Float64() < 1.0/(2*24*60) {
			weather = newEpisode(rng, 60, 360, 0.3, 1)
		}
		w := weather.step()
		// Local events: about one a day, mostly starting in the evening.
		pEvent := 1.0 / (3 * 24 * 60)
		if hour >= 17 && hour < 21 {
			pEvent = 1.0 / (4 * 60)
		}
		if !event.active() && rng.Float64() < pEvent {
			event = newEpisode(rng, 90, 240, 0.4, 1)
		}
		ev := event.step()
		// Traffic: rush hours, worse in bad weather, random incidents.
		if !incident.active() && rng.Float64() < 1.0/(12*60) {
			incident = newEpisode(rng, 20, 90, 0.2, 0.5)
		}
		traffic := 0.12 + 0.55*rush(hour, weekend) + 0.2*w + incident.step() + rng.NormFloat64()*0.03
		traffic = math.Min(1, math.Max(0, traffic))

		rate := r.BaseRate * daily(hour, weekend) * weekly(local.Weekday()) * math.Exp(level) *
			(1 + 0.6*w) * (1 + 0.25*traffic) * (1 + ev)
		rates[i] = rate

		// Supply chases the demand of supplyLag minutes ago.
		target := 0.9 * r.BaseRate
		if i >= supplyLag {
			target = 0.9 * rates[i-supplyLag]
		}
		supply += (target-supply)*0.08 + rng.NormFloat64()*0.8
		supply = math.Max(0, supply)

		searches := poisson(rng, rate)
		conv := 0.35 * math.Min(1, supply/math.Max(1, rate))
		bookings := binomial(rng, searches, conv)
		cancels := binomial(rng, bookings, 0.04+0.06*w)
		eventFlag := 0.0
		if event.active() {
			eventFlag = 1
		}
		minutes[i] = features.Minute{
			Start:    start,
			Searches: float64(searches),
			Bookings: float64(bookings),
			Cancels:  float64(cancels),
			Supply:   math.Round(supply),
			Weather:  round2(w),
			Traffic:  round2(traffic),
			Event:    eventFlag,
		}
	}
	return minutes
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func gauss(x, mu, sigma float64) float64 {
	d := (x - mu) / sigma
	return math.Exp(-d * d / 2)
}

// daily is the hour-of-day demand shape (local time), about 1 on average.
func daily(h float64, weekend bool) float64 {
	if weekend {
		return 0.35 + 0.5*gauss(h, 11.5, 2.5) + 0.9*gauss(h, 19, 2.5) + 0.8*gauss(h, 23.5, 1.5) + 0.5*gauss(h, 0.5, 1.5)
	}
	return 0.25 + 1.1*gauss(h, 8.5, 1.3) + 0.5*gauss(h, 13, 2) + 1.2*gauss(h, 18, 1.8) + 0.4*gauss(h, 22.5, 1.5)
}

// weekly is the day-of-week demand factor.
func weekly(d time.Weekday) float64 {
	return [7]float64{0.85, 0.92, 0.97, 1.0, 1.05, 1.2, 1.1}[d]
}

// rush is the rush-hour shape of traffic.
func rush(h float64, weekend bool) float64 {
	if weekend {
		return 0.4 * gauss(h, 14, 3)
	}
	return gauss(h, 8.3, 1.2) + gauss(h, 17.5, 1.5)
}

// episode is a bounded disturbance whose intensity rises and falls as a
// half sine over its duration.
type episode struct {
	left, length int
	peak         float64
}

func newEpisode(rng *rand.Rand, minLen, maxLen int, minPeak, maxPeak float64) episode {
	l := minLen + rng.IntN(maxLen-minLen+1)
	return episode{left: l, length: l, peak: minPeak + rng.Float64()*(maxPeak-minPeak)}
}

func (e *episode) active() bool { return e.left > 0 }

// step returns the intensity of the current minute and advances.
func (e *episode) step() float64 {
	if e.left <= 0 {
		return 0
	}
	p := float64(e.length-e.left) / float64(e.length)
	e.left--
	return e.peak * math.Sin(math.Pi*(p+0.5/float64(e.length)))
}

// poisson draws from Poisson(lambda): multiplication for small lambda,
// Hörmann's transformed rejection (PTRS) otherwise.
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda < 10 {
		l := math.Exp(-lambda)
		k, p := 0, rng.Float64()
		for p > l {
			k++
			p *= rng.Float64()
		}
		return k
	}
	slam := math.Sqrt(lambda)
	loglam := math.Log(lambda)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := rng.Float64() - 0.5
		v := rng.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lambda + 0.43)
		if us >= 0.07 && v <= vr {
			return int(k)
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lambda+k*loglam-lg {
			return int(k)
		}
	}
}

// binomial draws from Binomial(n, p): waiting times between successes when
// n·p is small, a rounded normal otherwise (ample for synthetic data).
func binomial(rng *rand.Rand, n int, p float64) int {
	if n <= 0 || p <= 0 {
		return 0
	}
	if p >= 1 {
		return n
	}
	mean := float64(n) * p
	if v := mean * (1 - p); v > 25 {
		k := math.Round(mean + math.Sqrt(v)*rng.NormFloat64())
		return int(math.Min(float64(n), math.Max(0, k)))
	}
	logq := math.Log1p(-p)
	k, pos := 0, 0.0
	for {
		pos += math.Ceil(math.Log(1-rng.Float64()) / logq)
		if pos > float64(n) {
			return k
		}
		k++
	}
}

// HourOfWeek is the UTC hour of the week, 0 (Sunday 00h) to 167.
func HourOfWeek(t time.Time) int {
	t = t.UTC()
	return int(t.Weekday())*24 + t.Hour()
}

// SeasonalityIndex is a region's demand by hour of week against its overall
// mean: mean searches per minute in each UTC hour of the week divided by the
// mean over all minutes (1 = average; hours without data get 1).
func SeasonalityIndex(minutes []features.Minute) [168]float64 {
	var sum [168]float64
	var cnt [168]int
	total := 0.0
	for _, m := range minutes {
		h := HourOfWeek(m.Start)
		sum[h] += m.Searches
		cnt[h]++
		total += m.Searches
	}
	var idx [168]float64
	mean := total / float64(max(1, len(minutes)))
	for h := range idx {
		idx[h] = 1
		if cnt[h] > 0 && mean > 0 {
			idx[h] = sum[h] / float64(cnt[h]) / mean
		}
	}
	return idx
}
