package model

import (
	"fmt"
	"math"
)

// Part is one ensemble of a Gated model: it answers the rows whose value in
// the gating column is in (Lo, Hi]; use ±Inf for open ends.
type Part struct {
	Lo, Hi   float32
	Ensemble *Ensemble
}

// Gated combines ensembles trained for different ranges of one input column
// (the forecast horizon) into one ensemble, so one ONNX graph and one Go walk
// serve them all: every tree of a part is wrapped in two splits on the
// column that send rows outside (Lo, Hi] to a zero leaf, and each part's base
// becomes a gated one-leaf tree in front of its trees (the result's Base is
// 0). Adding the zeros of the other parts is exact, so a row gets its part's
// raw score (with the part's base summed first instead of last). All parts
// must have the same width and link, and their ranges must not overlap.
func Gated(col int, parts []Part) (*Ensemble, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: gated model without parts", ErrInvalidModel)
	}
	first := parts[0].Ensemble
	if col < 0 || col >= first.NumFeatures {
		return nil, fmt.Errorf("%w: gating column %d of %d", ErrInvalidModel, col, first.NumFeatures)
	}
	out := &Ensemble{NumFeatures: first.NumFeatures, Link: first.Link}
	for i, p := range parts {
		e := p.Ensemble
		if e.NumFeatures != first.NumFeatures || partLink(e) != partLink(first) {
			return nil, fmt.Errorf("%w: gated part %d has %d features and link %q, part 0 %d and %q",
				ErrInvalidModel, i, e.NumFeatures, partLink(e), first.NumFeatures, partLink(first))
		}
		if !(p.Lo < p.Hi) {
			return nil, fmt.Errorf("%w: gated part %d has the empty range (%v, %v]", ErrInvalidModel, i, p.Lo, p.Hi)
		}
		for j := range i {
			if q := parts[j]; p.Lo < q.Hi && q.Lo < p.Hi {
				return nil, fmt.Errorf("%w: gated parts %d and %d overlap", ErrInvalidModel, j, i)
			}
		}
		out.Trees = append(out.Trees, gate(col, p.Lo, p.Hi, Tree{Nodes: []Node{{Leaf: true, Value: e.Base}}}))
		for _, t := range e.Trees {
			out.Trees = append(out.Trees, gate(col, p.Lo, p.Hi, t))
		}
	}
	return out, out.Validate()
}

func partLink(e *Ensemble) string {
	if e.Link == "" {
		return LinkIdentity
	}
	return e.Link
}

// gate wraps t: row[col] <= hi ? (row[col] <= lo ? 0 : t) : 0. An infinite
// bound needs no split.
func gate(col int, lo, hi float32, t Tree) Tree {
	var nodes []Node
	zero := Node{Leaf: true}
	shift := int32(0)
	if !math.IsInf(float64(hi), 1) {
		shift += 2
	}
	if !math.IsInf(float64(lo), -1) {
		shift += 2
	}
	// Layout: [hi split, zero leaf,] [lo split, zero leaf,] tree nodes.
	next := int32(0)
	if !math.IsInf(float64(hi), 1) {
		nodes = append(nodes, Node{Feature: int32(col), Threshold: hi, True: next + 2, False: next + 1}, zero)
		next += 2
	}
	if !math.IsInf(float64(lo), -1) {
		nodes = append(nodes, Node{Feature: int32(col), Threshold: lo, True: next + 1, False: next + 2}, zero)
		next += 2
	}
	for _, n := range t.Nodes {
		if !n.Leaf {
			n.True += shift
			n.False += shift
		}
		nodes = append(nodes, n)
	}
	return Tree{Nodes: nodes}
}
