// Package training owns model training: a histogram gradient-boosted tree
// trainer producing model.Ensemble (Train, Fit), the synthetic demand
// history used to bootstrap a first model, the dataset builder that turns
// per-minute history into feature rows exactly as serving does
// (features.FromMinutes and features.Schema.Vector), and Bootstrap, which
// ties them together.
//
// The trainer bins every feature once (quantile bins, missing values in a
// bin of their own) and grows each tree on gradient histograms, deriving the
// larger child's histogram as its parent's minus its sibling's. Objectives:
// squared error (identity link) and, for counts, Poisson and Tweedie (log
// link: the model outputs exp of the raw score). Shrinkage, row and column
// subsampling per tree, min child weight and samples, L2 regularisation,
// a cap on the Newton step, max depth and max leaves (leaf-wise growth),
// early stopping on a time-ordered validation split, and gain/split-count
// feature importance. Gradient sums are exact (64-bit fixed point), so a
// model depends on the data, the options and the seed only, never on the
// number of workers; all cores are used.
package training

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgeworks/surge/model"
)

// ErrBadInput is wrapped by errors about the training data or options.
var ErrBadInput = errors.New("bad training input")

// Dataset is a set of rows (all the same width) and their targets.
type Dataset struct {
	X [][]float32
	Y []float32
}

// Options configures Train and Fit. A zero field takes the documented
// default.
//
// Trees grow leaf-wise (best first): the leaf whose best split reduces the
// loss most is split next, until MaxLeaves leaves or no leaf can be split;
// MaxDepth caps every branch. With MaxLeaves 0 every splittable leaf is
// split, which gives exactly the depth-wise tree of depth MaxDepth.
type Options struct {
	NumTrees     int     // boosting rounds; default 100
	MaxDepth     int     // maximum tree depth (root = depth 0); default 6
	MaxLeaves    int     // maximum leaves per tree; default 0 (only MaxDepth limits)
	LearningRate float64 // shrinkage applied to every leaf; default 0.1
	// MinChildSamples is the minimum number of (sampled) rows in a child;
	// default 20.
	MinChildSamples int
	MinChildWeight  float64 // minimum hessian sum in a child; default 1e-3
	// Lambda is the L2 regularisation of leaf values; default 0 (none).
	Lambda float64
	// MinSplitGain is the loss reduction a split must exceed; default 0.
	MinSplitGain float64
	// MaxDeltaStep caps the absolute Newton step −G/(H+λ) of every leaf
	// before shrinkage (split gains use the capped step). It keeps the
	// log-link objectives stable where the hessian is tiny. Default: 0.7
	// for poisson and tweedie, none for l2; negative: none.
	MaxDeltaStep float64
	// Subsample is the fraction of rows each tree sees (Bernoulli draw,
	// seeded per tree); default 1 (all rows).
	Subsample float64
	// ColsampleByTree is the fraction of the features each tree may split
	// on (at least one; drawn per tree from Seed); default 1 (all).
	ColsampleByTree float64
	MaxBins         int    // quantile bins per feature, at most 255; default 255
	Seed            uint64 // seeds row and column subsampling; same seed, same model
	// Objective is the loss: ObjectiveL2 (the default), ObjectivePoisson
	// or ObjectiveTweedie. The log-link objectives need targets ≥ 0 with a
	// positive mean; their models output exp(raw score) (model.LinkExp).
	Objective string
	// TweedieVariancePower is the Tweedie power p, in (1, 2); default 1.5.
	TweedieVariancePower float64

	// Validation rows for early stopping, later in time than the training
	// rows; default none.
	Validation Dataset
	// ValidationFraction, when Validation is empty, holds out the last
	// fraction of the rows (rows are time-ordered) for validation; default
	// 0 (no validation). Must be in [0, 1).
	ValidationFraction float64
	// EarlyStoppingRounds: with validation rows, training stops after this
	// many rounds without a lower validation loss, and the model keeps the
	// trees of the best round; default 20; negative: never stop early (the
	// best round is still kept).
	EarlyStoppingRounds int

	// Workers building histograms; default runtime.GOMAXPROCS(0). The
	// model does not depend on it.
	Workers int
	Logger  *slog.Logger // default slog.Default()

	// noSubtraction builds both children's histograms from their rows
	// instead of deriving the larger as parent − smaller (tests and
	// benchmarks compare the two).
	noSubtraction bool
	// maxHists overrides the number of histograms leaves may keep (tests).
	maxHists int
}

