package stats

import "math"

// Options tune Compare. Zero values take the documented defaults.
type Options struct {
	// Alpha is the two-sided significance level of every test and the
	// coverage 1−Alpha of every interval. Default (and for values outside
	// (0, 1)): 0.05.
	Alpha float64
	// MixtureVariance is τ², the variance of the N(0, τ²) mixture over the
	// absolute difference in the mSPRT. When 0 (or negative) it is tuned so
	// that the confidence sequence is narrowest when the experiment reaches
	// PlannedN units per variant: τ² = r·V*, with V* the variance of the
	// difference estimator at the planned size (the current per-unit
	// variances and allocation, V·n̄/PlannedN with n̄ the current mean units
	// per variant) and r the root of r = 2·log(1/α) + log(1+r) (≈ 8.22 at
	// α = 0.05; see Howard et al. 2021). For the always-valid guarantee τ²
	// should not depend on the outcomes: pass a value fixed before the data,
	// or keep PlannedN fixed (the per-unit variance is then the only
	// data-dependent input, and it is not informative about the lift).
	MixtureVariance float64
	// PlannedN is the planned number of units per variant, used to tune τ²
	// when MixtureVariance is 0. Default: the current mean of the two
	// variants' N.
	PlannedN float64
	// Binomial marks a conversion metric (y ∈ {0,1} per unit): per-unit
	// variance p̂(1−p̂), normal intervals, pooled two-proportion z-test.
	// Otherwise the metric is continuous: sample variances, Welch's t-test
	// and t intervals.
	Binomial bool
	// Power is the power of the minimum detectable effect the caller
	// computes alongside (MinimumDetectableEffect); Compare itself does not
	// use it. Default 0.8.
	Power float64
}

// withDefaults fills the defaults in.
func (o Options) withDefaults() Options {
	o.Alpha, o.Power = defaultAlpha(o.Alpha), defaultPower(o.Power)
	if !(o.MixtureVariance > 0) || math.IsInf(o.MixtureVariance, 0) {
		o.MixtureVariance = 0
	}
	if !(o.PlannedN > 0) || math.IsInf(o.PlannedN, 0) {
		o.PlannedN = 0
	}
	return o
}

// Interval is a confidence interval [Lower, Upper].
type Interval struct{ Lower, Upper float64 }

// Comparison of one treatment against control on one metric. When CUPED is
// true every figure is computed from the covariate-adjusted means and
// variances. All fields are finite.
type Comparison struct {
	// ControlMean and TreatmentMean are the variant means (CUPED-adjusted
	// when CUPED is true).
	ControlMean, TreatmentMean float64
	// ControlSE and TreatmentSE are the standard errors of those means,
	// sqrt(variance/N).
	ControlSE, TreatmentSE float64
	// AbsLift is TreatmentMean − ControlMean.
	AbsLift float64
	// AbsCI is the fixed-horizon 1−α confidence interval of AbsLift:
	// normal for a binomial metric, Welch t (Welch–Satterthwaite degrees
	// of freedom) for a continuous one.
	AbsCI Interval
	// RelLift is AbsLift/|ControlMean|, i.e. TreatmentMean/ControlMean − 1
	// for a positive control mean (the absolute value keeps the sign of the
	// lift for a negative control mean). 0 when the control mean is 0.
	RelLift float64
	// RelCI is the normal 1−α interval of RelLift with the delta-method
	// variance σt²/(nt·μc²) + μt²·σc²/(nc·μc⁴); {0, 0} when the control mean
	// is 0.
	RelCI Interval
	// PValue is the two-sided fixed-horizon p-value, valid at a single
	// pre-planned look only: the pooled two-proportion z-test for a
	// binomial metric (the unpooled z-test on the adjusted means and
	// variances under CUPED), Welch's t-test for a continuous one.
	PValue float64
	// SequentialPValue is the always-valid mSPRT p-value min(1, 1/Λ) at this
	// look: the probability that it ever falls below α over any number of
	// looks is at most α under the null. Callers that want the usual
	// monotone version take the running minimum over looks.
	SequentialPValue float64
	// SequentialCI is the always-valid 1−α confidence sequence of AbsLift at
	// this look: it covers the true lift at every look simultaneously with
	// probability ≥ 1−α (intersect over looks for a monotone version).
	SequentialCI Interval
	// ChanceToBeat is the Bayesian probability that the treatment is better
	// than control (treatment mean > control mean), Φ(RelLift/se(RelLift)):
	// a flat prior and a normal approximation on the relative lift with
	// the delta-method standard error. When the control mean is 0 the
	// absolute lift is used instead; 0.5 when the lift has no variance.
	ChanceToBeat float64
	// ExpectedLoss is the Bayesian expected loss of shipping the treatment,
	// in relative-lift units: E[max(0, −lift)] = σφ(μ/σ) − μΦ(−μ/σ) for the
	// same normal posterior N(μ = RelLift, σ = se(RelLift)); max(0, −RelLift)
	// when σ is 0, and 0 when the control mean is 0.
	ExpectedLoss float64
	// CUPED reports that the covariate adjustment was applied: both
	// variants have a usable covariate over the same units as the metric.
	CUPED bool
	// VarianceReduction is 1 − Var_adjusted/Var_unadjusted of the absolute
	// lift estimator (both with the n−1 sample variances); 0 without CUPED.
	// It can be slightly negative when the covariate is useless (θ is pooled
	// over the variants, not fitted to each).
	VarianceReduction float64
}

