package stats

import "math"

// The mixture sequential probability ratio test (mSPRT) of Johari, Pekelis
// and Walsh, "Always valid inference: continuous monitoring of A/B tests",
// Operations Research 70(3), 2022 (arXiv:1512.04922, 2015), for the
// difference of means Δ with a normal mixture N(0, τ²) over the alternative.
// With V the variance of the estimator Δ̂ at the current look, the mixture
// likelihood ratio against Δ = 0 is
//
//	Λ = sqrt(V/(V+τ²)) · exp(τ²Δ̂² / (2V(V+τ²)))
//
// and, because Λ is a non-negative martingale under the null, the
// probability that 1/Λ ever falls below α over an unbounded sequence of looks
// is at most α (Ville's inequality). Inverting the test gives the confidence
// sequence Δ̂ ± sqrt((2V(V+τ²)/τ²)·(log(1/α) + ½·log((V+τ²)/V))), which
// covers Δ at every look simultaneously with probability ≥ 1−α.

// mixtureRatio returns the optimal ratio r = τ²/V at which the confidence
// sequence is narrowest, for level alpha: the half-width squared is
// 2V·(1+1/r)·(log(1/α) + ½·log(1+r)), whose derivative in r vanishes at the
// root of r = 2·log(1/α) + log(1+r) (for α = 0.05, r ≈ 8.22), found here
// by fixed-point iteration. Howard, Ramdas, McAuliffe and Sekhon,
// "Time-uniform, nonparametric, nonasymptotic confidence sequences" (Ann.
// Statist. 49(2), 2021) give the closed-form approximation
// r ≈ 2·log(1/α) + log(1 + 2·log(1/α)) (≈ 7.94 at α = 0.05), one step of the
// same iteration; GrowthBook tunes its mixture the same way from a planned
// sample size.
func mixtureRatio(alpha float64) float64 {
	l := 2 * math.Log(1/alpha)
	r := l
	for range 100 { // a contraction: |d/dr log(1+r)| = 1/(1+r) < 1
		next := l + math.Log1p(r)
		if math.Abs(next-r) < 1e-12*r {
			return next
		}
		r = next
	}
	return r
}

// mixtureVariance is the default τ²: the optimal ratio times the variance of
// the difference estimator at the planned size, so that the confidence
// sequence is narrowest when the experiment reaches plannedN units per
// variant. v is the variance of Δ̂ at the current look with nMean units per
// variant on average; at the planned size (same allocation, same per-unit
// variances) it is v·nMean/plannedN.
func mixtureVariance(v, nMean, plannedN, alpha float64) float64 {
	if !(plannedN > 0) {
		plannedN = nMean
	}
	if !(nMean > 0) || !(plannedN > 0) {
		return 0
	}
	return mixtureRatio(alpha) * v * nMean / plannedN
}

// msprt returns the always-valid p-value min(1, 1/Λ) and the half-width of
// the confidence sequence for an estimate delta with estimator variance v
// and mixture variance tau2. With v or tau2 not positive there is no
// evidence: p = 1 and half-width 0.
func msprt(delta, v, tau2, alpha float64) (p, half float64) {
	if !(v > 0) || !(tau2 > 0) {
		return 1, 0
	}
	s := v + tau2
	logLambda := 0.5*math.Log(v/s) + tau2*delta*delta/(2*v*s)
	p = 1.0
	if logLambda > 0 {
		p = math.Exp(-logLambda)
	}
	half = math.Sqrt(2 * v * s / tau2 * (math.Log(1/alpha) + 0.5*math.Log(s/v)))
	return finiteP(p), finite(half, 0)
}
