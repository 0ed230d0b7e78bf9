package stats

import "math"

// Moments are the sufficient statistics of one metric over the units of one
// variant: the number of units N, the sum of the per-unit values Sum and the
// sum of their squares SumSq. For a binomial metric (y ∈ {0,1}) SumSq equals
// Sum.
type Moments struct{ N, Sum, SumSq float64 }

// Mean is the sample mean Sum/N; 0 when N is not positive (or the sums are
// not finite).
func (m Moments) Mean() float64 {
	if !(m.N > 0) {
		return 0
	}
	return finite(m.Sum/m.N, 0)
}

// Variance is the sample variance with the n−1 denominator,
// (SumSq − Sum²/N)/(N−1); 0 when N < 2, and never negative (rounding in the
// one-pass formula is clamped at 0).
func (m Moments) Variance() float64 {
	if !(m.N >= 2) {
		return 0
	}
	v := (m.SumSq - m.Sum*m.Sum/m.N) / (m.N - 1)
	if !(v > 0) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// Paired adds a pre-period covariate X (for CUPED) per unit to the metric
// Y: the moments of X over the same units and the sum of the products ΣXY.
type Paired struct {
	Y, X Moments
	XY   float64
}

// HasCovariate reports whether the covariate can be used: X has units and a
// positive variance.
func (p Paired) HasCovariate() bool { return p.X.N > 0 && p.X.Variance() > 0 }

// covariance is the sample covariance of X and Y (n−1 denominator), 0 when
// fewer than two units.
func (p Paired) covariance() float64 {
	n := p.Y.N
	if !(n >= 2) {
		return 0
	}
	return finite((p.XY-p.X.Sum*p.Y.Sum/n)/(n-1), 0)
}

// finite returns x, or fallback when x is NaN or ±Inf.
func finite(x, fallback float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return fallback
	}
	return x
}

// finiteP returns x clamped to [0, 1], or 1 when x is NaN or ±Inf: the
// p-value of no evidence.
func finiteP(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	return math.Min(1, math.Max(0, x))
}

// phi is the standard normal CDF Φ.
func phi(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

// normalDensity is the standard normal density φ.
func normalDensity(z float64) float64 { return math.Exp(-z*z/2) / math.Sqrt(2*math.Pi) }

// twoSidedNormalP is 2·(1−Φ(|z|)), computed without cancellation.
func twoSidedNormalP(z float64) float64 {
	if math.IsNaN(z) {
		return 1
	}
	return finiteP(math.Erfc(math.Abs(z) / math.Sqrt2))
}

// zQuantile is Φ⁻¹(p) for p in (0, 1).
func zQuantile(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }
