package model

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// stump: x[1] <= 2 -> 10, else (including NaN) -> 20.
func stump() Tree {
	return Tree{Nodes: []Node{
		{Feature: 1, Threshold: 2, True: 1, False: 2},
		{Leaf: true, Value: 10},
		{Leaf: true, Value: 20},
	}}
}

func TestPredict(t *testing.T) {
	nan := float32(math.NaN())
	deep := Tree{Nodes: []Node{
		{Feature: 0, Threshold: 0.5, True: 2, False: 1}, // children listed out of order on purpose
		{Leaf: true, Value: -1},
		{Feature: 2, Threshold: -3, True: 3, False: 4},
		{Leaf: true, Value: 0.25},
		{Leaf: true, Value: 0.5},
	}}
	e := &Ensemble{Trees: []Tree{stump(), deep}, Base: 100, NumFeatures: 3}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		row  []float32
		want float32
	}{
		{"below both", []float32{0, 1, -5}, 100 + 10 + 0.25},
		{"exactly at thresholds goes true", []float32{0.5, 2, -3}, 100 + 10 + 0.25},
		{"above", []float32{0.6, 2.0001, 0}, 100 + 20 - 1},
		{"NaN goes false", []float32{nan, nan, nan}, 100 + 20 - 1},
		{"NaN in deep subtree", []float32{0, 0, nan}, 100 + 10 + 0.5},
		{"-Inf goes true", []float32{float32(math.Inf(-1)), float32(math.Inf(-1)), 7}, 100 + 10 + 0.5},
		{"+Inf goes false", []float32{float32(math.Inf(1)), float32(math.Inf(1)), 7}, 100 + 20 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.Predict(tt.row); got != tt.want {
				t.Errorf("Predict(%v) = %v, want %v", tt.row, got, tt.want)
			}
		})
	}
	rows := make([][]float32, len(tests))
	for i, tt := range tests {
		rows[i] = tt.row
	}
	out := make([]float32, len(rows)+1)
	out[len(rows)] = 42
	e.PredictBatch(rows, out)
	for i, tt := range tests {
		if out[i] != tt.want {
			t.Errorf("PredictBatch[%d] = %v, want %v", i, out[i], tt.want)
		}
	}
	if out[len(rows)] != 42 {
		t.Errorf("PredictBatch wrote past len(rows)")
	}
}

func TestPredictLink(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name string
		link string
		base float32
		row  []float32
		want float32
	}{
		{"identity", LinkIdentity, 1, []float32{0, 1}, 11},
		{"empty link is identity", "", 1, []float32{0, 3}, 21},
		{"exp", LinkExp, -9, []float32{0, 1}, float32(math.Exp(1))},
		{"exp of the false branch", LinkExp, -19.5, []float32{0, nan}, float32(math.Exp(0.5))},
		{"exp underflows to zero", LinkExp, -200, []float32{0, 1}, 0},
		{"exp overflows to +Inf", LinkExp, 100, []float32{0, 1}, float32(math.Inf(1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Ensemble{Trees: []Tree{stump()}, NumFeatures: 2, Base: tt.base, Link: tt.link}
			if err := e.Validate(); err != nil {
				t.Fatal(err)
			}
			raw := e.PredictRaw(tt.row)
			if got := e.Predict(tt.row); got != tt.want {
				t.Fatalf("Predict = %v, want %v (raw %v)", got, tt.want, raw)
			}
			if tt.link == LinkExp {
				if want := float32(math.Exp(float64(raw))); e.Predict(tt.row) != want {
					t.Fatalf("Predict is not float32(exp(float64(PredictRaw)))")
				}
			} else if raw != e.Predict(tt.row) {
				t.Fatalf("identity link: Predict %v, PredictRaw %v", e.Predict(tt.row), raw)
			}
		})
	}
}

func TestImportanceGain(t *testing.T) {
	md := Metadata{FeatureNames: []string{"a", "b"}, Importance: []FeatureImportance{{Gain: 2.5, Splits: 3}, {}}}
	if got := md.ImportanceGain(); !reflect.DeepEqual(got, map[string]float64{"a": 2.5, "b": 0}) {
		t.Fatalf("ImportanceGain = %v", got)
	}
	md.FeatureNames = nil
	if got := md.ImportanceGain(); !reflect.DeepEqual(got, map[string]float64{"f0": 2.5, "f1": 0}) {
		t.Fatalf("ImportanceGain without names = %v", got)
	}
	if got := (Metadata{}).ImportanceGain(); got != nil {
		t.Fatalf("ImportanceGain without importance = %v", got)
	}
}

func TestPredictAccumulatesInFloat32TreeOrder(t *testing.T) {
	// 1e8 + 1 + 1 ... in float32 stays 1e8 (ulp is 8): a float64 sum, or
	// adding the base first, would give a different answer.
	leaf := func(v float32) Tree { return Tree{Nodes: []Node{{Leaf: true, Value: v}}} }
	e := &Ensemble{NumFeatures: 1, Base: -1e8}
	e.Trees = append(e.Trees, leaf(1e8))
	for range 10 {
		e.Trees = append(e.Trees, leaf(1))
	}
	if got := e.Predict([]float32{0}); got != 0 {
		t.Fatalf("Predict = %v, want 0 (float32 sum in tree order, base last)", got)
	}
	if e.NumNodes() != 11 {
		t.Fatalf("NumNodes = %d, want 11", e.NumNodes())
	}
}