func (o Options) withDefaults() Options {
	if o.NumTrees == 0 {
		o.NumTrees = 100
	}
	if o.MaxDepth == 0 {
		o.MaxDepth = 6
	}
	if o.LearningRate == 0 {
		o.LearningRate = 0.1
	}
	if o.MinChildSamples == 0 {
		o.MinChildSamples = 20
	}
	if o.MinChildWeight == 0 {
		o.MinChildWeight = 1e-3
	}
	if o.Subsample == 0 {
		o.Subsample = 1
	}
	if o.ColsampleByTree == 0 {
		o.ColsampleByTree = 1
	}
	if o.MaxBins == 0 {
		o.MaxBins = 255
	}
	if o.Objective == "" {
		o.Objective = ObjectiveL2
	}
	if o.TweedieVariancePower == 0 {
		o.TweedieVariancePower = 1.5
	}
	if o.MaxDeltaStep == 0 && (o.Objective == ObjectivePoisson || o.Objective == ObjectiveTweedie) {
		o.MaxDeltaStep = defaultCountMaxDeltaStep
	}
	if o.EarlyStoppingRounds == 0 {
		o.EarlyStoppingRounds = 20
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.NumTrees < 0:
		return fmt.Errorf("%w: NumTrees %d", ErrBadInput, o.NumTrees)
	case o.MaxDepth < 1 || o.MaxDepth > 30:
		return fmt.Errorf("%w: MaxDepth %d (want 1..30)", ErrBadInput, o.MaxDepth)
	case o.MaxLeaves < 0 || o.MaxLeaves == 1:
		return fmt.Errorf("%w: MaxLeaves %d (want 0 or at least 2)", ErrBadInput, o.MaxLeaves)
	case !(o.LearningRate > 0) || math.IsInf(o.LearningRate, 0):
		return fmt.Errorf("%w: LearningRate %v", ErrBadInput, o.LearningRate)
	case o.MinChildSamples < 1:
		return fmt.Errorf("%w: MinChildSamples %d", ErrBadInput, o.MinChildSamples)
	case o.MinChildWeight < 0 || o.Lambda < 0 || o.MinSplitGain < 0:
		return fmt.Errorf("%w: MinChildWeight, Lambda and MinSplitGain must not be negative", ErrBadInput)
	case math.IsNaN(o.MaxDeltaStep) || math.IsInf(o.MaxDeltaStep, 0) || math.IsNaN(o.Lambda) || math.IsInf(o.Lambda, 0):
		return fmt.Errorf("%w: MaxDeltaStep %v, Lambda %v", ErrBadInput, o.MaxDeltaStep, o.Lambda)
	case !(o.Subsample > 0 && o.Subsample <= 1):
		return fmt.Errorf("%w: Subsample %v (want (0, 1])", ErrBadInput, o.Subsample)
	case !(o.ColsampleByTree > 0 && o.ColsampleByTree <= 1):
		return fmt.Errorf("%w: ColsampleByTree %v (want (0, 1])", ErrBadInput, o.ColsampleByTree)
	case o.MaxBins < 2 || o.MaxBins > 255:
		return fmt.Errorf("%w: MaxBins %d (want 2..255)", ErrBadInput, o.MaxBins)
	case !(o.ValidationFraction >= 0 && o.ValidationFraction < 1):
		return fmt.Errorf("%w: ValidationFraction %v (want [0, 1))", ErrBadInput, o.ValidationFraction)
	}
	if _, err := newObjective(o); err != nil {
		return err
	}
	return nil
}

