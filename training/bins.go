package training

import (
	"math"
	"slices"
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
	// The first bin whose upper bound is >= x (the last bound is +Inf).
	lo, hi := 0, len(fb.upper)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if fb.upper[m] < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return uint8(lo)
}

// binRowsChunk is the number of rows binned by one task.
const binRowsChunk = 16384

// binFeatures bins every column of X into at most maxBins value bins (≤ 255)
// from quantiles of (a deterministic sample of) its values. It returns the
// bins twice: row-major, bins[i*nf+f], for histograms (one row's bins
// together), and column-major, cols[f*n+i], for partitions (one feature's
// bins together).
func binFeatures(X [][]float32, maxBins, workers int) (bins, cols []uint8, fbs []featureBins) {
	n, nf := len(X), len(X[0])
	bins = make([]uint8, n*nf)
	cols = make([]uint8, n*nf)
	fbs = make([]featureBins, nf)
	step := max(1, n/maxQuantileSample)
	parallelFor(workers, nf, func(f int) {
		sample := make([]float32, 0, min(n, maxQuantileSample+1))
		for i := 0; i < n; i += step {
			if v := X[i][f]; v == v {
				sample = append(sample, v)
			}
		}
		slices.Sort(sample)
		fbs[f].upper = quantileUppers(sample, maxBins)
	})
	// Bin the rows by chunks; each chunk also records the smallest value of
	// every bin (exact, so the chunking does not matter).
	chunks := (n + binRowsChunk - 1) / binRowsChunk
	inf := float32(math.Inf(1))
	minIn := make([][]float32, chunks) // per chunk: nf × 256
	parallelFor(workers, chunks, func(c int) {
		m := make([]float32, nf*256)
		for i := range m {
			m[i] = inf
		}
		for i := c * binRowsChunk; i < min(n, (c+1)*binRowsChunk); i++ {
			row, out := X[i], bins[i*nf:(i+1)*nf]
			for f := range out {
				v := row[f]
				b := fbs[f].bin(v)
				out[f] = b
				cols[f*n+i] = b
				if v < m[f*256+int(b)] {
					m[f*256+int(b)] = v
				}
			}
		}
		minIn[c] = m
	})
	parallelFor(workers, nf, func(f int) {
		fb := &fbs[f]
		k := fb.k()
		fb.thr = make([]float32, k)
		for b := 0; b < k-1; b++ {
			lo, hi := fb.upper[b], inf
			for _, m := range minIn {
				hi = min(hi, m[f*256+b+1])
			}
			t := float32((float64(lo) + float64(hi)) / 2)
			if !(t >= lo && t < hi) {
				t = lo
			}
			fb.thr[b] = t
		}
		if k > 0 {
			fb.thr[k-1] = inf
		}
	})
	return bins, cols, fbs
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
