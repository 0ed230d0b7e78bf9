// Package model owns the demand model: a gradient-boosted tree ensemble in
// memory with its link (identity, or exp for count objectives), its pure-Go
// evaluator (the reference every runtime must match: bit for bit with the
// identity link, within ExpMaxULP with the exp link), and its ONNX form (one
// ai.onnx.ml TreeEnsembleRegressor node, followed by an Exp node for the exp
// link) with the metadata that ties a model to a feature schema.
package model

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// ErrInvalidModel is wrapped by every error about a malformed ensemble or
// ONNX file.
var ErrInvalidModel = errors.New("invalid model")

// Node is one node of a regression tree. A split node sends a row to True
// when row[Feature] <= Threshold (ONNX BRANCH_LEQ) and to False otherwise;
// NaN compares false, so missing values go to False. A leaf holds Value.
type Node struct {
	Feature   int32   // column of the split (split nodes)
	Threshold float32 // split threshold (split nodes)
	True      int32   // child index in Tree.Nodes when row[Feature] <= Threshold
	False     int32   // child index otherwise (also for NaN)
	Leaf      bool
	Value     float32 // leaf output (leaves)
}

// Tree is a binary regression tree; Nodes[0] is the root.
type Tree struct {
	Nodes []Node
}

// Metadata describes where a model comes from and what it expects. It is
// stored in the ONNX metadata_props.
type Metadata struct {
	Name         string
	Version      string
	SchemaHash   string   // features.Schema.Hash of the training schema
	FeatureNames []string // column names, in input order
	TrainedAt    time.Time
	Params       map[string]string  // training parameters
	Metrics      map[string]float64 // evaluation results
	// Importance is the trainer's feature importance, one entry per input
	// column (FeatureNames order); nil when unknown.
	Importance []FeatureImportance
}

// ParamDataSource is the Params key saying what a model was trained on:
// DataGenerated (synthetic history) or DataReal (the deployment's demand
// history in ClickHouse).
const (
	ParamDataSource = "data"
	DataGenerated   = "generated"
	DataReal        = "real"
)

// FeatureImportance is what the splits on one feature contributed to a
// model.
type FeatureImportance struct {
	// Gain is the total training-loss reduction of the splits on the
	// feature (before shrinkage), summed over the model's trees.
	Gain float64 `json:"gain"`
	// Splits is the number of split nodes on the feature.
	Splits int `json:"splits"`
}

// ImportanceGain returns the gain importance keyed by feature name ("f0",
// "f1", … for columns without a name), or nil without importance.
func (md Metadata) ImportanceGain() map[string]float64 {
	if len(md.Importance) == 0 {
		return nil
	}
	m := make(map[string]float64, len(md.Importance))
	for i, fi := range md.Importance {
		name := "f" + strconv.Itoa(i)
		if i < len(md.FeatureNames) {
			name = md.FeatureNames[i]
		}
		m[name] = fi.Gain
	}
	return m
}

// Links: how the raw score (sum of the trees plus Base) becomes the output.
const (
	// LinkIdentity outputs the raw score (squared-error models).
	LinkIdentity = "identity"
	// LinkExp outputs exp(raw score) (log-link count models: Poisson,
	// Tweedie), computed as float32(math.Exp(float64(raw))).
	LinkExp = "exp"
)

// ExpMaxULP bounds the difference, in units in the last place of the float32
// result, between the Go walk's exp (float32(math.Exp(float64(raw)))) and
// ONNX Runtime 1.24.1's Exp operator on the same float32 raw score; the two
// are not bit-identical. Measured on the project's machine (x86-64, AVX-512,
// one intra-op thread) over every float32 in [-88.7, 88.7] (2.24e9 values,
// in batches of 2^20): 99.5 % identical, the rest 1 ULP apart; single rows
// and batches of 2 to 33 rows (ONNX Runtime's scalar tail) gave the same.
const ExpMaxULP = 1

// Ensemble is a sum of regression trees plus a base value, through a link:
// raw(x) = (sum over trees of leaf(x)) + Base, f(x) = link(raw(x)).
type Ensemble struct {
	Trees       []Tree
	Base        float32
	NumFeatures int // width of an input row
	// Link is LinkIdentity (or empty, the same) or LinkExp.
	Link string
	Meta Metadata
}

// Predict evaluates the ensemble on one row of NumFeatures values: the raw
// score (see PredictRaw) through the link. With the identity link the
// result is bit-identical to ONNX Runtime's; with the exp link it is within
// ExpMaxULP of it. The ensemble must be valid (see Validate) and row at least
// NumFeatures long.
func (e *Ensemble) Predict(row []float32) float32 {
	s := e.PredictRaw(row)
	if e.Link == LinkExp {
		return float32(math.Exp(float64(s)))
	}
	return s
}

