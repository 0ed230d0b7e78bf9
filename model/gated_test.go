package model

import (
	"errors"
	"math"
	"testing"
)

// part is a two-leaf ensemble on feature 1 with its own base.
func gatedPart(base, left, right float32, link string) *Ensemble {
	return &Ensemble{NumFeatures: 2, Base: base, Link: link, Trees: []Tree{{Nodes: []Node{
		{Feature: 1, Threshold: 0.5, True: 1, False: 2}, {Leaf: true, Value: left}, {Leaf: true, Value: right},
	}}}}
}

func TestGated(t *testing.T) {
	inf := float32(math.Inf(1))
	parts := []Part{
		{Lo: -inf, Hi: 10, Ensemble: gatedPart(1, 2, 3, LinkExp)},
		{Lo: 10, Hi: 37.5, Ensemble: gatedPart(-1, 0.5, -0.5, LinkExp)},
		{Lo: 37.5, Hi: inf, Ensemble: gatedPart(0.25, 1, 0, LinkExp)},
	}
	g, err := Gated(0, parts)
	if err != nil {
		t.Fatal(err)
	}
	if g.Base != 0 || len(g.Trees) != 6 || g.Link != LinkExp {
		t.Fatalf("gated: base %v, %d trees, link %q", g.Base, len(g.Trees), g.Link)
	}
	for _, tt := range []struct {
		horizon, x float32
		part       int
	}{{5, 0, 0}, {5, 1, 0}, {10, 1, 0}, {15, 0, 1}, {15, 1, 1}, {37.5, 0, 1}, {60, 0, 2}, {1440, 1, 2}} {
		row := []float32{tt.horizon, tt.x}
		if got, want := g.PredictRaw(row), parts[tt.part].Ensemble.PredictRaw(row); got != want {
			t.Errorf("horizon %v, x %v: raw %v, want part %d's %v", tt.horizon, tt.x, got, tt.part, want)
		}
	}
	// The gated model survives the ONNX round trip.
	b, err := g.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalONNX(b)
	if err != nil || back.PredictRaw([]float32{15, 1}) != g.PredictRaw([]float32{15, 1}) {
		t.Fatalf("round trip: %v", err)
	}

	for name, bad := range map[string][]Part{
		"overlap":  {{Lo: -inf, Hi: 20, Ensemble: gatedPart(0, 1, 2, LinkExp)}, {Lo: 10, Hi: inf, Ensemble: gatedPart(0, 1, 2, LinkExp)}},
		"links":    {{Lo: -inf, Hi: 10, Ensemble: gatedPart(0, 1, 2, LinkExp)}, {Lo: 10, Hi: inf, Ensemble: gatedPart(0, 1, 2, LinkIdentity)}},
		"empty":    {{Lo: 10, Hi: 10, Ensemble: gatedPart(0, 1, 2, LinkExp)}},
		"no parts": nil,
	} {
		if _, err := Gated(0, bad); !errors.Is(err, ErrInvalidModel) {
			t.Errorf("%s: err = %v, want ErrInvalidModel", name, err)
		}
	}
}
