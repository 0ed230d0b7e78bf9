package training

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
)

// benchData is the benchmarks' synthetic data: n rows of nf features drawn
// with a fixed seed, mostly uniform on [-3, 3) with 2 % missing values in
// feature 3, a few low-cardinality columns, and a nonlinear target
// (interactions, a step, a sine) plus Gaussian noise.
func benchData(n, nf int) ([][]float32, []float32) {
	rng := rand.New(rand.NewPCG(2026, 11))
	X := make([][]float32, n)
	y := make([]float32, n)
	cells := make([]float32, n*nf)
	for i := range X {
		r := cells[i*nf : (i+1)*nf : (i+1)*nf]
		for j := range r {
			switch {
			case j%7 == 6:
				r[j] = float32(rng.IntN(12)) // hour-like
			default:
				r[j] = float32(rng.Float64()*6 - 3)
			}
		}
		if nf > 3 && rng.IntN(50) == 0 {
			r[3] = float32(math.NaN())
		}
		X[i] = r
		v := 3*math.Sin(float64(r[0])) + float64(r[1]*r[1]) + 2*float64(r[2])*boolf(r[1] > 0)
		if nf > 6 {
			v += 1.5*boolf(r[4] > 0.5) - float64(r[5])*float64(r[6])/6
		}
		y[i] = float32(v + rng.NormFloat64())
	}
	return X, y
}

// BenchmarkTrainLarge is `make bench-train`: 1,000,000 rows × 20 features,
// 300 trees of depth 6, L2, all cores. Target: ≤ 60 s per fit on the
// project's 2-core machine.
func BenchmarkTrainLarge(b *testing.B) {
	const rows, features = 1_000_000, 20
	X, y := benchData(rows, features)
	opts := Options{NumTrees: 300, MaxDepth: 6}
	b.ResetTimer()
	var trees int
	for b.Loop() {
		e, err := Train(context.Background(), X, y, opts)
		if err != nil {
			b.Fatal(err)
		}
		trees = len(e.Trees)
	}
	if trees != opts.NumTrees {
		b.Fatalf("%d trees, want %d", trees, opts.NumTrees)
	}
	secs := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(secs, "s/fit")
	b.ReportMetric(rows/secs, "rows/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkTrainSubtraction compares building both children's histograms
// with deriving the larger one as parent − smaller (100k rows × 20
// features, 100 trees of depth 6).
func BenchmarkTrainSubtraction(b *testing.B) {
	const rows = 100_000
	X, y := benchData(rows, 20)
	for _, bc := range []struct {
		name string
		off  bool
	}{{"subtraction", false}, {"both-children", true}} {
		b.Run(bc.name, func(b *testing.B) {
			opts := Options{NumTrees: 100, MaxDepth: 6, noSubtraction: bc.off}
			for b.Loop() {
				if _, err := Train(context.Background(), X, y, opts); err != nil {
					b.Fatal(err)
				}
			}
			secs := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(secs, "s/fit")
			b.ReportMetric(rows/secs, "rows/s")
		})
	}
}
