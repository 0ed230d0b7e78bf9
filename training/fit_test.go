package training

import (
	"context"
	"errors"
	"math"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/surgeworks/surge/model"
)

// counts returns rows of f features and Poisson counts whose log-mean is a
// nonlinear function of the first three.
func counts(rng *rand.Rand, n, f int) ([][]float32, []float32) {
	X := make([][]float32, n)
	y := make([]float32, n)
	for i := range X {
		r := make([]float32, f)
		for j := range r {
			r[j] = float32(rng.Float64()*4 - 2)
		}
		X[i] = r
		logMu := 1 + 0.8*math.Sin(2*float64(r[0])) + 0.5*float64(r[1]) - 0.6*boolf(r[2] > 0.5)
		y[i] = float32(poisson(rng, math.Exp(logMu)))
	}
	return X, y
}

// exp32 is the model's exp link on a float32 raw score.
func exp32(raw float32) float32 { return float32(math.Exp(float64(raw))) }

func TestTrainLogLinkHandComputed(t *testing.T) {
	X, _ := step()
	two := []float32{1, 1, 1, 1, 1, 3, 3, 3, 3, 3} // mean 2
	one := Options{NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1}
	// mu0 is what the first gradients see: exp of the float32 base.
	mu0 := float64(exp32(float32(math.Log(2))))
	tests := []struct {
		name      string
		y         []float32
		opts      Options
		base      float64
		leftStep  float64 // the leaves before the base: x <= 4.5 and x > 4.5
		rightStep float64
		trees     int
	}{
		{
			// Newton step −G/H per leaf with g = μ−y, h = μ: left
			// −5(μ0−1)/(5μ0) (−0.5 at μ0 = 2), right −5(μ0−3)/(5μ0).
			name: "poisson: one Newton step", y: two, opts: one, base: math.Log(2), trees: 1,
			leftStep: -(mu0 - 1) / mu0, rightStep: -(mu0 - 3) / mu0,
		},
		{
			// λ = 5 adds to H = 5μ0: −5(μ0−1)/(5μ0+5) (−1/3 at μ0 = 2).
			name: "poisson: lambda", y: two, base: math.Log(2), trees: 1,
			opts:     Options{NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1, Lambda: 5},
			leftStep: -5 * (mu0 - 1) / (5*mu0 + 5), rightStep: -5 * (mu0 - 3) / (5*mu0 + 5),
		},
		{
			// y 1 | 9, mean 5: steps ∓0.8 are capped at the default
			// MaxDeltaStep 0.7.
			name: "poisson: max delta step caps the step", y: []float32{1, 1, 1, 1, 1, 9, 9, 9, 9, 9}, opts: one,
			base: math.Log(5), trees: 1, leftStep: -0.7, rightStep: 0.7,
		},
		{
			name: "poisson: no cap when MaxDeltaStep is negative", y: []float32{1, 1, 1, 1, 1, 9, 9, 9, 9, 9},
			opts: Options{NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1, MaxDeltaStep: -1},
			base: math.Log(5), trees: 1,
			leftStep:  -(float64(exp32(float32(math.Log(5)))) - 1) / float64(exp32(float32(math.Log(5)))),
			rightStep: -(float64(exp32(float32(math.Log(5)))) - 9) / float64(exp32(float32(math.Log(5)))),
		},
		{
			// p = 1.5, μ0 = 2: g = −y·μ0^−½ + μ0^½, h = ½y·μ0^−½ + ½μ0^½,
			// so the steps are −2/3 (y = 1) and +0.4 (y = 3).
			name: "tweedie: one Newton step", y: two, base: math.Log(2), trees: 1,
			opts:      Options{Objective: ObjectiveTweedie, NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1},
			leftStep:  -(-1/math.Sqrt(mu0) + math.Sqrt(mu0)) / (0.5/math.Sqrt(mu0) + 0.5*math.Sqrt(mu0)),
			rightStep: -(-3/math.Sqrt(mu0) + math.Sqrt(mu0)) / (1.5/math.Sqrt(mu0) + 0.5*math.Sqrt(mu0)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if opts.Objective == "" {
				opts.Objective = ObjectivePoisson
			}
			e, err := Train(context.Background(), X, tt.y, opts)
			if err != nil {
				t.Fatal(err)
			}
			if e.Link != model.LinkExp || e.Base != float32(tt.base) || len(e.Trees) != tt.trees {
				t.Fatalf("link %q, base %v, %d trees; want exp, %v, %d", e.Link, e.Base, len(e.Trees), float32(tt.base), tt.trees)
			}
			want := []model.Node{
				{Feature: 0, Threshold: 4.5, True: 1, False: 2},
				{Leaf: true, Value: float32(tt.leftStep)},
				{Leaf: true, Value: float32(tt.rightStep)},
			}
			got := e.Trees[0].Nodes
			if len(got) != 3 || got[0] != want[0] || math.Abs(float64(got[1].Value)-tt.leftStep) > 1e-6 ||
				math.Abs(float64(got[2].Value)-tt.rightStep) > 1e-6 {
				t.Fatalf("tree %+v, want %+v", got, want)
			}
			for _, x := range []float32{0, 4, 5, 9} {
				leaf := got[1].Value
				if x > 4.5 {
					leaf = got[2].Value
				}
				if p, want := e.Predict([]float32{x}), exp32(leaf+e.Base); p != want {
					t.Errorf("Predict(%v) = %v, want exp(base + leaf) = %v", x, p, want)
				}
			}
		})
	}
}

