// Package model owns the demand model: a gradient-boosted tree ensemble in
// memory, its pure-Go evaluator (the reference every runtime must match bit
// for bit), and its ONNX form (one ai.onnx.ml TreeEnsembleRegressor node) with
// the metadata that ties a model to a feature schema.
package model

import (
	"errors"
	"fmt"
	"math"
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
}

// Ensemble is a sum of regression trees plus a base value:
// f(x) = (sum over trees of leaf(x)) + Base.
type Ensemble struct {
	Trees       []Tree
	Base        float32
	NumFeatures int // width of an input row
	Meta        Metadata
}

// Predict evaluates the ensemble on one row of NumFeatures values. The sum
// is accumulated in float32, in tree order, starting from zero, and Base is
// added last: exactly what ONNX Runtime's TreeEnsembleRegressor does with
// float thresholds and one thread, so both give bit-identical results.
// The ensemble must be valid (see Validate) and row at least NumFeatures long.
func (e *Ensemble) Predict(row []float32) float32 {
	var sum float32
	for t := range e.Trees {
		nodes := e.Trees[t].Nodes
		n := &nodes[0]
		for !n.Leaf {
			// Branch-free (SETcc/CMOV): the comparison is
			// unpredictable, a branch costs twice the time. NaN
			// compares false, so le stays 0.
			var le int32
			if row[n.Feature] <= n.Threshold {
				le = 1
			}
			n = &nodes[n.False+(n.True-n.False)*le]
		}
		sum += n.Value
	}
	return sum + e.Base
}

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
// split features are within NumFeatures, thresholds are not NaN, and leaf
// values and Base are finite. Errors wrap ErrInvalidModel.
func (e *Ensemble) Validate() error {
	if e.NumFeatures <= 0 {
		return fmt.Errorf("%w: NumFeatures is %d", ErrInvalidModel, e.NumFeatures)
	}
	if !finite(e.Base) {
		return fmt.Errorf("%w: base value %v is not finite", ErrInvalidModel, e.Base)
	}
	if n := len(e.Meta.FeatureNames); n != 0 && n != e.NumFeatures {
		return fmt.Errorf("%w: %d feature names for %d features", ErrInvalidModel, n, e.NumFeatures)
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
