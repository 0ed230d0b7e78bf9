package pricing

import (
	"math"
	"math/bits"
	"time"
)

// Factor names, in the order in which they appear in Quote.Factors.
const (
	FactorBase          = "base"
	FactorDemandSupply  = "demand_supply"
	FactorRegulatoryCap = "regulatory_cap"
	FactorSmoothing     = "smoothing"
	FactorRounding      = "rounding"
)

// Input is everything a quote depends on. Compute reads nothing else, so a
// logged Input reproduces its Quote.
type Input struct {
	Rule Rule
	// DemandForecast is the forecast number of requests over the horizon.
	// NaN, ±Inf and negative values are treated as 0.
	DemandForecast float64
	// DemandUnknown says no forecast was available at all (the static
	// fallback): utilisation is then taken as Threshold, so no surge comes
	// from the missing signal, as with unknown supply.
	DemandUnknown bool
	// HorizonMinutes is the length of the forecast horizon; ≤ 0 means the
	// demand rate is unusable and is treated as 0.
	HorizonMinutes int
	// Supply is the number of available supply units. It is used only when
	// SupplyKnown is true; a known supply of 0 (or anything below 1) counts
	// as 1, while NaN, ±Inf or negative values count as unknown.
	Supply      float64
	SupplyKnown bool
	// Previous is the State returned by the previous quote for this region
	// and product, or nil on the first quote.
	Previous *State
	// At is the quote time.
	At time.Time
}

// State is the smoothing state the caller persists per region and product
// and passes back as the next Input.Previous.
//
// Multiplier is the smoothed multiplier before rounding to MultiplierStep:
// persisting the rounded multiplier instead would pin it in place whenever
// quotes come so often that one quote's allowance is below half a step.
type State struct {
	Multiplier float64
	At         time.Time
}

// Factor is one additive term of the multiplier. Contribution is an exact
// number of basis points divided by 10000 (math.Round(c*10000) recovers it),
// and the contributions of a Quote's factors add up, in basis points,
// exactly to its Multiplier.
type Factor struct {
	Name         string
	Contribution float64
	Description  string
}

// Quote is the outcome of Compute.
type Quote struct {
	BasePrice  float64
	Multiplier float64 // final multiplier, within [MinMultiplier, MaxMultiplier]
	Price      float64 // BasePrice × Multiplier rounded half up to PriceStep
	Currency   string
	// Factors are, in this order and always all present: base,
	// demand_supply, regulatory_cap, smoothing, rounding.
	Factors []Factor
	// State is the new smoothing state to persist.
	State State
	// Utilisation is the demand per minute per supply unit actually used
	// (the rule's Threshold when supply is unknown).
	Utilisation float64
}

const (
	one = 10000 // 1.0 in basis points (and 1 currency unit in units of 0.0001)
	// maxRawBps bounds the raw multiplier (1000.0) so that absurd forecasts
	// keep the breakdown in range; any raw value above MaxMultiplier (≤ 20)
	// is capped anyway, so the bound changes no price.
	maxRawBps = 1000 * one
)