func TestTrainLogLinkConstantTarget(t *testing.T) {
	for _, c := range []float32{1, 3.7, 250} {
		for _, obj := range []string{ObjectivePoisson, ObjectiveTweedie} {
			y := make([]float32, 30)
			X := make([][]float32, 30)
			for i := range y {
				y[i], X[i] = c, []float32{float32(i)}
			}
			e, err := Train(context.Background(), X, y, Options{Objective: obj, MinChildSamples: 1})
			if err != nil {
				t.Fatal(err)
			}
			if e.Base != float32(math.Log(float64(c))) || len(e.Trees) != 0 || e.Link != model.LinkExp {
				t.Fatalf("%s, c=%v: base %v, %d trees, link %q; want log(c) = %v, none, exp", obj, c, e.Base, len(e.Trees), e.Link, float32(math.Log(float64(c))))
			}
			// exp(float32(log c)) is c up to the rounding of log c to
			// float32 (exact for c = 1).
			if p := e.Predict([]float32{3}); math.Abs(float64(p-c)) > 1e-6*float64(c) || (c == 1 && p != 1) {
				t.Fatalf("%s: Predict = %v, want %v", obj, p, c)
			}
		}
	}
}

// Two rounds of Newton steps on the single split case: the second tree's
// leaves start from the first tree's scores.
func TestTrainPoissonSecondRound(t *testing.T) {
	X, _ := step()
	y := []float32{1, 1, 1, 1, 1, 3, 3, 3, 3, 3}
	e, err := Train(context.Background(), X, y, Options{Objective: ObjectivePoisson, NumTrees: 2, MaxDepth: 1,
		LearningRate: 0.5, MinChildSamples: 1, MaxDeltaStep: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Trees) != 2 {
		t.Fatalf("%d trees, want 2", len(e.Trees))
	}
	for leaf, yv := range map[int32]float64{1: 1, 2: 3} {
		f0 := e.Base
		mu := float64(exp32(f0))
		w1 := 0.5 * -(mu - yv) / mu
		f1 := e.Trees[0].Nodes[leaf].Value + f0 // the trainer's float32 score
		mu1 := float64(exp32(f1))
		w2 := 0.5 * -(mu1 - yv) / mu1
		if got := e.Trees[0].Nodes[leaf].Value; math.Abs(float64(got)-w1) > 1e-6 {
			t.Errorf("tree 1 leaf %d = %v, want %v", leaf, got, w1)
		}
		if got := e.Trees[1].Nodes[leaf].Value; math.Abs(float64(got)-w2) > 1e-6 {
			t.Errorf("tree 2 leaf %d = %v, want %v", leaf, got, w2)
		}
	}
}

func TestTrainPoissonBeatsConstant(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	X, y := counts(rng, 6000, 5)
	Xt, yt := counts(rng, 3000, 5)
	res, err := Fit(context.Background(), X, y, Options{Objective: ObjectivePoisson, NumTrees: 150, MaxDepth: 4, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	e := res.Model
	pred := make([]float32, len(Xt))
	e.PredictBatch(Xt, pred)
	raw := make([]float32, len(Xt))
	constRaw := make([]float32, len(Xt))
	for i, r := range Xt {
		if !(pred[i] > 0) {
			t.Fatalf("row %d: prediction %v is not positive", i, pred[i])
		}
		raw[i] = e.PredictRaw(r)
		constRaw[i] = e.Base
	}
	obj := poissonLoss{}
	dev := obj.finish(obj.lossSum(yt, raw), len(yt))
	base := obj.finish(obj.lossSum(yt, constRaw), len(yt))
	t.Logf("holdout Poisson deviance %.4f, constant %.4f (%d trees)", dev, base, len(e.Trees))
	if dev > 0.6*base {
		t.Fatalf("holdout deviance %.4f is not well below the constant model's %.4f", dev, base)
	}
}

// fitCase is a training configuration that exercises one path of the
// trainer.
type fitCase struct {
	name string
	opts Options
}

func fitCases() []fitCase {
	return []fitCase{
		{"l2", Options{NumTrees: 12}},
		{"l2 subsample colsample", Options{NumTrees: 12, Subsample: 0.7, ColsampleByTree: 0.6, Seed: 3}},
		{"l2 max leaves", Options{NumTrees: 12, MaxLeaves: 7, MaxDepth: 9}},
		{"poisson", Options{Objective: ObjectivePoisson, NumTrees: 12, Subsample: 0.8, Seed: 4}},
		{"tweedie max leaves colsample", Options{Objective: ObjectiveTweedie, NumTrees: 12, MaxLeaves: 12, ColsampleByTree: 0.5, Seed: 5}},
	}
}

// caseData is large enough for the parallel paths: partitions cut into
// chunks, root histograms split by rows.
func caseData(t *testing.T, objective string) ([][]float32, []float32) {
	t.Helper()
	rng := rand.New(rand.NewPCG(77, 1))
	if objective == ObjectivePoisson || objective == ObjectiveTweedie {
		return counts(rng, 70_000, 6)
	}
	return noisy(rng, 70_000, 6, 1)
}

// Sibling subtraction only changes how histograms are obtained: the model
// must be the same, bit for bit, as when both children are built from
// their rows, and the same whatever the number of workers.
func TestTrainSubtractionAndWorkersGiveTheSameModel(t *testing.T) {
	for _, tc := range fitCases() {
		t.Run(tc.name, func(t *testing.T) {
			X, y := caseData(t, tc.opts.Objective)
			train := func(workers int, noSub bool) *model.Ensemble {
				o := tc.opts
				o.Workers, o.noSubtraction = workers, noSub
				e, err := Train(context.Background(), X, y, o)
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			ref := train(1, true)
			if len(ref.Trees) != tc.opts.NumTrees {
				t.Fatalf("%d trees, want %d", len(ref.Trees), tc.opts.NumTrees)
			}
			for _, v := range []struct {
				workers int
				noSub   bool
			}{{1, false}, {2, false}, {5, false}, {3, true}} {
				got := train(v.workers, v.noSub)
				if !reflect.DeepEqual(got.Trees, ref.Trees) || got.Base != ref.Base ||
					!reflect.DeepEqual(got.Meta.Importance, ref.Meta.Importance) {
					t.Fatalf("workers %d, subtraction %v: model differs from one worker without subtraction", v.workers, !v.noSub)
				}
				for i := 0; i < len(X); i += 97 {
					if a, b := got.Predict(X[i]), ref.Predict(X[i]); math.Float32bits(a) != math.Float32bits(b) {
						t.Fatalf("row %d: %v vs %v", i, a, b)
					}
				}
			}
		})
	}
}

// The trainer's own per-row raw scores (from bins, by leaf ranges or by
// routing) must equal the model's float walk bit for bit.
func TestTrainRawScoresMatchModel(t *testing.T) {
	for _, tc := range fitCases() {
		t.Run(tc.name, func(t *testing.T) {
			X, y := caseData(t, tc.opts.Objective)
			opts := tc.opts.withDefaults()
			obj, err := newObjective(opts)
			if err != nil {
				t.Fatal(err)
			}
			b := newBooster(X, y, opts, obj)
			e := &model.Ensemble{Base: b.base, NumFeatures: b.f, Link: obj.link()}
			for k := range opts.NumTrees {
				tree, recs, err := b.boost(uint64(k))
				if err != nil || tree.Nodes == nil {
					t.Fatalf("tree %d: %v", k, err)
				}
				if err := (&model.Ensemble{NumFeatures: b.f, Trees: []model.Tree{tree}}).Validate(); err != nil {
					t.Fatal(err)
				}
				splits := 0
				for _, nd := range tree.Nodes {
					if !nd.Leaf {
						splits++
					}
				}
				if splits != len(recs) {
					t.Fatalf("tree %d: %d splits, %d records", k, splits, len(recs))
				}
				e.Trees = append(e.Trees, tree)
			}
			for i, r := range X {
				if got, want := e.PredictRaw(r), b.sum[i]+b.base; math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("row %d: model %v, trainer %v", i, got, want)
				}
			}
		})
	}
}

func TestTrainDeterministicPerSeed(t *testing.T) {
	X, y := noisy(rand.New(rand.NewPCG(4, 4)), 3000, 8, 1)
	tests := []struct {
		name string
		opts Options
	}{
		{"row subsampling", Options{NumTrees: 15, Subsample: 0.6}},
		{"column subsampling", Options{NumTrees: 15, ColsampleByTree: 0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			train := func(seed uint64, workers int) *model.Ensemble {
				o := tt.opts
				o.Seed, o.Workers = seed, workers
				e, err := Train(context.Background(), X, y, o)
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			a, b, c := train(7, 1), train(7, 3), train(8, 2)
			if !reflect.DeepEqual(a.Trees, b.Trees) {
				t.Fatalf("same seed, different worker counts: different models")
			}
			if reflect.DeepEqual(a.Trees, c.Trees) {
				t.Fatalf("different seeds gave the same model")
			}
		})
	}
}

func TestTrainColumnSubsampling(t *testing.T) {
	// Every feature carries signal, so an unrestricted tree uses many.
	rng := rand.New(rand.NewPCG(8, 1))
	const nf = 8
	X := make([][]float32, 4000)
	y := make([]float32, len(X))
	for i := range X {
		X[i] = make([]float32, nf)
		for j := range X[i] {
			X[i][j] = float32(rng.Float64())
			y[i] += float32(j+1) * X[i][j]
		}
	}
	tests := []struct {
		colsample float64
		maxFeats  int // features a tree may use: round(colsample × 8), at least 1
	}{{0.25, 2}, {0.5, 4}, {0.01, 1}, {1, 8}}
	for _, tt := range tests {
		e, err := Train(context.Background(), X, y, Options{NumTrees: 20, MaxDepth: 4, ColsampleByTree: tt.colsample, Seed: 2})
		if err != nil {
			t.Fatal(err)
		}
		sets := map[uint]bool{}
		for k, tr := range e.Trees {
			var used uint
			for _, nd := range tr.Nodes {
				if !nd.Leaf {
					used |= 1 << nd.Feature
				}
			}
			if n := bits.OnesCount(used); n > tt.maxFeats {
				t.Fatalf("colsample %v: tree %d splits on %d features, want at most %d", tt.colsample, k, n, tt.maxFeats)
			}
			sets[used] = true
		}
		if tt.colsample < 1 && len(sets) < 3 {
			t.Errorf("colsample %v: trees use only %d distinct feature sets, want a fresh draw per tree", tt.colsample, len(sets))
		}
	}
}

func leaves(tr model.Tree) int {
	n := 0
	for _, nd := range tr.Nodes {
		if nd.Leaf {
			n++
		}
	}
	return n
}

func depth(tr model.Tree) int {
	var walk func(i int32) int
	walk = func(i int32) int {
		nd := tr.Nodes[i]
		if nd.Leaf {
			return 0
		}
		return 1 + max(walk(nd.True), walk(nd.False))
	}
	return walk(0)
}

func TestTrainMaxLeaves(t *testing.T) {
	X, y := noisy(rand.New(rand.NewPCG(3, 3)), 5000, 6, 0.5)
	for _, tt := range []struct{ maxLeaves, maxDepth int }{{2, 6}, {5, 10}, {13, 5}, {31, 10}} {
		e, err := Train(context.Background(), X, y, Options{NumTrees: 10, MaxLeaves: tt.maxLeaves, MaxDepth: tt.maxDepth})
		if err != nil {
			t.Fatal(err)
		}
		for k, tr := range e.Trees {
			if n := leaves(tr); n != tt.maxLeaves {
				t.Fatalf("MaxLeaves %d: tree %d has %d leaves", tt.maxLeaves, k, n)
			}
			if d := depth(tr); d > tt.maxDepth {
				t.Fatalf("MaxDepth %d: tree %d has depth %d", tt.maxDepth, k, d)
			}
		}
	}
	// Leaf-wise with room for every leaf is the depth-wise tree.
	full, err := Train(context.Background(), X, y, Options{NumTrees: 10, MaxDepth: 4, MaxLeaves: 16})
	if err != nil {
		t.Fatal(err)
	}
	levels, err := Train(context.Background(), X, y, Options{NumTrees: 10, MaxDepth: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(full.Trees, levels.Trees) {
		t.Fatalf("MaxLeaves 2^MaxDepth differs from depth-wise growth")
	}
}

// Best first: with three leaves, the second split goes to the child whose
// split reduces the loss most, here the left one (x1 effect 10 against 2).
func TestTrainMaxLeavesSplitsTheBestLeafFirst(t *testing.T) {
	var X [][]float32
	var y []float32
	for i := range 16 {
		x0, x1 := float32(i/8), float32(i/4%2)
		X = append(X, []float32{x0, x1})
		if x0 == 0 {
			y = append(y, 10*x1)
		} else {
			y = append(y, 100+2*x1)
		}
	}
	opts := Options{NumTrees: 1, MaxDepth: 2, LearningRate: 1, MinChildSamples: 1}
	for _, tt := range []struct {
		maxLeaves int
		want      map[[2]float32]float32
	}{
		{3, map[[2]float32]float32{{0, 0}: 0, {0, 1}: 10, {1, 0}: 101, {1, 1}: 101}},
		{0, map[[2]float32]float32{{0, 0}: 0, {0, 1}: 10, {1, 0}: 100, {1, 1}: 102}},
	} {
		opts.MaxLeaves = tt.maxLeaves
		e, err := Train(context.Background(), X, y, opts)
		if err != nil {
			t.Fatal(err)
		}
		for row, want := range tt.want {
			if got := e.Predict(row[:]); got != want {
				t.Errorf("MaxLeaves %d: Predict(%v) = %v, want %v", tt.maxLeaves, row, got, want)
			}
		}
	}
}

// overfitData: y depends on x0 (a step) in both sets; in the training rows
// it also depends on x1, which has no effect on the validation rows. The
// first trees learn x0 (the larger effect) and improve the validation loss;
// once its residual is smaller than x1's effect, the trees turn to x1 and
// the validation loss rises.
func overfitData(n int, rng *rand.Rand) (train, valid Dataset) {
	for i := range 2 * n {
		x0, x1 := rng.Float32(), rng.Float32()
		v := 4 * boolf(x0 > 0.5)
		if i < n {
			train.X = append(train.X, []float32{x0, x1})
			train.Y = append(train.Y, float32(v+2*boolf(x1 > 0.5)))
		} else {
			valid.X = append(valid.X, []float32{x0, x1})
			valid.Y = append(valid.Y, float32(v+1))
		}
	}
	return train, valid
}

func TestTrainEarlyStoppingKeepsTheBestIteration(t *testing.T) {
	train, valid := overfitData(2000, rand.New(rand.NewPCG(6, 6)))
	opts := Options{NumTrees: 200, MaxDepth: 1, LearningRate: 0.2, Validation: valid, EarlyStoppingRounds: 10}
	res, err := Fit(context.Background(), train.X, train.Y, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("best %d of %d rounds, validation RMSE %.4f -> %.4f -> %.4f", res.BestIteration, res.Rounds,
		res.ValidLoss[0], res.ValidLoss[res.BestIteration], res.ValidLoss[res.Rounds])
	if res.StopReason != StopEarlyStopping || res.Rounds != res.BestIteration+10 || res.Rounds >= 200 {
		t.Fatalf("stop %q after %d rounds, best %d: want early stopping 10 rounds after the best", res.StopReason, res.Rounds, res.BestIteration)
	}
	if res.BestIteration < 2 || len(res.Model.Trees) != res.BestIteration || len(res.ValidLoss) != res.Rounds+1 {
		t.Fatalf("best %d, %d trees, %d losses", res.BestIteration, len(res.Model.Trees), len(res.ValidLoss))
	}
	for k, l := range res.ValidLoss {
		if l < res.ValidLoss[res.BestIteration] || (k < res.BestIteration && l == res.ValidLoss[res.BestIteration]) {
			t.Fatalf("validation loss %v at %d trees is not above the best %v at %d", l, k, res.ValidLoss[res.BestIteration], res.BestIteration)
		}
	}
	if res.ValidLoss[res.Rounds] <= res.ValidLoss[res.BestIteration] || res.ValidLoss[res.BestIteration] >= res.ValidLoss[0] {
		t.Fatalf("the constructed validation loss should fall, then rise: %v", res.ValidLoss)
	}
	// The curve is the model's own: the kept model scores the best loss.
	pred := make([]float32, len(valid.X))
	res.Model.PredictBatch(valid.X, pred)
	if got := (l2Loss{}).finish((l2Loss{}).lossSum(valid.Y, pred), len(pred)); got != res.ValidLoss[res.BestIteration] {
		t.Fatalf("kept model's validation RMSE %v, curve says %v", got, res.ValidLoss[res.BestIteration])
	}
	assertSameBits(t, "ValidPred", res.ValidPred, pred)
	// The kept trees are the first trees of the run.
	plain, err := Train(context.Background(), train.X, train.Y, Options{NumTrees: res.BestIteration, MaxDepth: 1, LearningRate: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plain.Trees, res.Model.Trees) {
		t.Fatalf("kept trees differ from a run of %d rounds", res.BestIteration)
	}
	if p := res.Model.Meta.Params["early_stopping_rounds"]; p != "10" {
		t.Errorf("params early_stopping_rounds = %q", p)
	}
	// Without early stopping every round runs; the best one is still kept.
	opts.NumTrees, opts.EarlyStoppingRounds = res.Rounds+15, -1
	all, err := Fit(context.Background(), train.X, train.Y, opts)
	if err != nil {
		t.Fatal(err)
	}
	if all.Rounds != opts.NumTrees || all.StopReason != StopNumTrees || all.BestIteration != res.BestIteration ||
		!reflect.DeepEqual(all.Model.Trees, res.Model.Trees) {
		t.Fatalf("EarlyStoppingRounds -1: %d rounds (%s), best %d; want %d rounds and best %d", all.Rounds, all.StopReason,
			all.BestIteration, opts.NumTrees, res.BestIteration)
	}
}

func TestTrainValidationFractionHoldsOutTheLastRows(t *testing.T) {
	train, valid := overfitData(1500, rand.New(rand.NewPCG(2, 9)))
	all := Dataset{X: append(append([][]float32{}, train.X...), valid.X...), Y: append(append([]float32{}, train.Y...), valid.Y...)}
	byFraction, err := Fit(context.Background(), all.X, all.Y, Options{MaxDepth: 1, LearningRate: 0.2, ValidationFraction: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	explicit, err := Fit(context.Background(), train.X, train.Y, Options{MaxDepth: 1, LearningRate: 0.2, Validation: valid})
	if err != nil {
		t.Fatal(err)
	}
	if byFraction.TrainRows != 1500 || byFraction.ValidRows != 1500 {
		t.Fatalf("%d training and %d validation rows, want 1500 and 1500", byFraction.TrainRows, byFraction.ValidRows)
	}
	if !reflect.DeepEqual(byFraction.Model.Trees, explicit.Model.Trees) || !reflect.DeepEqual(byFraction.ValidLoss, explicit.ValidLoss) ||
		byFraction.BestIteration != explicit.BestIteration {
		t.Fatalf("ValidationFraction 0.5 differs from the last half given as Validation")
	}
	if byFraction.StopReason != StopEarlyStopping || byFraction.Rounds != byFraction.BestIteration+20 {
		t.Fatalf("stop %q after %d rounds, best %d: want the default 20 rounds of patience", byFraction.StopReason, byFraction.Rounds, byFraction.BestIteration)
	}
}

func TestTrainEarlyStoppingPoisson(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1))
	X, y := counts(rng, 3000, 4)
	res, err := Fit(context.Background(), X, y, Options{Objective: ObjectivePoisson, NumTrees: 400, MaxDepth: 5,
		LearningRate: 0.3, MinChildSamples: 2, ValidationFraction: 0.3, EarlyStoppingRounds: 5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Metric != "poisson_deviance" || res.StopReason != StopEarlyStopping || len(res.Model.Trees) != res.BestIteration {
		t.Fatalf("metric %q, stop %q, %d trees, best %d", res.Metric, res.StopReason, len(res.Model.Trees), res.BestIteration)
	}
	vx, vy := X[len(X)-res.ValidRows:], y[len(y)-res.ValidRows:]
	raw := make([]float32, len(vx))
	for i, r := range vx {
		raw[i] = res.Model.PredictRaw(r)
	}
	obj := poissonLoss{}
	if got := obj.finish(obj.lossSum(vy, raw), len(vy)); got != res.ValidLoss[res.BestIteration] {
		t.Fatalf("kept model's validation deviance %v, curve says %v", got, res.ValidLoss[res.BestIteration])
	}
	// The validation predictions are the kept model's, through its link.
	pred := make([]float32, len(vx))
	res.Model.PredictBatch(vx, pred)
	assertSameBits(t, "ValidPred", res.ValidPred, pred)
}

// assertSameBits fails unless got and want hold the same float32 bits.
func assertSameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func TestTrainFeatureImportance(t *testing.T) {
	// The single split of the step case: gain ½[G_L²/H_L + G_R²/H_R − G²/H]
	// = ½[2.5²/5 + 2.5²/5 − 0] = 1.25.
	X, y := step()
	e, err := Train(context.Background(), X, y, Options{NumTrees: 1, MaxDepth: 1, LearningRate: 1, MinChildSamples: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := []model.FeatureImportance{{Gain: 1.25, Splits: 1}}; !reflect.DeepEqual(e.Meta.Importance, want) {
		t.Fatalf("importance %+v, want %+v", e.Meta.Importance, want)
	}

	// x0..x2 carry the signal, x3..x5 are noise, x6 is constant.
	rng := rand.New(rand.NewPCG(10, 10))
	X, y = noisy(rng, 4000, 7, 0.5)
	for _, r := range X {
		r[6] = 1
	}
	train, valid := Dataset{X: X[:3000], Y: y[:3000]}, Dataset{X: X[3000:], Y: y[3000:]}
	res, err := Fit(context.Background(), train.X, train.Y, Options{NumTrees: 300, LearningRate: 0.3, Validation: valid, EarlyStoppingRounds: 5})
	if err != nil {
		t.Fatal(err)
	}
	e = res.Model
	if res.BestIteration >= res.Rounds {
		t.Fatalf("want a run that stops early (best %d of %d) so that importance covers only kept trees", res.BestIteration, res.Rounds)
	}
	splits := make([]int, 7)
	for _, tr := range e.Trees {
		for _, nd := range tr.Nodes {
			if !nd.Leaf {
				splits[nd.Feature]++
			}
		}
	}
	signal, noise := 0.0, 0.0
	for f, fi := range e.Meta.Importance {
		if fi.Splits != splits[f] {
			t.Errorf("feature %d: %d splits recorded, %d in the kept trees", f, fi.Splits, splits[f])
		}
		if (fi.Splits == 0) != (fi.Gain == 0) || fi.Gain < 0 {
			t.Errorf("feature %d: gain %v with %d splits", f, fi.Gain, fi.Splits)
		}
		if f < 3 {
			signal += fi.Gain
		} else {
			noise += fi.Gain
		}
	}
	if e.Meta.Importance[6] != (model.FeatureImportance{}) {
		t.Errorf("constant feature has importance %+v", e.Meta.Importance[6])
	}
	if signal < 20*noise {
		t.Errorf("signal features' gain %.1f is not far above the noise features' %.1f", signal, noise)
	}
}

func TestFixedScale(t *testing.T) {
	for _, tt := range []struct {
		maxAbs float64
		n      int
	}{{1, 1}, {1, 1_000_000}, {0.3, 7}, {1e-300, 5}, {1e300, 5}, {12345.678, 1 << 30}, {0.5, 1 << 20}} {
		s, inv := fixedScale(tt.maxAbs, tt.n)
		if fr, _ := math.Frexp(s); fr != 0.5 || s*inv != 1 {
			t.Fatalf("%v, %d: scale %v (inverse %v) is not a power of two", tt.maxAbs, tt.n, s, inv)
		}
		if tt.maxAbs*s*float64(tt.n) >= 1<<62 {
			t.Fatalf("%v, %d: scale %v lets the sum overflow", tt.maxAbs, tt.n, s)
		}
		if s < math.Ldexp(1, 1000) && 2*tt.maxAbs*s*float64(tt.n) < 1<<61 {
			t.Fatalf("%v, %d: scale %v is not the largest safe one", tt.maxAbs, tt.n, s)
		}
	}
}

func TestFitRejects(t *testing.T) {
	X, y := step()
	neg := append([]float32{-1}, y[1:]...)
	zeros := make([]float32, len(y))
	tests := []struct {
		name string
		X    [][]float32
		y    []float32
		opts Options
	}{
		{"negative poisson target", X, neg, Options{Objective: ObjectivePoisson}},
		{"all-zero tweedie targets", X, zeros, Options{Objective: ObjectiveTweedie}},
		{"tweedie power 2", X, y, Options{Objective: ObjectiveTweedie, TweedieVariancePower: 2}},
		{"tweedie power 1", X, y, Options{Objective: ObjectiveTweedie, TweedieVariancePower: 1}},
		{"max leaves 1", X, y, Options{MaxLeaves: 1}},
		{"negative max leaves", X, y, Options{MaxLeaves: -3}},
		{"colsample above 1", X, y, Options{ColsampleByTree: 1.2}},
		{"negative colsample", X, y, Options{ColsampleByTree: -0.5}},
		{"validation fraction 1", X, y, Options{ValidationFraction: 1}},
		{"validation fraction leaves no rows", X, y, Options{ValidationFraction: 0.05}},
		{"NaN max delta step", X, y, Options{MaxDeltaStep: math.NaN()}},
		{"validation width", X, y, Options{Validation: Dataset{X: [][]float32{{1, 2}}, Y: []float32{1}}}},
		{"validation length", X, y, Options{Validation: Dataset{X: [][]float32{{1}}, Y: []float32{1, 2}}}},
		{"negative poisson validation target", X, y, Options{Objective: ObjectivePoisson, Validation: Dataset{X: [][]float32{{1}}, Y: []float32{-2}}}},
	}
	// Zero counts are fine in validation rows (not in all training rows).
	if _, err := Fit(context.Background(), X, y, Options{Objective: ObjectivePoisson, MinChildSamples: 1,
		Validation: Dataset{X: [][]float32{{1}, {8}}, Y: []float32{0, 0}}}); err != nil {
		t.Fatalf("all-zero Poisson validation targets: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Fit(context.Background(), tt.X, tt.y, tt.opts); !errors.Is(err, ErrBadInput) {
				t.Fatalf("Fit = %v, want ErrBadInput", err)
			}
		})
	}
}

func TestTrainDivergesWithAnError(t *testing.T) {
	// Huge counts with an uncapped step and a learning rate far above 1
	// overflow exp: the error says so instead of returning a broken model.
	X, _ := step()
	y := []float32{0, 0, 0, 0, 0, 1e30, 1e30, 1e30, 1e30, 1e30}
	_, err := Train(context.Background(), X, y, Options{Objective: ObjectivePoisson, NumTrees: 50, MaxDepth: 1,
		LearningRate: 1000, MinChildSamples: 1, MaxDeltaStep: -1})
	if !errors.Is(err, errDiverged) {
		t.Fatalf("Train = %v, want the divergence error", err)
	}
}

// A trained log-link model survives its ONNX form: same trees, base, link
// and importance, and bit-identical Go predictions.
func TestTrainedPoissonModelONNXRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 2))
	X, y := counts(rng, 3000, 5)
	for _, obj := range []string{ObjectivePoisson, ObjectiveTweedie} {
		e, err := Train(context.Background(), X, y, Options{Objective: obj, NumTrees: 30, MaxLeaves: 20, MaxDepth: 8})
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.MarshalONNX()
		if err != nil {
			t.Fatal(err)
		}
		back, err := model.UnmarshalONNX(b)
		if err != nil {
			t.Fatal(err)
		}
		if back.Link != model.LinkExp || back.Base != e.Base || !reflect.DeepEqual(back.Trees, e.Trees) ||
			!reflect.DeepEqual(back.Meta.Importance, e.Meta.Importance) || back.Meta.Params["objective"] != obj {
			t.Fatalf("%s: model differs after the ONNX round trip", obj)
		}
		for i, r := range X {
			if a, b := back.Predict(r), e.Predict(r); math.Float32bits(a) != math.Float32bits(b) {
				t.Fatalf("%s row %d: %v after the round trip, %v before", obj, i, a, b)
			}
		}
	}
}

// Leaves that drop their histogram to bound memory have both children
// built from rows: the model stays the same.
func TestTrainHistogramBudgetKeepsTheModel(t *testing.T) {
	X, y := noisy(rand.New(rand.NewPCG(31, 3)), 20_000, 5, 1)
	train := func(maxHists int) *model.Ensemble {
		e, err := Train(context.Background(), X, y, Options{NumTrees: 5, MaxDepth: 12, MinChildSamples: 5, maxHists: maxHists})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	ref := train(0)
	if d := depth(ref.Trees[0]); d < 10 {
		t.Fatalf("depth %d: want deep trees, with many leaves waiting", d)
	}
	for _, m := range []int{1, 3, 40} {
		if got := train(m); !reflect.DeepEqual(got.Trees, ref.Trees) {
			t.Fatalf("at most %d kept histograms: different model", m)
		}
	}
}