func TestValidate(t *testing.T) {
	leaf := Node{Leaf: true, Value: 1}
	split := func(f int32, tr, fa int32) Node { return Node{Feature: f, Threshold: 1, True: tr, False: fa} }
	tests := []struct {
		name  string
		e     Ensemble
		valid bool
	}{
		{"ok", Ensemble{NumFeatures: 2, Trees: []Tree{stump()}}, true},
		{"no trees", Ensemble{NumFeatures: 2}, true},
		{"no features", Ensemble{NumFeatures: 0, Trees: []Tree{stump()}}, false},
		{"empty tree", Ensemble{NumFeatures: 2, Trees: []Tree{{}}}, false},
		{"feature out of range", Ensemble{NumFeatures: 1, Trees: []Tree{stump()}}, false},
		{"negative feature", Ensemble{NumFeatures: 2, Trees: []Tree{{Nodes: []Node{split(-1, 1, 2), leaf, leaf}}}}, false},
		{"child out of range", Ensemble{NumFeatures: 2, Trees: []Tree{{Nodes: []Node{split(0, 1, 3), leaf, leaf}}}}, false},
		{"cycle to root", Ensemble{NumFeatures: 2, Trees: []Tree{{Nodes: []Node{split(0, 1, 0), leaf}}}}, false},
		{"shared child", Ensemble{NumFeatures: 2, Trees: []Tree{{Nodes: []Node{split(0, 1, 1), leaf}}}}, false},
		{"unreachable node", Ensemble{NumFeatures: 2, Trees: []Tree{{Nodes: []Node{split(0, 1, 2), leaf, leaf, leaf}}}}, false},
		{"NaN threshold", Ensemble{NumFeatures: 2, Trees: []Tree{{Nodes: []Node{{Threshold: float32(math.NaN()), True: 1, False: 2}, leaf, leaf}}}}, false},
		{"Inf leaf", Ensemble{NumFeatures: 2, Trees: []Tree{{Nodes: []Node{{Leaf: true, Value: float32(math.Inf(1))}}}}}, false},
		{"NaN base", Ensemble{NumFeatures: 2, Base: float32(math.NaN())}, false},
		{"names mismatch", Ensemble{NumFeatures: 2, Meta: Metadata{FeatureNames: []string{"a"}}}, false},
		{"exp link", Ensemble{NumFeatures: 2, Trees: []Tree{stump()}, Link: LinkExp}, true},
		{"unknown link", Ensemble{NumFeatures: 2, Trees: []Tree{stump()}, Link: "log"}, false},
		{"importance mismatch", Ensemble{NumFeatures: 2, Meta: Metadata{Importance: []FeatureImportance{{}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.e.Validate()
			if tt.valid && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tt.valid && !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("Validate = %v, want ErrInvalidModel", err)
			}
		})
	}
}

// randomEnsemble builds trees of up to depth levels whose thresholds come from
// a small grid, so that random rows drawn from the same grid hit thresholds
// exactly.
func randomEnsemble(rng *rand.Rand, trees, depth, features int) *Ensemble {
	e := &Ensemble{NumFeatures: features, Base: rng.Float32()*10 - 5}
	for range trees {
		var tr Tree
		var grow func(d int) int32
		grow = func(d int) int32 {
			id := int32(len(tr.Nodes))
			if d == depth || (d > 1 && rng.IntN(8) == 0) {
				tr.Nodes = append(tr.Nodes, Node{Leaf: true, Value: rng.Float32()*2 - 1})
				return id
			}
			tr.Nodes = append(tr.Nodes, Node{Feature: int32(rng.IntN(features)), Threshold: gridValue(rng)})
			l := grow(d + 1)
			r := grow(d + 1)
			tr.Nodes[id].True, tr.Nodes[id].False = l, r
			return id
		}
		grow(0)
		e.Trees = append(e.Trees, tr)
	}
	return e
}

func gridValue(rng *rand.Rand) float32 { return float32(rng.IntN(64)-32) / 8 }

func BenchmarkPredict(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	e := randomEnsemble(rng, 100, 6, 20)
	rows := make([][]float32, 1024)
	for i := range rows {
		rows[i] = make([]float32, 20)
		for j := range rows[i] {
			rows[i][j] = gridValue(rng)
		}
	}
	b.ResetTimer()
	var sink float32
	for i := 0; b.Loop(); i++ {
		sink += e.Predict(rows[i%len(rows)])
	}
	_ = sink
}

// TestPredictRawWalksEachTreeAlone checks the walk of walkGroup trees side
// by side against the plain one-tree-at-a-time walk, bit for bit, for tree
// counts around the group size and trees of uneven depth, NaN inputs
// included.
func TestPredictRawWalksEachTreeAlone(t *testing.T) {
	reference := func(e *Ensemble, row []float32) float32 {
		var sum float32
		for _, tr := range e.Trees {
			n := &tr.Nodes[0]
			for !n.Leaf {
				if row[n.Feature] <= n.Threshold {
					n = &tr.Nodes[n.True]
				} else {
					n = &tr.Nodes[n.False]
				}
			}
			sum += n.Value
		}
		return sum + e.Base
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, trees := range []int{0, 1, walkGroup - 1, walkGroup, walkGroup + 1, 3*walkGroup + 5} {
		e := randomEnsemble(rng, trees, 7, 6)
		for range 200 {
			row := make([]float32, 6)
			for j := range row {
				row[j] = gridValue(rng)
				if rng.IntN(10) == 0 {
					row[j] = float32(math.NaN())
				}
			}
			if got, want := e.PredictRaw(row), reference(e, row); math.Float32bits(got) != math.Float32bits(want) {
				t.Fatalf("%d trees, row %v: PredictRaw %v, one tree at a time %v", trees, row, got, want)
			}
		}
	}
}