// Compute turns a rule, a forecast and the supply into a quote. It returns
// an error only when in.Rule is invalid (see Rule.Validate); missing or
// invalid signals never fail and never panic:
//
//   - utilisation = (DemandForecast / HorizonMinutes) / max(Supply, 1). With
//     supply unknown it is taken as Threshold, so a missing signal causes no
//     surge. Invalid demand or horizon give a demand rate of 0.
//   - raw = 1 + Sensitivity × max(0, utilisation − Threshold), to the
//     nearest basis point. There is no discount below 1.0 from low demand:
//     MinMultiplier < 1 is honoured as a floor only. (A symmetric discount
//     would turn every rule with MinMultiplier < 1 into a discounting one and
//     make broken forecasts, taken as 0, cut prices.)
//   - capped = clamp(raw, MinMultiplier, MaxMultiplier).
//   - smoothed moves from the previous State's multiplier towards capped by
//     at most floor(MaxStepPerMinute × minutes elapsed) basis points. The
//     previous multiplier is first brought within the current caps (caps
//     are regulatory and win over smoothing, e.g. after a rule change). With
//     no previous State (or one with a NaN, infinite or non-positive
//     multiplier) it starts from 1.0 with one minute of allowance; a State
//     with a zero At also gets one minute; a quote time before the previous
//     one (clock skew) gets no allowance.
//   - final = smoothed rounded to a multiple of MultiplierStep, half away
//     from zero, then clamped to the caps again: a cap that is not a
//     multiple of the step is quoted as is, and rounding never breaks a cap.
//   - price = BasePrice × final, rounded half up to a multiple of PriceStep,
//     exactly (integer arithmetic in units of 0.0001 and 0.00000001).
//
// The returned State is {smoothed, in.At}: it always takes the quote time,
// even one earlier than Previous.At. Clock skew between callers therefore
// costs at most the skew in extra allowance, and a clock that runs ahead
// cannot freeze the multiplier for everyone else (as keeping the later of
// the two times would).
//
// Elapsed time is measured on the wall-clock readings of At (monotonic
// readings are ignored), so a logged Input reproduces its Quote.
//
// Hence, with p the previous multiplier brought within caps (1.0 on a first
// quote) and a the allowance: |State.Multiplier − p| ≤ a (with equality
// whenever the target is out of reach), |Multiplier − State.Multiplier| ≤
// MultiplierStep / 2, and so |Multiplier − p| ≤ a + MultiplierStep / 2.
func Compute(in Input) (Quote, error) {
	if err := in.Rule.Validate(); err != nil {
		return Quote{}, err
	}
	var c calc
	c.run(&in)
	return Quote{
		BasePrice:   in.Rule.BasePrice,
		Multiplier:  float64(c.final) / one,
		Price:       float64(c.price4) / one,
		Currency:    in.Rule.Currency,
		Factors:     c.factors(&in),
		State:       State{Multiplier: float64(c.smoothed) / one, At: in.At},
		Utilisation: c.util,
	}, nil
}

// Signal states, for the descriptions.
const (
	sigOK = iota
	sigUnknown
	sigInvalid
)

// Previous-state cases, for the descriptions.
const (
	prevNormal = iota
	prevFirst
	prevInvalid // ignored: treated as a first quote
	prevNoTime  // zero At: one minute
	prevSkew    // At after the quote time: no allowance
)

// calc holds every intermediate value of one computation; the descriptions
// are written from it.
type calc struct {
	// Rule in units of 0.0001.
	minB, maxB, stepB, movePerMinB, base4, priceStep4 int64

	demand    float64 // sanitised forecast
	demandSig int
	horizonOK bool
	rate      float64 // demand per minute
	supply    float64
	supplySig int
	util      float64
	excess    float64
	saturated bool
	prevCase  int
	prevGiven int64 // previous multiplier as given (clamped to int range), bps
	prevB     int64 // previous multiplier within caps
	elapsed   time.Duration
	allow     int64 // smoothing allowance, bps (saturated at the cap range)
	allowAll  bool  // allowance covers the whole cap range
	stepRound int64 // smoothed rounded to the step, before re-clamping
	raw       int64
	capped    int64
	smoothed  int64
	final     int64
	price4    int64
}