// Params lists the options (defaults applied) for model.Metadata.Params.
func (o Options) Params() map[string]string {
	o = o.withDefaults()
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	p := map[string]string{
		"objective":         o.Objective,
		"num_trees":         strconv.Itoa(o.NumTrees),
		"max_depth":         strconv.Itoa(o.MaxDepth),
		"max_leaves":        strconv.Itoa(o.MaxLeaves),
		"learning_rate":     f(o.LearningRate),
		"min_child_samples": strconv.Itoa(o.MinChildSamples),
		"min_child_weight":  f(o.MinChildWeight),
		"lambda":            f(o.Lambda),
		"min_split_gain":    f(o.MinSplitGain),
		"max_delta_step":    f(max(0, o.MaxDeltaStep)),
		"subsample":         f(o.Subsample),
		"colsample_bytree":  f(o.ColsampleByTree),
		"max_bins":          strconv.Itoa(o.MaxBins),
		"seed":              strconv.FormatUint(o.Seed, 10),
	}
	if o.Objective == ObjectiveTweedie {
		p["tweedie_variance_power"] = f(o.TweedieVariancePower)
	}
	if len(o.Validation.X) > 0 || o.ValidationFraction > 0 {
		p["early_stopping_rounds"] = strconv.Itoa(o.EarlyStoppingRounds)
		if len(o.Validation.X) == 0 {
			p["validation_fraction"] = f(o.ValidationFraction)
		}
	}
	return p
}

// Why training stopped (Result.StopReason).
const (
	StopNumTrees      = "num_trees"      // all NumTrees rounds ran
	StopEarlyStopping = "early_stopping" // EarlyStoppingRounds without improvement
	StopNoSplit       = "no_split"       // a tree found no split worth making
)

// Result is what Fit returns: the model and how training went.
type Result struct {
	// Model has the trees of the best round, Params and the feature
	// importance (Meta.Importance, over the kept trees) in its metadata;
	// the rest of Meta is left to the caller.
	Model *model.Ensemble
	// Rounds is the number of trees grown.
	Rounds int
	// BestIteration is the number of trees kept: with validation rows the
	// round count k with the lowest validation loss (the earliest on
	// ties; 0 means the base alone), without them Rounds.
	BestIteration int
	// Metric names the validation loss: "rmse" (l2), "poisson_deviance" or
	// "tweedie_deviance" (mean deviances).
	Metric string
	// ValidLoss[k] is the validation loss of the first k trees, k = 0 ..
	// Rounds, computed from the model's own raw scores; nil without
	// validation rows.
	ValidLoss []float64
	// ValidPred[i] is the kept model's prediction for validation row i,
	// bit for bit what Model.Predict gives; nil without validation rows.
	ValidPred            []float32
	StopReason           string
	TrainRows, ValidRows int
	Duration             time.Duration
}

// Train fits a gradient-boosted tree ensemble to rows X (all the same width)
// and targets y; it is Fit without the training report. Meta is left for
// the caller, except Params and Importance.
func Train(ctx context.Context, X [][]float32, y []float32, opts Options) (*model.Ensemble, error) {
	r, err := Fit(ctx, X, y, opts)
	if err != nil {
		return nil, err
	}
	return r.Model, nil
}