// variant is one variant's summary for inference: units, mean, per-unit
// variance.
type variant struct{ n, mean, v float64 }

// Compare compares the treatment with the control on one metric from their
// sufficient statistics.
//
// CUPED (Deng, Xu, Kohavi and Walker, WSDM 2013) applies when both variants
// have a covariate (HasCovariate) over the same units as the metric
// (X.N == Y.N). θ is the pooled within-variant regression slope
// Σ_v Sxy_v / Σ_v Sxx_v (centred sums of cross products and squares within
// each variant, so that a treatment effect does not leak into θ); the
// adjusted mean of variant v is Ȳ_v − θ(X̄_v − X̄), X̄ the mean of X over both
// variants, and its per-unit variance var(Y) − 2θ·cov(X,Y) + θ²·var(X)
// within the variant. For a binomial metric with CUPED the fixed-horizon
// test is the unpooled z-test on those adjusted means and variances (the
// pooled test needs proportions, which adjusted means are not).
//
// Degenerate inputs never give NaN or ±Inf: when a variant has no units (or
// a non-finite sum, which is treated the same) the
// means are reported and everything else is the no-evidence result (lifts
// 0, intervals {0, 0}, p-values 1, ChanceToBeat 0.5); when the variance of
// the lift estimator is 0 (fewer than two units, or constant values) the
// p-values are 1, ChanceToBeat is 0.5 and the intervals collapse to the
// point estimate.
func Compare(control, treatment Paired, opts Options) Comparison {
	o := opts.withDefaults()
	c := summary(control.Y, o.Binomial)
	t := summary(treatment.Y, o.Binomial)
	var res Comparison

	if cupedApplies(control, treatment) {
		if theta, ok := cupedTheta(control, treatment); ok {
			xBar := (control.X.Sum + treatment.X.Sum) / (control.X.N + treatment.X.N)
			ca := adjust(control, theta, xBar)
			ta := adjust(treatment, theta, xBar)
			// Unadjusted reference with the same (n−1) variances.
			unadj := control.Y.Variance()/control.Y.N + treatment.Y.Variance()/treatment.Y.N
			adj := ca.v/ca.n + ta.v/ta.n
			res.CUPED = true
			if unadj > 0 {
				res.VarianceReduction = 1 - adj/unadj
			}
			c, t = ca, ta
		}
	}

	res.ControlMean, res.TreatmentMean = c.mean, t.mean
	if c.n > 0 {
		res.ControlSE = math.Sqrt(c.v / c.n)
	}
	if t.n > 0 {
		res.TreatmentSE = math.Sqrt(t.v / t.n)
	}
	res.PValue, res.SequentialPValue, res.ChanceToBeat = 1, 1, 0.5
	if !(c.n > 0 && t.n > 0) {
		return sanitize(res)
	}

	alpha := o.Alpha
	zc := zQuantile(1 - alpha/2)
	delta := t.mean - c.mean
	v := c.v/c.n + t.v/t.n
	se := math.Sqrt(v)
	res.AbsLift = delta
	res.AbsCI = Interval{delta, delta}
	res.SequentialCI = res.AbsCI

	// Fixed horizon.
	if se > 0 {
		switch {
		case o.Binomial && !res.CUPED:
			_, res.PValue = TwoProportionZ(control.Y, treatment.Y)
			res.AbsCI = Interval{delta - zc*se, delta + zc*se}
		case o.Binomial:
			res.PValue = twoSidedNormalP(delta / se)
			res.AbsCI = Interval{delta - zc*se, delta + zc*se}
		default:
			_, df, p := welch(c.n, c.mean, c.v, t.n, t.mean, t.v)
			res.PValue = p
			q := studentQuantile(1-alpha/2, df)
			res.AbsCI = Interval{delta - q*se, delta + q*se}
		}
	}

	// Sequential (mSPRT).
	tau2 := o.MixtureVariance
	if tau2 == 0 {
		tau2 = mixtureVariance(v, (c.n+t.n)/2, o.PlannedN, alpha)
	}
	p, half := msprt(delta, v, tau2, alpha)
	res.SequentialPValue = p
	res.SequentialCI = Interval{delta - half, delta + half}

	// Relative lift (delta method) and the Bayesian read on it.
	if mc := c.mean; mc != 0 {
		res.RelLift = delta / math.Abs(mc)
		varRel := t.v/(t.n*mc*mc) + t.mean*t.mean*c.v/(c.n*mc*mc*mc*mc)
		seRel := math.Sqrt(varRel)
		if seRel > 0 && !math.IsInf(seRel, 0) {
			res.RelCI = Interval{res.RelLift - zc*seRel, res.RelLift + zc*seRel}
			m := res.RelLift / seRel
			res.ChanceToBeat = phi(m)
			res.ExpectedLoss = seRel*normalDensity(m) - res.RelLift*phi(-m)
		} else {
			res.RelCI = Interval{res.RelLift, res.RelLift}
			res.ExpectedLoss = math.Max(0, -res.RelLift)
		}
	} else if se > 0 {
		res.ChanceToBeat = phi(delta / se)
	}
	return sanitize(res)
}

