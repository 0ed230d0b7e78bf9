package training

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/surgeworks/surge/model"
)

func column(vals ...float32) [][]float32 {
	X := make([][]float32, len(vals))
	for i, v := range vals {
		X[i] = []float32{v}
	}
	return X
}

// step: x = 0..9, y = 0 below 5 and 1 from 5.
func step() ([][]float32, []float32) {
	X := column(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	y := []float32{0, 0, 0, 0, 0, 1, 1, 1, 1, 1}
	return X, y
}

func TestTrainHandComputed(t *testing.T) {
	nan := float32(math.NaN())
	exact := Options{NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1}
	type probe struct {
		x    float32
		want float32
	}
	tests := []struct {
		name   string
		X      [][]float32
		y      []float32
		opts   Options
		base   float32
		trees  int
		probes []probe
		tol    float64
	}{
		{
			// G_left = 5×0.5, H_left = 5: leaf −0.5; right +0.5; split at
			// the midpoint 4.5.
			name: "single split on a step", opts: exact, base: 0.5, trees: 1,
			probes: []probe{{0, 0}, {4, 0}, {4.5, 0}, {4.50001, 1}, {9, 1}, {100, 1}, {-100, 0}, {nan, 1}},
		},
		{
			// Leaves shrink by λ: −2.5/(5+5).
			name: "lambda", base: 0.5, trees: 1,
			opts:   Options{NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1, Lambda: 5},
			probes: []probe{{0, 0.25}, {9, 0.75}},
		},
		{
			// Each tree removes 10% of the residual: 0.5·0.9³ left.
			name: "shrinkage over three trees", base: 0.5, trees: 3, tol: 1e-6,
			opts:   Options{NumTrees: 3, MaxDepth: 1, LearningRate: 0.1, MinChildSamples: 1},
			probes: []probe{{0, 0.5 * 0.729}, {9, 1 - 0.5*0.729}},
		},
		{
			name: "constant target gives the base only",
			X:    column(1, 2, 3, 4, 5, 6), y: []float32{3.7, 3.7, 3.7, 3.7, 3.7, 3.7},
			opts: Options{MinChildSamples: 1}, base: 3.7, trees: 0,
			probes: []probe{{0, 3.7}, {nan, 3.7}},
		},
		{
			name: "min child samples forbids every split",
			opts: Options{MinChildSamples: 6}, base: 0.5, trees: 0,
			probes: []probe{{0, 0.5}, {9, 0.5}},
		},
		{
			// Missing values are a bin of their own: the best split is
			// "not NaN | NaN", threshold +Inf.
			name: "NaN split",
			X:    column(0, 1, 2, 3, 4, nan, nan, nan, nan, nan),
			y:    []float32{1, 1, 1, 1, 1, 5, 5, 5, 5, 5},
			opts: exact, base: 3, trees: 1,
			probes: []probe{{0, 1}, {1e30, 1}, {nan, 5}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			X, y := tt.X, tt.y
			if X == nil {
				X, y = step()
			}
			e, err := Train(context.Background(), X, y, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if e.Base != tt.base {
				t.Errorf("Base = %v, want %v", e.Base, tt.base)
			}
			if len(e.Trees) != tt.trees {
				t.Errorf("%d trees, want %d", len(e.Trees), tt.trees)
			}
			if err := e.Validate(); err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.probes {
				got := e.Predict([]float32{p.x})
				if math.Abs(float64(got)-float64(p.want)) > tt.tol {
					t.Errorf("Predict(%v) = %v, want %v", p.x, got, p.want)
				}
			}
		})
	}
}

func TestTrainSplitThresholdIsMidpoint(t *testing.T) {
	X, y := step()
	e, err := Train(context.Background(), X, y, Options{NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := []model.Node{
		{Feature: 0, Threshold: 4.5, True: 1, False: 2},
		{Leaf: true, Value: -0.5},
		{Leaf: true, Value: 0.5},
	}
	if !reflect.DeepEqual(e.Trees[0].Nodes, want) {
		t.Fatalf("tree = %+v, want %+v", e.Trees[0].Nodes, want)
	}
}

// noisy returns rows of f features with a nonlinear target and Gaussian noise.
func noisy(rng *rand.Rand, n, f int, noise float64) ([][]float32, []float32) {
	X := make([][]float32, n)
	y := make([]float32, n)
	for i := range X {
		r := make([]float32, f)
		for j := range r {
			r[j] = float32(rng.Float64()*6 - 3)
		}
		if f > 3 && rng.IntN(50) == 0 {
			r[3] = float32(math.NaN())
		}
		X[i] = r
		v := 3*math.Sin(float64(r[0])) + float64(r[1]*r[1]) + 2*float64(r[2])*boolf(r[1] > 0)
		y[i] = float32(v + rng.NormFloat64()*noise)
	}
	return X, y
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func rmse(pred, y []float32) float64 {
	s := 0.0
	for i := range y {
		d := float64(pred[i]) - float64(y[i])
		s += d * d
	}
	return math.Sqrt(s / float64(len(y)))
}

func TestTrainReducesRMSE(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	X, y := noisy(rng, 4000, 6, 0.5)
	Xt, yt := noisy(rng, 2000, 6, 0.5)
	e, err := Train(context.Background(), X, y, Options{Subsample: 0.8, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	pred := make([]float32, len(Xt))
	e.PredictBatch(Xt, pred)
	mean := make([]float32, len(yt))
	for i := range mean {
		mean[i] = e.Base
	}
	got, base := rmse(pred, yt), rmse(mean, yt)
	t.Logf("holdout RMSE %.3f, mean baseline %.3f, %d trees", got, base, len(e.Trees))
	if got > 0.35*base {
		t.Fatalf("holdout RMSE %.3f is not well below the mean baseline %.3f", got, base)
	}
}

func TestTrainDeterministic(t *testing.T) {
	X, y := noisy(rand.New(rand.NewPCG(4, 4)), 3000, 8, 1)
	train := func(seed uint64, workers int) *model.Ensemble {
		e, err := Train(context.Background(), X, y, Options{NumTrees: 20, Subsample: 0.6, Seed: seed, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	a, b, c := train(7, 1), train(7, 4), train(8, 2)
	if !reflect.DeepEqual(a.Trees, b.Trees) || a.Base != b.Base {
		t.Fatalf("same seed, different worker counts: different models")
	}
	if reflect.DeepEqual(a.Trees, c.Trees) {
		t.Fatalf("different seeds gave the same subsampled model")
	}
}

// The trainer's own per-row scores (from bins) must equal the model's float
// walk bit for bit: thresholds sit between bins.
func TestTrainScoresMatchModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	X, y := noisy(rng, 3000, 5, 1)
	for i := range X {
		switch rng.IntN(40) {
		case 0:
			X[i][4] = float32(math.Inf(1))
		case 1:
			X[i][4] = float32(math.Inf(-1))
		case 2:
			X[i][0] = float32(math.NaN())
		}
		X[i][2] = float32(rng.IntN(4)) // few distinct values
	}
	opts := Options{NumTrees: 15, MaxBins: 16, MinChildSamples: 5}.withDefaults()
	b := newBooster(X, y, opts, l2Loss{})
	e := &model.Ensemble{Base: b.base, NumFeatures: 5}
	for k := range opts.NumTrees {
		tree, _, err := b.boost(uint64(k))
		if err != nil || tree.Nodes == nil {
			t.Fatalf("tree %d found no split (%v)", k, err)
		}
		e.Trees = append(e.Trees, tree)
	}
	for i, r := range X {
		if got, want := e.Predict(r), b.sum[i]+b.base; math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("row %d %v: model %v, trainer %v", i, r, got, want)
		}
	}
}

func TestTrainRejects(t *testing.T) {
	X, y := step()
	nan := float32(math.NaN())
	tests := []struct {
		name string
		X    [][]float32
		y    []float32
		opts Options
	}{
		{"no rows", nil, nil, Options{}},
		{"length mismatch", X, y[:3], Options{}},
		{"ragged", append(column(1, 2), []float32{1, 2}), []float32{1, 2, 3}, Options{}},
		{"no features", [][]float32{{}}, []float32{1}, Options{}},
		{"NaN target", column(1, 2), []float32{1, nan}, Options{}},
		{"too many bins", X, y, Options{MaxBins: 256}},
		{"subsample above 1", X, y, Options{Subsample: 1.5}},
		{"negative lambda", X, y, Options{Lambda: -1}},
		{"unknown objective", X, y, Options{Objective: "huber"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Train(context.Background(), tt.X, tt.y, tt.opts); !errors.Is(err, ErrBadInput) {
				t.Fatalf("Train = %v, want ErrBadInput", err)
			}
		})
	}
}

func TestTrainCancelled(t *testing.T) {
	X, y := step()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Train(ctx, X, y, Options{MinChildSamples: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Train = %v, want context.Canceled", err)
	}
}

func TestQuantileUppers(t *testing.T) {
	inf := float32(math.Inf(1))
	tests := []struct {
		name   string
		sorted []float32
		max    int
		want   []float32
	}{
		{"empty", nil, 4, nil},
		{"constant", []float32{2, 2, 2}, 4, []float32{inf}},
		{"few distinct", []float32{1, 1, 2, 3, 3}, 4, []float32{1, 2, inf}},
		{"quantiles", []float32{1, 2, 3, 4, 5, 6, 7, 8}, 4, []float32{2, 4, 6, inf}},
		{"quantiles with ties", []float32{0, 0, 0, 0, 0, 0, 7, 8, 9}, 3, []float32{0, inf}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quantileUppers(tt.sorted, tt.max); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("quantileUppers = %v, want %v", got, tt.want)
			}
		})
	}
}

func BenchmarkTrain(b *testing.B) {
	const rows = 100_000
	X, y := noisy(rand.New(rand.NewPCG(1, 1)), rows, 20, 1)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Train(context.Background(), X, y, Options{NumTrees: 100, MaxDepth: 6}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