// Fit fits a gradient-boosted tree ensemble to rows X (all the same width)
// and targets y, rows in time order. Features are binned once (quantile
// bins, missing values in a bin of their own); each tree is grown on
// gradient histograms, the larger child's derived from its parent's minus
// its sibling's. Gradients are summed as 64-bit fixed-point integers (scaled
// per tree by a power of two), so sums are exact: the model is the same for
// given data and options (including Seed), whatever the number of workers.
// Training stops early when a tree finds no split worth making, or, with
// validation rows (Options.Validation or ValidationFraction), when the
// validation loss has not improved for EarlyStoppingRounds rounds; the
// model then keeps the best round's trees.
func Fit(ctx context.Context, X [][]float32, y []float32, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := checkData(X, y); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	valid := opts.Validation
	if len(valid.X) > 0 || len(valid.Y) > 0 {
		if err := checkData(valid.X, valid.Y); err != nil {
			return nil, fmt.Errorf("train: validation: %w", err)
		}
		if len(valid.X[0]) != len(X[0]) {
			return nil, fmt.Errorf("train: %w: validation rows have %d features, training rows %d", ErrBadInput, len(valid.X[0]), len(X[0]))
		}
	} else if opts.ValidationFraction > 0 {
		nv := int(float64(len(X)) * opts.ValidationFraction)
		if nv < 1 || nv >= len(X) {
			return nil, fmt.Errorf("train: %w: ValidationFraction %v of %d rows leaves %d validation rows", ErrBadInput, opts.ValidationFraction, len(X), nv)
		}
		cut := len(X) - nv
		valid = Dataset{X: X[cut:], Y: y[cut:]}
		X, y = X[:cut], y[:cut]
	}
	obj, _ := newObjective(opts)
	if err := obj.checkTargets(y, true); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if len(valid.Y) > 0 {
		if err := obj.checkTargets(valid.Y, false); err != nil {
			return nil, fmt.Errorf("train: validation: %w", err)
		}
	}

	start := time.Now()
	b := newBooster(X, y, opts, obj)
	res := &Result{Metric: obj.metric(), TrainRows: len(X), ValidRows: len(valid.X), StopReason: StopNumTrees}
	var ev *evaluator
	if len(valid.X) > 0 {
		ev = newEvaluator(valid, b.base, obj, opts.Workers)
		res.ValidLoss = append(res.ValidLoss, ev.loss())
		res.ValidPred = slices.Clone(ev.raw)
	}
	var trees []model.Tree
	var splits [][]splitRecord // per tree
	best := 0
	for t := range opts.NumTrees {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("train: after %d trees: %w", t, err)
		}
		tree, recs, err := b.boost(uint64(t))
		if err != nil {
			return nil, fmt.Errorf("train: tree %d: %w", t, err)
		}
		if tree.Nodes == nil {
			res.StopReason = StopNoSplit
			opts.Logger.Debug("training stopped: no split improves the loss", "trees", t)
			break
		}
		trees = append(trees, tree)
		splits = append(splits, recs)
		if ev == nil {
			best = len(trees)
			continue
		}
		ev.add(&tree)
		loss := ev.loss()
		res.ValidLoss = append(res.ValidLoss, loss)
		if loss < res.ValidLoss[best] {
			best = len(trees)
			copy(res.ValidPred, ev.raw)
		}
		if opts.EarlyStoppingRounds > 0 && len(trees)-best >= opts.EarlyStoppingRounds {
			res.StopReason = StopEarlyStopping
			opts.Logger.Debug("training stopped early", "trees", len(trees), "best_iteration", best,
				"metric", res.Metric, "best_loss", res.ValidLoss[best])
			break
		}
	}
	res.Rounds, res.BestIteration = len(trees), best
	if obj.link() == model.LinkExp {
		for i, r := range res.ValidPred {
			res.ValidPred[i] = float32(math.Exp(float64(r)))
		}
	}
	imp := make([]model.FeatureImportance, b.f)
	for _, recs := range splits[:best] {
		for _, r := range recs {
			imp[r.feature].Gain += r.gain
			imp[r.feature].Splits++
		}
	}
	res.Model = &model.Ensemble{
		Trees: trees[:best:best], Base: b.base, NumFeatures: b.f, Link: obj.link(),
		Meta: model.Metadata{Params: opts.Params(), Importance: imp},
	}
	res.Duration = time.Since(start)
	opts.Logger.Debug("trained tree ensemble", "objective", opts.Objective, "rows", b.n, "features", b.f,
		"trees", best, "rounds", res.Rounds, "stop", res.StopReason, "nodes", res.Model.NumNodes(), "duration", res.Duration)
	return res, nil
}