// PredictRaw is the raw score of one row, before the link. The sum is
// accumulated in float32, in tree order, starting from zero, and Base is
// added last: exactly what ONNX Runtime's TreeEnsembleRegressor does with
// float thresholds and one thread, so both give bit-identical results.
//
// The trees are walked walkGroup at a time, one level of each in turn: the
// node loads of different trees do not depend on each other, so when the
// model is not in the CPU caches (in a server, between requests) their
// misses overlap instead of queueing one after another.
func (e *Ensemble) PredictRaw(row []float32) float32 {
	var sum float32
	for trees := e.Trees; len(trees) > 0; {
		g := trees[:min(walkGroup, len(trees))]
		var cur [walkGroup]*Node
		for i := range g {
			cur[i] = &g[i].Nodes[0]
		}
		for walking := true; walking; {
			walking = false
			for i := range g {
				n := cur[i]
				if n.Leaf {
					continue
				}
				walking = true
				// Branch-free (SETcc/CMOV): the comparison is
				// unpredictable, a branch costs twice the time. NaN
				// compares false, so le stays 0.
				var le int32
				if row[n.Feature] <= n.Threshold {
					le = 1
				}
				cur[i] = &g[i].Nodes[n.False+(n.True-n.False)*le]
			}
		}
		for i := range g {
			sum += cur[i].Value
		}
		trees = trees[len(g):]
	}
	return sum + e.Base
}

// walkGroup is how many trees PredictRaw walks side by side.
const walkGroup = 8

// PredictBatch evaluates rows into out, which must be at least len(rows)
// long.
func (e *Ensemble) PredictBatch(rows [][]float32, out []float32) {
	out = out[:len(rows)]
	for i, r := range rows {
		out[i] = e.Predict(r)
	}
}

// NumNodes is the total node count over all trees.
func (e *Ensemble) NumNodes() int {
	n := 0
	for _, t := range e.Trees {
		n += len(t.Nodes)
	}
	return n
}

// Validate checks that the ensemble can be evaluated safely: every tree is a
// proper binary tree rooted at Nodes[0] (each node reachable exactly once),
// split features are within NumFeatures, thresholds are not NaN, leaf
// values and Base are finite, the link is known, and feature names and
// importance, when present, have one entry per feature. Errors wrap
// ErrInvalidModel.
func (e *Ensemble) Validate() error {
	if e.NumFeatures <= 0 {
		return fmt.Errorf("%w: NumFeatures is %d", ErrInvalidModel, e.NumFeatures)
	}
	if !finite(e.Base) {
		return fmt.Errorf("%w: base value %v is not finite", ErrInvalidModel, e.Base)
	}
	switch e.Link {
	case "", LinkIdentity, LinkExp:
	default:
		return fmt.Errorf("%w: link %q (want %q or %q)", ErrInvalidModel, e.Link, LinkIdentity, LinkExp)
	}
	if n := len(e.Meta.FeatureNames); n != 0 && n != e.NumFeatures {
		return fmt.Errorf("%w: %d feature names for %d features", ErrInvalidModel, n, e.NumFeatures)
	}
	if n := len(e.Meta.Importance); n != 0 && n != e.NumFeatures {
		return fmt.Errorf("%w: importance of %d features for %d features", ErrInvalidModel, n, e.NumFeatures)
	}
	var seen []bool
	var stack []int32
	for t, tree := range e.Trees {
		nodes := tree.Nodes
		if len(nodes) == 0 {
			return fmt.Errorf("%w: tree %d has no nodes", ErrInvalidModel, t)
		}
		if len(nodes) > math.MaxInt32 {
			return fmt.Errorf("%w: tree %d has too many nodes", ErrInvalidModel, t)
		}
		seen = append(seen[:0], make([]bool, len(nodes))...)
		stack = append(stack[:0], 0)
		visited := 0
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[i] {
				return fmt.Errorf("%w: tree %d: node %d is reached twice", ErrInvalidModel, t, i)
			}
			seen[i] = true
			visited++
			n := nodes[i]
			if n.Leaf {
				if !finite(n.Value) {
					return fmt.Errorf("%w: tree %d: leaf %d value %v is not finite", ErrInvalidModel, t, i, n.Value)
				}
				continue
			}
			if n.Feature < 0 || int(n.Feature) >= e.NumFeatures {
				return fmt.Errorf("%w: tree %d: node %d splits on feature %d of %d", ErrInvalidModel, t, i, n.Feature, e.NumFeatures)
			}
			if n.Threshold != n.Threshold {
				return fmt.Errorf("%w: tree %d: node %d has a NaN threshold", ErrInvalidModel, t, i)
			}
			for _, c := range [2]int32{n.True, n.False} {
				if c < 0 || int(c) >= len(nodes) {
					return fmt.Errorf("%w: tree %d: node %d has child %d out of range", ErrInvalidModel, t, i, c)
				}
				stack = append(stack, c)
			}
		}
		if visited != len(nodes) {
			return fmt.Errorf("%w: tree %d: %d of %d nodes are unreachable", ErrInvalidModel, t, len(nodes)-visited, len(nodes))
		}
	}
	return nil
}

func finite(f float32) bool {
	return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0)
}
