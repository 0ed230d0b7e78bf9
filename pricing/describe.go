package pricing

import (
	"math"
	"strconv"
)

// factors builds the breakdown. The descriptions are written with strconv
// into one buffer and sliced out of one string: two allocations in all.
func (c *calc) factors(in *Input) []Factor {
	r := &in.Rule
	var ends [5]int
	b := make([]byte, 0, 768)

	// base
	b = append(b, "base price "...)
	b = appendDec(b, c.base4, 0)
	b = append(b, ' ')
	b = append(b, r.Currency...)
	b = append(b, "; quoted "...)
	b = appendDec(b, c.price4, decimals(c.priceStep4))
	b = append(b, ' ')
	b = append(b, r.Currency...)
	b = append(b, " at ×"...)
	b = appendMult(b, c.final)
	b = append(b, ", rounded half up to "...)
	b = appendDec(b, c.priceStep4, 0)
	ends[0] = len(b)

	// demand_supply
	b = c.describeDemand(b, in)
	ends[1] = len(b)

	// regulatory_cap
	b = append(b, "raw "...)
	b = appendMult(b, c.raw)
	switch {
	case c.raw > c.maxB:
		b = append(b, " capped at max "...)
		b = appendMult(b, c.maxB)
	case c.raw < c.minB:
		b = append(b, " raised to min "...)
		b = appendMult(b, c.minB)
	default:
		b = append(b, " within caps ["...)
		b = appendMult(b, c.minB)
		b = append(b, ", "...)
		b = appendMult(b, c.maxB)
		b = append(b, ']')
	}
	ends[2] = len(b)

	// smoothing
	b = c.describeSmoothing(b)
	ends[3] = len(b)

	// rounding
	b = appendMult(b, c.smoothed)
	b = append(b, " rounded half away from zero to step "...)
	b = appendMult(b, c.stepB)
	b = append(b, ": "...)
	b = appendMult(b, c.stepRound)
	if c.final != c.stepRound {
		b = append(b, ", brought back within caps to "...)
		b = appendMult(b, c.final)
	}
	ends[4] = len(b)

	s := string(b)
	return []Factor{
		{FactorBase, 1, s[:ends[0]]},
		{FactorDemandSupply, float64(c.raw-one) / one, s[ends[0]:ends[1]]},
		{FactorRegulatoryCap, float64(c.capped-c.raw) / one, s[ends[1]:ends[2]]},
		{FactorSmoothing, float64(c.smoothed-c.capped) / one, s[ends[2]:ends[3]]},
		{FactorRounding, float64(c.final-c.smoothed) / one, s[ends[3]:ends[4]]},
	}
}

func (c *calc) describeDemand(b []byte, in *Input) []byte {
	r := &in.Rule
	if in.DemandUnknown {
		b = append(b, "no demand forecast available: utilisation taken as threshold "...)
		b = appendNum(b, r.Threshold)
		return append(b, ", no surge from the missing signal"...)
	}
	if c.supplySig != sigOK {
		if c.supplySig == sigUnknown {
			b = append(b, "supply unknown"...)
		} else {
			b = append(b, "supply reading invalid ("...)
			b = appendNum(b, in.Supply)
			b = append(b, "), treated as unknown"...)
		}
		b = append(b, ": utilisation taken as threshold "...)
		b = appendNum(b, r.Threshold)
		b = append(b, ", no surge from the missing signal (forecast "...)
		b = c.appendForecast(b, in)
		return append(b, ')')
	}
	b = append(b, "forecast "...)
	b = c.appendForecast(b, in)
	b = append(b, " against "...)
	b = appendNum(b, c.supply)
	b = append(b, " available"...)
	if c.supply < 1 {
		b = append(b, " (counted as 1)"...)
	}
	b = append(b, ": utilisation "...)
	b = appendNum(b, c.util)
	if c.excess <= 0 {
		b = append(b, " ≤ threshold "...)
		b = appendNum(b, r.Threshold)
		return append(b, ", no surge"...)
	}
	b = append(b, " vs threshold "...)
	b = appendNum(b, r.Threshold)
	b = append(b, ": raw 1 + "...)
	b = appendNum(b, r.Sensitivity)
	b = append(b, " × "...)
	b = appendNum(b, c.excess)
	b = append(b, " = "...)
	b = appendMult(b, c.raw)
	if c.saturated {
		b = append(b, " (saturated)"...)
	}
	return b
}

