package training

import (
	"math/rand/v2"

	"github.com/surgeworks/surge/model"
)

// Below this many row×feature cells a histogram is built on one goroutine.
const parallelHistCells = 1 << 15

// histBin accumulates the gradients of the rows falling into one bin.
type histBin struct {
	g, h float64
	n    int64
}

// booster holds the training state: binned data, per-row scores and
// gradients, and scratch space reused by every tree.
type booster struct {
	opts Options
	obj  objective
	n, f int

	bins []uint8 // column-major: bins[f*n+i]
	fbs  []featureBins
	off  []int       // histogram offset of each feature (k+1 bins: values and NaN)
	hist [][]histBin // one histogram per depth, reused

	y    []float32
	base float32
	sum  []float32 // per row: sum of the trees so far, float32, in tree order
	pred []float32 // per row: sum + base, what model.Ensemble.Predict returns
	g, h []float64

	rows, tmp []int32

	// The tree being grown, and the bin of each split.
	nodes    []model.Node
	splitBin []uint8
}

func newBooster(X [][]float32, y []float32, opts Options, obj objective) *booster {
	b := &booster{opts: opts, obj: obj, n: len(X), f: len(X[0]), y: y}
	b.bins, b.fbs = binFeatures(X, opts.MaxBins, opts.Workers)
	b.off = make([]int, b.f+1)
	for f, fb := range b.fbs {
		b.off[f+1] = b.off[f] + fb.k() + 1
	}
	b.hist = make([][]histBin, opts.MaxDepth)
	for d := range b.hist {
		b.hist[d] = make([]histBin, b.off[b.f])
	}
	b.base = float32(obj.initScore(y))
	b.sum = make([]float32, b.n)
	b.pred = make([]float32, b.n)
	b.g = make([]float64, b.n)
	b.h = make([]float64, b.n)
	b.rows = make([]int32, 0, b.n)
	b.tmp = make([]int32, b.n)
	return b
}

// boost grows one tree on the current gradients, adds it to the per-row
// sums and returns it; ok is false when the root finds no split.
func (b *booster) boost(rng *rand.Rand) (tree model.Tree, ok bool) {
	for i := range b.pred {
		b.pred[i] = b.sum[i] + b.base
	}
	b.obj.gradients(b.y, b.pred, b.g, b.h)

	b.rows = b.rows[:0]
	for i := range b.n {
		if b.opts.Subsample >= 1 || rng.Float64() < b.opts.Subsample {
			b.rows = append(b.rows, int32(i))
		}
	}
	b.nodes = b.nodes[:0]
	b.splitBin = b.splitBin[:0]
	b.grow(b.rows, 0)
	if b.nodes[0].Leaf {
		return model.Tree{}, false
	}
	tree.Nodes = append([]model.Node(nil), b.nodes...)
	b.addTree()
	return tree, true
}

// grow makes the subtree for rows at depth and returns its node index.
func (b *booster) grow(rows []int32, depth int) int32 {
	var G, H float64
	for _, r := range rows {
		G += b.g[r]
		H += b.h[r]
	}
	id := int32(len(b.nodes))
	b.nodes = append(b.nodes, model.Node{})
	b.splitBin = append(b.splitBin, 0)
	s, ok := b.bestSplit(rows, depth, G, H)
	if !ok {
		v := 0.0
		if d := H + b.opts.Lambda; d > 0 {
			v = -b.opts.LearningRate * G / d
		}
		b.nodes[id] = model.Node{Leaf: true, Value: float32(v)}
		return id
	}
	nl := b.partition(rows, s.feature, s.bin)
	b.splitBin[id] = s.bin
	l := b.grow(rows[:nl], depth+1)
	r := b.grow(rows[nl:], depth+1)
	b.nodes[id] = model.Node{Feature: int32(s.feature), Threshold: b.fbs[s.feature].thr[s.bin], True: l, False: r}
	return id
}

type split struct {
	feature int
	bin     uint8
	gain    float64
}

// bestSplit finds the split of rows with the largest loss reduction
// ½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] that satisfies the child
// constraints and exceeds MinSplitGain. Ties go to the lowest feature, then
// the lowest bin.
func (b *booster) bestSplit(rows []int32, depth int, G, H float64) (split, bool) {
	o := &b.opts
	N := int64(len(rows))
	if depth >= o.MaxDepth || N < 2*int64(o.MinChildSamples) {
		return split{}, false
	}
	hist := b.hist[depth]
	b.buildHist(rows, hist)
	lambda := o.Lambda
	parent := G * G / (H + lambda)
	best := split{gain: o.MinSplitGain}
	found := false
	minN := int64(o.MinChildSamples)
	for f := range b.f {
		k := b.fbs[f].k()
		h := hist[b.off[f] : b.off[f]+k]
		var gl, hl float64
		var nl int64
		for bin, e := range h {
			gl += e.g
			hl += e.h
			nl += e.n
			if nl < minN {
				continue
			}
			nr := N - nl
			if nr < minN {
				break
			}
			hr := H - hl
			if hl < o.MinChildWeight || hr < o.MinChildWeight {
				continue
			}
			gr := G - gl
			gain := 0.5 * (gl*gl/(hl+lambda) + gr*gr/(hr+lambda) - parent)
			if gain > best.gain {
				best = split{feature: f, bin: uint8(bin), gain: gain}
				found = true
			}
		}
	}
	return best, found
}

// buildHist fills hist with the gradient sums of rows per feature and bin,
// one feature per goroutine: the sums do not depend on the schedule.
func (b *booster) buildHist(rows []int32, hist []histBin) {
	workers := b.opts.Workers
	if len(rows)*b.f < parallelHistCells {
		workers = 1
	}
	parallelFor(workers, b.f, func(f int) {
		col := b.bins[f*b.n : (f+1)*b.n]
		h := hist[b.off[f]:b.off[f+1]]
		clear(h)
		g, hs := b.g, b.h
		for _, r := range rows {
			e := &h[col[r]]
			e.g += g[r]
			e.h += hs[r]
			e.n++
		}
	})
}

// partition reorders rows stably so that those with bin <= bin on feature
// come first, and returns their count.
func (b *booster) partition(rows []int32, feature int, bin uint8) int {
	col := b.bins[feature*b.n : (feature+1)*b.n]
	l, t := 0, 0
	for _, r := range rows {
		if col[r] <= bin {
			rows[l] = r
			l++
		} else {
			b.tmp[t] = r
			t++
		}
	}
	copy(rows[l:], b.tmp[:t])
	return l
}

// addTree adds the current tree's output to every row's sum, routing rows by
// bins (equivalent to the float thresholds on training rows).
func (b *booster) addTree() {
	const chunk = 8192
	parallelFor(b.opts.Workers, (b.n+chunk-1)/chunk, func(c int) {
		for i := c * chunk; i < min(b.n, (c+1)*chunk); i++ {
			id := int32(0)
			for !b.nodes[id].Leaf {
				nd := &b.nodes[id]
				if b.bins[int(nd.Feature)*b.n+i] <= b.splitBin[id] {
					id = nd.True
				} else {
					id = nd.False
				}
			}
			b.sum[i] += b.nodes[id].Value
		}
	})
}
