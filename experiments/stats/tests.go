package stats

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// TwoProportionZ is the pooled two-proportion z-test of treatment against
// control, each given as the number of units N and the number of successes
// Sum: z = (p̂t − p̂c) / sqrt(p̂(1−p̂)(1/nc + 1/nt)) with p̂ the pooled
// proportion, and the two-sided p-value 2·(1−Φ(|z|)). It equals R's
// prop.test(correct = FALSE) (whose X-squared is z²). With no units in a
// variant, or a pooled proportion of 0 or 1, it returns z = 0 and p = 1.
func TwoProportionZ(c, t Moments) (z, p float64) {
	if !(c.N > 0 && t.N > 0) {
		return 0, 1
	}
	pc, pt := c.Sum/c.N, t.Sum/t.N
	pool := math.Min(1, math.Max(0, (c.Sum+t.Sum)/(c.N+t.N)))
	se := math.Sqrt(pool * (1 - pool) * (1/c.N + 1/t.N))
	if !(se > 0) {
		return 0, 1
	}
	z = finite((pt-pc)/se, 0)
	return z, twoSidedNormalP(z)
}

// WelchT is Welch's unequal-variance t-test of the treatment mean against the
// control mean: t = (x̄t − x̄c)/sqrt(st²/nt + sc²/nc), the Welch–Satterthwaite
// degrees of freedom and the two-sided p-value from Student's t with that
// many degrees of freedom. It equals R's t.test(var.equal = FALSE). When the
// standard error is 0 (fewer than two units in both variants, or constant
// values) it returns t = 0, df = 0 and p = 1.
func WelchT(c, t Moments) (tstat, df, p float64) {
	return welch(c.N, c.Mean(), c.Variance(), t.N, t.Mean(), t.Variance())
}

// welch is WelchT on summary statistics (n, mean, per-unit variance).
func welch(nc, mc, vc, nt, mt, vt float64) (tstat, df, p float64) {
	if !(nc > 0 && nt > 0) {
		return 0, 0, 1
	}
	df = welchDF(nc, vc, nt, vt)
	se := math.Sqrt(vc/nc + vt/nt)
	if !(se > 0) || !(df > 0) {
		return 0, 0, 1
	}
	tstat = finite((mt-mc)/se, 0)
	return tstat, df, studentTwoSidedP(tstat, df)
}

// welchDF is the Welch–Satterthwaite degrees of freedom
// (a + b)² / (a²/(nc−1) + b²/(nt−1)) with a = vc/nc and b = vt/nt; a variant
// whose term a or b is 0 contributes nothing to the denominator. 0 when both
// terms are 0.
func welchDF(nc, vc, nt, vt float64) float64 {
	a, b := vc/nc, vt/nt
	var den float64
	if a > 0 && nc > 1 {
		den += a * a / (nc - 1)
	}
	if b > 0 && nt > 1 {
		den += b * b / (nt - 1)
	}
	if !(den > 0) {
		return 0
	}
	return finite((a+b)*(a+b)/den, 0)
}

// studentTwoSidedP is 2·P(T_df > |t|).
func studentTwoSidedP(t, df float64) float64 {
	if !(df > 0) || math.IsNaN(t) {
		return 1
	}
	if t == 0 {
		return 1
	}
	return finiteP(2 * distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Survival(math.Abs(t)))
}

// studentQuantile is the q quantile of Student's t with df degrees of
// freedom; the normal quantile when df is not finite or very large.
func studentQuantile(q, df float64) float64 {
	if !(df > 0) || math.IsInf(df, 0) || df > 1e7 {
		return zQuantile(q)
	}
	return finite(distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(q), zQuantile(q))
}
