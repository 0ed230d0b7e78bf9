package training

import (
	"math"
	"slices"
	"sort"
)

// maxQuantileSample bounds the values per feature sorted to find bin edges.
const maxQuantileSample = 200_000

// featureBins is the binning of one feature into k value bins plus the NaN
// bin k. Bin b holds the values in (upper[b-1], upper[b]]; upper[k-1] is
// +Inf. A split "bin <= b" is the model split "x <= thr[b]": thr[b] lies
// between the largest training value of bin b and the smallest of bin b+1,
// so both agree on every training row. thr[k-1] is +Inf: it separates NaN
// from everything else.
type featureBins struct {
	upper []float32
	thr   []float32
}

func (fb *featureBins) k() int { return len(fb.upper) }

func (fb *featureBins) bin(x float32) uint8 {
	if x != x {
		return uint8(len(fb.upper))
	}
	return uint8(sort.Search(len(fb.upper), func(i int) bool { return x <= fb.upper[i] }))
}

// binFeatures bins every column of X into at most maxBins value bins (≤ 255)
// from quantiles of (a deterministic sample of) its values. The result is
// column-major: bins[f*n+i] is the bin of X[i][f].
func binFeatures(X [][]float32, maxBins, workers int) ([]uint8, []featureBins) {
	n, nf := len(X), len(X[0])
	bins := make([]uint8, n*nf)
	fbs := make([]featureBins, nf)
	step := max(1, n/maxQuantileSample)
	parallelFor(workers, nf, func(f int) {
		sample := make([]float32, 0, min(n, maxQuantileSample+1))
		for i := 0; i < n; i += step {
			if v := X[i][f]; v == v {
				sample = append(sample, v)
			}
		}
		slices.Sort(sample)
		fb := &fbs[f]
		fb.upper = quantileUppers(sample, maxBins)
		k := fb.k()
		minIn := make([]float32, k)
		for b := range minIn {
			minIn[b] = float32(math.Inf(1))
		}
		col := bins[f*n : (f+1)*n]
		for i, r := range X {
			b := fb.bin(r[f])
			col[i] = b
			if int(b) < k && r[f] < minIn[b] {
				minIn[b] = r[f]
			}
		}
		fb.thr = make([]float32, k)
		for b := 0; b < k-1; b++ {
			lo, hi := fb.upper[b], minIn[b+1]
			t := float32((float64(lo) + float64(hi)) / 2)
			if !(t >= lo && t < hi) {
				t = lo
			}
			fb.thr[b] = t
		}
		if k > 0 {
			fb.thr[k-1] = float32(math.Inf(1))
		}
	})
	return bins, fbs
}

// quantileUppers returns the bin upper bounds for sorted non-NaN values: the
// distinct values when there are at most maxBins of them, else values at
// evenly spaced ranks (ties merge bins). The last bound is +Inf.
func quantileUppers(sorted []float32, maxBins int) []float32 {
	m := len(sorted)
	if m == 0 {
		return nil
	}
	distinct := slices.Compact(slices.Clone(sorted))
	var upper []float32
	if len(distinct) <= maxBins {
		upper = distinct
	} else {
		upper = make([]float32, 0, maxBins)
		for i := 1; i < maxBins; i++ {
			v := sorted[i*m/maxBins-1]
			if len(upper) == 0 || v > upper[len(upper)-1] {
				upper = append(upper, v)
			}
		}
		if last := sorted[m-1]; last > upper[len(upper)-1] {
			upper = append(upper, last)
		}
	}
	upper[len(upper)-1] = float32(math.Inf(1))
	return upper
}