// evaluator keeps the raw scores of the validation rows as trees are added,
// summed exactly as model.Ensemble.PredictRaw does.
type evaluator struct {
	d       Dataset
	base    float32
	obj     objective
	workers int
	sum     []float32
	raw     []float32
}

func newEvaluator(d Dataset, base float32, obj objective, workers int) *evaluator {
	return &evaluator{d: d, base: base, obj: obj, workers: workers,
		sum: make([]float32, len(d.X)), raw: make([]float32, len(d.X))}
}

// evalChunk is the fixed chunk size of validation work; partial loss sums
// are added in chunk order, so the loss does not depend on the workers.
const evalChunk = 4096

func (ev *evaluator) add(t *model.Tree) {
	n := len(ev.sum)
	parallelFor(ev.workers, (n+evalChunk-1)/evalChunk, func(c int) {
		for i := c * evalChunk; i < min(n, (c+1)*evalChunk); i++ {
			ev.sum[i] += leafValue(t.Nodes, ev.d.X[i])
		}
	})
}

func (ev *evaluator) loss() float64 {
	n := len(ev.sum)
	chunks := (n + evalChunk - 1) / evalChunk
	part := make([]float64, chunks)
	parallelFor(ev.workers, chunks, func(c int) {
		lo, hi := c*evalChunk, min(n, (c+1)*evalChunk)
		for i := lo; i < hi; i++ {
			ev.raw[i] = ev.sum[i] + ev.base
		}
		part[c] = ev.obj.lossSum(ev.d.Y[lo:hi], ev.raw[lo:hi])
	})
	s := 0.0
	for _, p := range part {
		s += p
	}
	return ev.obj.finish(s, n)
}

// predict sets out[i] to e.Predict(X[i]), rows in chunks on up to workers
// goroutines (0: GOMAXPROCS).
func predict(e *model.Ensemble, X [][]float32, out []float32, workers int) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	out = out[:len(X)]
	parallelFor(workers, (len(X)+evalChunk-1)/evalChunk, func(c int) {
		lo, hi := c*evalChunk, min(len(X), (c+1)*evalChunk)
		e.PredictBatch(X[lo:hi], out[lo:hi])
	})
}

// leafValue walks one tree as model.Ensemble.Predict does.
func leafValue(nodes []model.Node, row []float32) float32 {
	n := &nodes[0]
	for !n.Leaf {
		if row[n.Feature] <= n.Threshold {
			n = &nodes[n.True]
		} else {
			n = &nodes[n.False]
		}
	}
	return n.Value
}

func checkData(X [][]float32, y []float32) error {
	if len(X) == 0 {
		return fmt.Errorf("%w: no rows", ErrBadInput)
	}
	if len(X) != len(y) {
		return fmt.Errorf("%w: %d rows, %d targets", ErrBadInput, len(X), len(y))
	}
	if len(X) > math.MaxInt32 {
		return fmt.Errorf("%w: too many rows", ErrBadInput)
	}
	f := len(X[0])
	if f == 0 {
		return fmt.Errorf("%w: rows have no features", ErrBadInput)
	}
	for i, r := range X {
		if len(r) != f {
			return fmt.Errorf("%w: row %d has %d features, row 0 has %d", ErrBadInput, i, len(r), f)
		}
	}
	for i, v := range y {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: target %d is %v", ErrBadInput, i, v)
		}
	}
	return nil
}

// parallelFor runs fn(i) for i in [0, n) on up to workers goroutines. fn
// must only write state owned by i.
func parallelFor(workers, n int, fn func(i int)) {
	if workers <= 1 || n <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= n {
					return
				}
				fn(k)
			}
		})
	}
	wg.Wait()
}