func (c *calc) run(in *Input) {
	r := &in.Rule
	// Validate guarantees that these are exact.
	c.minB, _ = toUnits4(r.MinMultiplier)
	c.maxB, _ = toUnits4(r.MaxMultiplier)
	c.stepB, _ = toUnits4(r.MultiplierStep)
	c.movePerMinB, _ = toUnits4(r.MaxStepPerMinute)
	c.base4, _ = toUnits4(r.BasePrice)
	c.priceStep4, _ = toUnits4(r.PriceStep)

	// Demand and supply → utilisation → raw multiplier.
	c.demand = in.DemandForecast
	if !finite(c.demand) || c.demand < 0 {
		c.demand, c.demandSig = 0, sigInvalid
	}
	c.horizonOK = in.HorizonMinutes > 0
	if c.horizonOK {
		c.rate = c.demand / float64(in.HorizonMinutes)
	}
	c.supply = in.Supply
	switch {
	case !in.SupplyKnown:
		c.supplySig = sigUnknown
	case !finite(c.supply) || c.supply < 0:
		c.supplySig = sigInvalid
	}
	if c.supplySig == sigOK && !in.DemandUnknown {
		c.util = c.rate / max(c.supply, 1)
	} else {
		c.util = r.Threshold
	}
	c.excess = max(0, c.util-r.Threshold)
	surge := r.Sensitivity * c.excess * one // ≥ 0, may be +Inf
	if surge >= maxRawBps-one {
		c.raw, c.saturated = maxRawBps, true
	} else {
		c.raw = one + int64(math.Round(surge))
	}

	// Regulatory caps.
	c.capped = clamp(c.raw, c.minB, c.maxB)

	// Smoothing.
	c.elapsed = time.Minute
	switch p := in.Previous; {
	case p == nil:
		c.prevCase, c.prevGiven = prevFirst, one
	case !(p.Multiplier > 0) || math.IsInf(p.Multiplier, 1):
		c.prevCase, c.prevGiven = prevInvalid, one
	default:
		g := p.Multiplier * one
		if g > math.MaxInt32 { // far above any cap; keeps the conversion defined
			g = math.MaxInt32
		}
		c.prevGiven = int64(math.Round(g))
		// Wall-clock readings only (Round(0) drops monotonic ones), so that
		// a logged and reloaded Input gives the same elapsed time.
		at, pat := in.At.Round(0), p.At.Round(0)
		switch {
		case pat.IsZero():
			c.prevCase = prevNoTime
		case at.Before(pat):
			c.prevCase, c.elapsed = prevSkew, 0
		default:
			c.elapsed = at.Sub(pat)
		}
	}
	c.prevB = clamp(c.prevGiven, c.minB, c.maxB)
	c.allow = allowance(c.movePerMinB, c.elapsed)
	if span := c.maxB - c.minB; c.allow >= span {
		c.allow, c.allowAll = span, true
	}
	c.smoothed = clamp(c.capped, c.prevB-c.allow, c.prevB+c.allow)

	// Rounding to the step (half away from zero; all values are positive),
	// then back within the caps.
	q, rem := c.smoothed/c.stepB, c.smoothed%c.stepB
	if 2*rem >= c.stepB {
		q++
	}
	c.stepRound = q * c.stepB
	c.final = clamp(c.stepRound, c.minB, c.maxB)

	// Price: base (units of 1e-4) × multiplier (1e-4) is in units of 1e-8,
	// at most 1e10 × 2e5 = 2e15; PriceStep in the same units is at most 1e10.
	prod := c.base4 * c.final
	div := c.priceStep4 * one
	q, rem = prod/div, prod%div
	if 2*rem >= div {
		q++
	}
	c.price4 = q * c.priceStep4
}

// allowance is floor(perMinute × elapsed / 1 minute), computed exactly in
// 128 bits and saturated at math.MaxInt64.
func allowance(perMinute int64, elapsed time.Duration) int64 {
	if perMinute <= 0 || elapsed <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(perMinute), uint64(elapsed))
	if hi >= uint64(time.Minute) {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, uint64(time.Minute))
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// toUnits4 converts x to an exact whole number of units of 0.0001. It
// reports false when x is not finite, is too large, or has more than 4
// decimals (it is exact for any float64 parsed from a decimal with at most
// 4 decimals and at most 1e10 in magnitude).
func toUnits4(x float64) (int64, bool) {
	if !(math.Abs(x) <= 1e10) {
		return 0, false
	}
	n := math.Round(x * one)
	return int64(n), n/one == x
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func clamp(x, lo, hi int64) int64 {
	if x < lo {
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}
