package stats

import (
	"math"
	"slices"
	"sort"

	"gonum.org/v1/gonum/stat/distuv"
)

// Holm returns the Holm (1979) step-down adjusted p-values of p, in the
// same order as p: with the p-values sorted ascending p(1) ≤ … ≤ p(m), the
// adjusted value of p(i) is max over j ≤ i of min(1, (m−j+1)·p(j)). It equals
// R's p.adjust(p, "holm") and controls the family-wise error rate. NaN or
// out-of-range inputs are treated as 1 (no evidence).
func Holm(p []float64) []float64 {
	m := len(p)
	out := make([]float64, m)
	idx := order(p)
	running := 0.0
	for rank, i := range idx {
		a := math.Min(1, float64(m-rank)*finiteP(p[i]))
		running = math.Max(running, a)
		out[i] = running
	}
	return out
}

// BenjaminiHochberg returns the Benjamini–Hochberg (1995) step-up adjusted
// p-values (q-values) of p, in the same order as p: with the p-values
// sorted ascending, the adjusted value of p(i) is min over j ≥ i of
// min(1, m/j·p(j)). It equals R's p.adjust(p, "BH") and controls the false
// discovery rate. NaN or out-of-range inputs are treated as 1.
func BenjaminiHochberg(p []float64) []float64 {
	m := len(p)
	out := make([]float64, m)
	idx := order(p)
	running := 1.0
	for rank := m - 1; rank >= 0; rank-- {
		i := idx[rank]
		q := math.Min(1, float64(m)/float64(rank+1)*finiteP(p[i]))
		running = math.Min(running, q)
		out[i] = running
	}
	return out
}

// order is the permutation sorting p ascending (stable, NaN as 1).
func order(p []float64) []int {
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return finiteP(p[idx[a]]) < finiteP(p[idx[b]]) })
	return idx
}

// SampleRatioMismatch is Pearson's chi-square goodness-of-fit test of the
// observed unit counts per variant against the expected allocation weights
// (which need not sum to 1; they are normalised): chi2 = Σ (oᵢ − eᵢ)²/eᵢ with
// eᵢ = N·wᵢ/Σw, and p its upper tail under the chi-square distribution with
// k−1 degrees of freedom (k the number of variants with a positive weight).
// A small p (conventionally < 0.001) means the assignment or the exposure
// logging is broken.
//
// Degenerate inputs: slices of different lengths, fewer than two variants
// with a positive weight, or no units give chi2 = 0 and p = 1. A variant with
// a non-positive weight is ignored when its count is 0; when it has units
// the mismatch is certain and the result is chi2 = math.MaxFloat64, p = 0.
func SampleRatioMismatch(counts, weights []float64) (chi2, p float64) {
	if len(counts) != len(weights) {
		return 0, 1
	}
	var n, w float64
	k := 0
	for i, c := range counts {
		if weights[i] > 0 {
			w += weights[i]
			n += c
			k++
		} else if c > 0 {
			return math.MaxFloat64, 0
		}
	}
	if k < 2 || !(n > 0) || !(w > 0) || math.IsInf(w, 0) {
		return 0, 1
	}
	for i, c := range counts {
		if weights[i] > 0 {
			e := n * weights[i] / w
			chi2 += (c - e) * (c - e) / e
		}
	}
	if math.IsNaN(chi2) {
		return 0, 1
	}
	if math.IsInf(chi2, 0) {
		return math.MaxFloat64, 0
	}
	return chi2, finiteP(distuv.ChiSquared{K: float64(k - 1)}.Survival(chi2))
}

// MinimumDetectableEffect is the smallest absolute difference of means that
// a two-sided fixed-horizon test at level alpha detects with the given power
// when the variants have nC and nT units and per-unit variances varC and
// varT: (z_{1−α/2} + z_{power})·sqrt(varC/nC + varT/nT). Divide by the
// control mean for a relative MDE. alpha outside (0, 1) defaults to 0.05 and
// power outside (0, 1) to 0.8; it returns 0 when a variant has no units or
// the variances are not positive (the MDE is then undefined).
func MinimumDetectableEffect(varC, varT, nC, nT, alpha, power float64) float64 {
	alpha, power = defaultAlpha(alpha), defaultPower(power)
	if !(nC > 0 && nT > 0) {
		return 0
	}
	v := math.Max(0, varC)/nC + math.Max(0, varT)/nT
	if !(v > 0) {
		return 0
	}
	return finite((zQuantile(1-alpha/2)+zQuantile(power))*math.Sqrt(v), 0)
}

// Winsorize returns a copy of xs in which every value above the pct
// quantile of xs is replaced by that quantile (e.g. pct = 0.99 caps the top
// 1%). The quantile interpolates linearly between order statistics (R's
// type 7, numpy's default): with the values sorted x(0) ≤ … ≤ x(n−1) and
// h = (n−1)·pct, it is x(⌊h⌋) + (h−⌊h⌋)·(x(⌊h⌋+1) − x(⌊h⌋)). Production
// caps in ClickHouse SQL; this is for tests and callers holding raw values.
// pct outside (0, 1), or fewer than two values, returns an unchanged copy.
// NaN values are left in place and ignored by the quantile.
func Winsorize(xs []float64, pct float64) []float64 {
	out := slices.Clone(xs)
	if out == nil {
		out = []float64{}
	}
	if !(pct > 0 && pct < 1) {
		return out
	}
	sorted := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			sorted = append(sorted, x)
		}
	}
	if len(sorted) < 2 {
		return out
	}
	slices.Sort(sorted)
	h := float64(len(sorted)-1) * pct
	lo := int(math.Floor(h))
	limit := sorted[lo]
	if lo+1 < len(sorted) {
		limit += (h - float64(lo)) * (sorted[lo+1] - sorted[lo])
	}
	for i, x := range out {
		if x > limit {
			out[i] = limit
		}
	}
	return out
}

// defaultAlpha is alpha, or 0.05 when alpha is not in (0, 1).
func defaultAlpha(alpha float64) float64 {
	if !(alpha > 0 && alpha < 1) {
		return 0.05
	}
	return alpha
}

// defaultPower is power, or 0.8 when power is not in (0, 1).
func defaultPower(power float64) float64 {
	if !(power > 0 && power < 1) {
		return 0.8
	}
	return power
}
