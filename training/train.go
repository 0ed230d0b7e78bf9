// Package training owns model training: a histogram gradient-boosted tree
// trainer producing model.Ensemble, the synthetic demand history used to
// bootstrap a first model, the dataset builder that turns per-minute history
// into feature rows exactly as serving does (features.FromMinutes and
// features.Schema.Vector), and Bootstrap, which ties them together.
package training

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgeworks/surge/model"
)

// ErrBadInput is wrapped by errors about the training data or options.
var ErrBadInput = errors.New("bad training input")

// Options configures Train. A zero field takes the documented default.
type Options struct {
	NumTrees        int     // boosting rounds; default 100
	MaxDepth        int     // maximum tree depth (root = depth 0); default 6
	LearningRate    float64 // shrinkage applied to every leaf; default 0.1
	MinChildSamples int     // minimum rows in a child; default 20
	MinChildWeight  float64 // minimum hessian sum in a child; default 1e-3
	// Lambda is the L2 regularisation of leaf values; default 0 (none).
	Lambda float64
	// MinSplitGain is the loss reduction a split must exceed; default 0.
	MinSplitGain float64
	// Subsample is the fraction of rows each tree sees (Bernoulli draw,
	// seeded per tree); default 1 (all rows).
	Subsample float64
	MaxBins   int    // quantile bins per feature, at most 255; default 255
	Seed      uint64 // seeds row subsampling; same seed, same model
	// Objective is the loss: "l2" (squared error, the default).
	Objective string
	// Workers building histograms; default runtime.GOMAXPROCS(0). The
	// model does not depend on it.
	Workers int
	Logger  *slog.Logger // default slog.Default()
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
	if o.MaxBins == 0 {
		o.MaxBins = 255
	}
	if o.Objective == "" {
		o.Objective = "l2"
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
	case !(o.LearningRate > 0) || math.IsInf(o.LearningRate, 0):
		return fmt.Errorf("%w: LearningRate %v", ErrBadInput, o.LearningRate)
	case o.MinChildSamples < 1:
		return fmt.Errorf("%w: MinChildSamples %d", ErrBadInput, o.MinChildSamples)
	case o.MinChildWeight < 0 || o.Lambda < 0 || o.MinSplitGain < 0:
		return fmt.Errorf("%w: MinChildWeight, Lambda and MinSplitGain must not be negative", ErrBadInput)
	case !(o.Subsample > 0 && o.Subsample <= 1):
		return fmt.Errorf("%w: Subsample %v (want (0, 1])", ErrBadInput, o.Subsample)
	case o.MaxBins < 2 || o.MaxBins > 255:
		return fmt.Errorf("%w: MaxBins %d (want 2..255)", ErrBadInput, o.MaxBins)
	}
	if _, err := newObjective(o.Objective); err != nil {
		return err
	}
	return nil
}

// Params lists the options (defaults applied) for model.Metadata.Params.
func (o Options) Params() map[string]string {
	o = o.withDefaults()
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	return map[string]string{
		"objective":         o.Objective,
		"num_trees":         strconv.Itoa(o.NumTrees),
		"max_depth":         strconv.Itoa(o.MaxDepth),
		"learning_rate":     f(o.LearningRate),
		"min_child_samples": strconv.Itoa(o.MinChildSamples),
		"min_child_weight":  f(o.MinChildWeight),
		"lambda":            f(o.Lambda),
		"min_split_gain":    f(o.MinSplitGain),
		"subsample":         f(o.Subsample),
		"max_bins":          strconv.Itoa(o.MaxBins),
		"seed":              strconv.FormatUint(o.Seed, 10),
	}
}

// objective is a twice-differentiable loss. Predictions are raw scores
// (base plus the sum of trees).
type objective interface {
	// initScore is the best constant prediction, the ensemble's base.
	initScore(y []float32) float64
	// gradients fills the first and second derivatives of the loss with
	// respect to the prediction, for every row.
	gradients(y, pred []float32, g, h []float64)
}

func newObjective(name string) (objective, error) {
	switch name {
	case "l2":
		return l2{}, nil
	}
	return nil, fmt.Errorf("%w: unknown objective %q", ErrBadInput, name)
}

// l2 is the squared error ½(pred-y)².
type l2 struct{}

func (l2) initScore(y []float32) float64 {
	s := 0.0
	for _, v := range y {
		s += float64(v)
	}
	return s / float64(len(y))
}

func (l2) gradients(y, pred []float32, g, h []float64) {
	for i := range y {
		g[i] = float64(pred[i]) - float64(y[i])
		h[i] = 1
	}
}

// Train fits a gradient-boosted tree ensemble to rows X (all the same width)
// and targets y. The result is deterministic for given data and options
// (including Seed), whatever the number of workers. Training stops early
// when a tree finds no split worth making. Meta is left for the caller,
// except Params.
func Train(ctx context.Context, X [][]float32, y []float32, opts Options) (*model.Ensemble, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := checkData(X, y); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	start := time.Now()
	obj, _ := newObjective(opts.Objective)
	b := newBooster(X, y, opts, obj)
	e := &model.Ensemble{Base: b.base, NumFeatures: b.f, Meta: model.Metadata{Params: opts.Params()}}
	for t := range opts.NumTrees {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("train: after %d trees: %w", t, err)
		}
		tree, ok := b.boost(rand.New(rand.NewPCG(opts.Seed, uint64(t))))
		if !ok {
			opts.Logger.Debug("training stopped: no split improves the loss", "trees", t)
			break
		}
		e.Trees = append(e.Trees, tree)
	}
	opts.Logger.Debug("trained tree ensemble", "rows", b.n, "features", b.f, "trees", len(e.Trees),
		"nodes", e.NumNodes(), "duration", time.Since(start))
	return e, nil
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