// summary is one variant's (n, mean, per-unit variance): p̂(1−p̂) for a
// binomial metric, the sample variance otherwise. Moments with a
// non-finite field are treated as a variant without units.
func summary(m Moments, binomial bool) variant {
	if !isFinite(m.N) || !isFinite(m.Sum) || !isFinite(m.SumSq) {
		return variant{}
	}
	n := math.Max(0, finite(m.N, 0))
	mean := m.Mean()
	if binomial {
		p := math.Min(1, math.Max(0, mean))
		return variant{n, mean, p * (1 - p)}
	}
	return variant{n, mean, m.Variance()}
}

// isFinite reports whether x is neither NaN nor ±Inf.
func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// cupedApplies: both variants have a usable covariate over the same units
// as the metric, and every sum is finite.
func cupedApplies(c, t Paired) bool {
	for _, x := range []float64{c.Y.N, c.Y.Sum, c.Y.SumSq, c.X.Sum, c.X.SumSq, c.XY, t.Y.N, t.Y.Sum, t.Y.SumSq, t.X.Sum, t.X.SumSq, t.XY} {
		if !isFinite(x) {
			return false
		}
	}
	return c.HasCovariate() && t.HasCovariate() && c.X.N == c.Y.N && t.X.N == t.Y.N
}

// cupedTheta is the pooled within-variant slope Σ Sxy / Σ Sxx.
func cupedTheta(c, t Paired) (float64, bool) {
	sxy := c.covariance()*(c.Y.N-1) + t.covariance()*(t.Y.N-1)
	sxx := c.X.Variance()*(c.X.N-1) + t.X.Variance()*(t.X.N-1)
	theta := sxy / sxx
	if !(sxx > 0) || math.IsNaN(theta) || math.IsInf(theta, 0) {
		return 0, false
	}
	return theta, true
}

// adjust is the CUPED-adjusted summary of one variant.
func adjust(p Paired, theta, xBar float64) variant {
	mean := p.Y.Mean() - theta*(p.X.Mean()-xBar)
	v := p.Y.Variance() - 2*theta*p.covariance() + theta*theta*p.X.Variance()
	return variant{p.Y.N, finite(mean, p.Y.Mean()), math.Max(0, finite(v, 0))}
}

// sanitize replaces any non-finite figure by its no-evidence value.
func sanitize(r Comparison) Comparison {
	for _, f := range []*float64{
		&r.ControlMean, &r.TreatmentMean, &r.ControlSE, &r.TreatmentSE,
		&r.AbsLift, &r.AbsCI.Lower, &r.AbsCI.Upper, &r.RelLift, &r.RelCI.Lower, &r.RelCI.Upper,
		&r.SequentialCI.Lower, &r.SequentialCI.Upper, &r.ExpectedLoss, &r.VarianceReduction,
	} {
		*f = finite(*f, 0)
	}
	r.PValue = finiteP(r.PValue)
	r.SequentialPValue = finiteP(r.SequentialPValue)
	if math.IsNaN(r.ChanceToBeat) || math.IsInf(r.ChanceToBeat, 0) {
		r.ChanceToBeat = 0.5
	}
	return r
}