// appendForecast writes "84 requests over 15 min", noting invalid inputs.
func (c *calc) appendForecast(b []byte, in *Input) []byte {
	if c.demandSig == sigInvalid {
		b = append(b, "invalid ("...)
		b = appendNum(b, in.DemandForecast)
		b = append(b, ", taken as 0)"...)
	} else {
		b = appendNum(b, c.demand)
	}
	b = append(b, " requests over "...)
	b = strconv.AppendInt(b, int64(in.HorizonMinutes), 10)
	b = append(b, " min"...)
	if !c.horizonOK {
		b = append(b, " (invalid horizon, demand rate taken as 0)"...)
	}
	return b
}

func (c *calc) describeSmoothing(b []byte) []byte {
	switch c.prevCase {
	case prevFirst:
		b = append(b, "first quote: from 1.00 with one minute of allowance"...)
	case prevInvalid:
		b = append(b, "previous multiplier invalid, ignored: from 1.00 with one minute of allowance"...)
	default:
		b = append(b, "previous "...)
		b = appendMult(b, c.prevGiven)
		if c.prevB != c.prevGiven {
			b = append(b, " (outside caps, taken as "...)
			b = appendMult(b, c.prevB)
			b = append(b, ')')
		}
		switch c.prevCase {
		case prevNoTime:
			b = append(b, " with no time: one minute of allowance"...)
		case prevSkew:
			b = append(b, " is later than the quote time (clock skew)"...)
		default:
			b = append(b, ", "...)
			b = appendNum(b, c.elapsed.Minutes())
			b = append(b, " min ago"...)
		}
	}
	switch {
	case c.allowAll:
		b = append(b, ": allowance covers the cap range ("...)
	case c.allow == 0:
		b = append(b, ": no allowance ("...)
	default:
		b = append(b, ": allowance ±"...)
		b = appendMult(b, c.allow)
		b = append(b, " ("...)
	}
	b = appendMult(b, c.movePerMinB)
	b = append(b, "/min)"...)
	if c.smoothed == c.capped {
		return append(b, ", not limiting"...)
	}
	b = append(b, ", limited to "...)
	return appendMult(b, c.smoothed)
}

// appendMult writes a basis-point amount as a decimal with 2 to 4 decimals.
func appendMult(b []byte, bps int64) []byte { return appendDec(b, bps, 2) }

// appendDec writes n units of 0.0001 exactly, with at least minDec and at
// most 4 decimals.
func appendDec(b []byte, n int64, minDec int) []byte {
	u := uint64(n)
	if n < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendUint(b, u/one, 10)
	frac, dec := u%one, 4
	for dec > minDec && frac%10 == 0 {
		frac /= 10
		dec--
	}
	if dec == 0 {
		return b
	}
	var d [5]byte
	d[0] = '.'
	for i := dec; i > 0; i-- {
		d[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(b, d[:dec+1]...)
}

// decimals is the number of decimals of n units of 0.0001 (0 to 4).
func decimals(n int64) int {
	d := 4
	for d > 0 && n%10 == 0 {
		n /= 10
		d--
	}
	return d
}

// appendNum writes a measured value rounded to 4 decimals, trailing zeros
// trimmed ("84", "0.28", "83.7422"); very large or non-finite values in %g.
func appendNum(b []byte, x float64) []byte {
	if !(math.Abs(x) < 1e9) {
		return strconv.AppendFloat(b, x, 'g', 6, 64)
	}
	return appendDec(b, int64(math.Round(x*one)), 0)
}
