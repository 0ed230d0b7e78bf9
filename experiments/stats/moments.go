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

// Ratio is a ratio metric ΣY/ΣX over units (cancellations per booking,
// revenue per order) as the Moments of its linearization, so that Compare
// and the tests treat it like a mean per unit: the delta method of Deng,
// Knoblich and Lu (KDD 2018). The unit stays the randomisation unit (a
// user with three bookings is one observation), which keeps the variance
// honest when one unit's outcomes are correlated. Mean() is R = ΣY/ΣX and
// Variance() is [var(Y) − 2R·cov(X,Y) + R²·var(X)] / X̄², the per-unit
// variance of the linearized Y − R·X divided by X̄²; y and x are the
// moments of the numerator and the denominator over the same N units,
// xy = ΣXY. A ratio without any denominator (ΣX = 0) has N units, mean 0
// and variance 0: no evidence.
func Ratio(y, x Moments, xy float64) Moments {
	n := y.N
	if !(n > 0) || !(x.Sum > 0) || !isFinite(y.Sum) || !isFinite(xy) {
		return Moments{N: math.Max(0, finite(n, 0))}
	}
	r := y.Sum / x.Sum
	xBar := x.Sum / n
	v := 0.0
	if n >= 2 {
		cov := (xy - x.Sum*y.Sum/n) / (n - 1)
		v = math.Max(0, (y.Variance()-2*r*cov+r*r*x.Variance())/(xBar*xBar))
	}
	// Moments with mean r and sample variance v over n units.
	return Moments{N: n, Sum: n * r, SumSq: v*(n-1) + n*r*r}
}
