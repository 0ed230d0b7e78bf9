package inference

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/training"
)

// requireORT skips when the ONNX Runtime library is not installed (run
// `make deps`); every other failure fails the test.
func requireORT(tb testing.TB) {
	tb.Helper()
	if _, err := ORTLibraryPath(); err != nil {
		tb.Fatalf("ONNX Runtime library not installed (run `make deps`): %v", err)
	}
}

// ortRandomEnsemble builds trees of the given depth (some branches stop
// early) with thresholds from a grid that random rows also draw from, and
// leaf values spread over several orders of magnitude so that the order and
// precision of the summation show in the low bits.
func ortRandomEnsemble(rng *rand.Rand, trees, depth, features int) *model.Ensemble {
	e := &model.Ensemble{NumFeatures: features, Base: float32(rng.NormFloat64() * 100)}
	for range trees {
		var tr model.Tree
		var grow func(d int) int32
		grow = func(d int) int32 {
			id := int32(len(tr.Nodes))
			if d == depth || (d > 2 && rng.IntN(10) == 0) {
				v := rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3))
				tr.Nodes = append(tr.Nodes, model.Node{Leaf: true, Value: float32(v)})
				return id
			}
			tr.Nodes = append(tr.Nodes, model.Node{Feature: int32(rng.IntN(features)), Threshold: gridValue(rng)})
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

func gridValue(rng *rand.Rand) float32 { return float32(rng.IntN(200)-100) / 16 }

// randomRows mixes grid values (which hit thresholds exactly), values between
// them, NaN and infinities.
func randomRows(rng *rand.Rand, n, features int) [][]float32 {
	rows := make([][]float32, n)
	for i := range rows {
		r := make([]float32, features)
		for j := range r {
			switch k := rng.IntN(20); {
			case k == 0:
				r[j] = float32(math.NaN())
			case k == 1:
				r[j] = float32(math.Inf(2*rng.IntN(2) - 1))
			case k < 12:
				r[j] = gridValue(rng)
			default:
				r[j] = float32(rng.NormFloat64() * 4)
			}
		}
		rows[i] = r
	}
	return rows
}

func newORT(tb testing.TB, e *model.Ensemble) *ORTPredictor {
	tb.Helper()
	b, err := e.MarshalONNX()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := NewORTPredictor(b, e.NumFeatures, ORTOptions{PoolSize: 4})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func sameBits(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }

// trainedCase trains 100 trees of depth 6 on 20 noisy features and returns
// the model with rows made of training rows, rows whose values sit exactly
// on split thresholds, and random rows.
func trainedCase(t *testing.T, rng *rand.Rand) (*model.Ensemble, [][]float32) {
	const n, nf = 4000, 20
	X := randomRows(rng, n, nf)
	y := make([]float32, n)
	for i, r := range X {
		v := 0.0
		for j, x := range r[:6] {
			if x == x && !math.IsInf(float64(x), 0) {
				v += math.Sin(float64(x)*float64(j+1)) * float64(j+1)
			}
		}
		y[i] = float32(v*50 + rng.NormFloat64())
	}
	e, err := training.Train(context.Background(), X, y, training.Options{NumTrees: 100, MaxDepth: 6, MinChildSamples: 5, Subsample: 0.8, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	var thresholds []float32
	for _, tr := range e.Trees {
		for _, nd := range tr.Nodes {
			if !nd.Leaf {
				thresholds = append(thresholds, nd.Threshold)
			}
		}
	}
	rows := append([][]float32{}, X[:2000]...)
	for range 2000 {
		r := make([]float32, nf)
		for j := range r {
			r[j] = thresholds[rng.IntN(len(thresholds))]
		}
		rows = append(rows, r)
	}
	return e, append(rows, randomRows(rng, 2000, nf)...)
}

// trainedPoissonCase trains a Poisson model (exp link) of 100 trees of
// depth 6 on counts whose log-mean depends on a few of 20 features, and
// returns it with training rows and random rows.
func trainedPoissonCase(t *testing.T, rng *rand.Rand) (*model.Ensemble, [][]float32) {
	const n, nf = 4000, 20
	X := randomRows(rng, n, nf)
	y := make([]float32, n)
	for i, r := range X {
		logMu := 2.0
		for j, x := range r[:4] {
			if x == x && !math.IsInf(float64(x), 0) {
				logMu += 0.4 * math.Sin(float64(x)*float64(j+1))
			}
		}
		y[i] = float32(poissonSample(rng, math.Exp(logMu)))
	}
	e, err := training.Train(context.Background(), X, y, training.Options{Objective: training.ObjectivePoisson,
		NumTrees: 100, MaxDepth: 6, MinChildSamples: 5, Subsample: 0.8, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if e.Link != model.LinkExp {
		t.Fatalf("Poisson model has link %q", e.Link)
	}
	return e, append(X[:3000:3000], randomRows(rng, 3000, nf)...)
}

// poissonSample draws a Poisson count by inversion (small means).
func poissonSample(rng *rand.Rand, mean float64) int {
	k, p := 0, math.Exp(-mean)
	s, u := p, rng.Float64()
	for u > s && k < 1000 {
		k++
		p *= mean / float64(k)
		s += p
	}
	return k
}

// expEnsemble is a random ensemble with the exp link whose raw scores stay
// within about ±20 (exp neither overflows nor underflows).
func expEnsemble(rng *rand.Rand) *model.Ensemble {
	e := ortRandomEnsemble(rng, 100, 6, 20)
	e.Link, e.Base = model.LinkExp, 1.5
	for _, tr := range e.Trees {
		for i := range tr.Nodes {
			if tr.Nodes[i].Leaf {
				tr.Nodes[i].Value = float32(math.Max(-0.4, math.Min(0.4, float64(tr.Nodes[i].Value))))
			}
		}
	}
	return e
}

func TestORTParityWithGoWalk(t *testing.T) {
	requireORT(t)
	rng := rand.New(rand.NewPCG(42, 1))
	trained, trainedRows := trainedCase(t, rng)
	poisson, poissonRows := trainedPoissonCase(t, rng)
	gated, gatedRows := gatedCase(t, rng)
	tests := []struct {
		name string
		e    *model.Ensemble
		rows [][]float32
	}{
		{"random trees", ortRandomEnsemble(rng, 100, 6, 20), randomRows(rng, 6000, 20)},
		{"trained", trained, trainedRows},
		{"random trees, exp link", expEnsemble(rng), randomRows(rng, 6000, 20)},
		{"trained poisson", poisson, poissonRows},
		{"gated per horizon (v2)", gated, gatedRows},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkParity(t, tt.e, tt.rows)
		})
	}
}

// gatedCase is a V2-style model: four exp-link ensembles gated on column 0
// (the horizon), with rows at each horizon.
func gatedCase(t *testing.T, rng *rand.Rand) (*model.Ensemble, [][]float32) {
	t.Helper()
	hs := []float32{5, 15, 60, 1440}
	var parts []model.Part
	for k := range hs {
		lo, hi := float32(math.Inf(-1)), float32(math.Inf(1))
		if k > 0 {
			lo = (hs[k-1] + hs[k]) / 2
		}
		if k < len(hs)-1 {
			hi = (hs[k] + hs[k+1]) / 2
		}
		parts = append(parts, model.Part{Lo: lo, Hi: hi, Ensemble: expEnsemble(rng)})
	}
	e, err := model.Gated(0, parts)
	if err != nil {
		t.Fatal(err)
	}
	rows := randomRows(rng, 6000, 20)
	for i, r := range rows {
		r[0] = hs[i%len(hs)]
	}
	return e, rows
}

// ulps is the distance between two float32 values in units in the last
// place (both finite, same sign).
func ulps(a, b float32) int64 {
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	if d < 0 {
		return -d
	}
	return d
}

// checkParity runs rows through ORT (single rows and batches of several
// sizes) and the Go walk. With the identity link it requires bit-identical
// outputs. With the exp link it requires the raw scores (the same trees
// with the identity link) to be bit-identical and the outputs to be within
// model.ExpMaxULP: ONNX Runtime's Exp and Go's math.Exp round differently.
func checkParity(t *testing.T, e *model.Ensemble, rows [][]float32) {
	maxULP := int64(0)
	if e.Link == model.LinkExp {
		raw := *e
		raw.Link = model.LinkIdentity
		t.Run("raw score", func(t *testing.T) { checkParity(t, &raw, rows) })
		maxULP = model.ExpMaxULP
	}
	p := newORT(t, e)
	ctx := context.Background()
	want, err := NewGoPredictor(e).Predict(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	var worst int64
	var off, checked int
	check := func(name string, i int, got float32) {
		t.Helper()
		checked++
		if sameBits(got, want[i]) {
			return
		}
		d := ulps(got, want[i])
		if maxULP == 0 || math.Signbit(float64(got)) != math.Signbit(float64(want[i])) || d > maxULP {
			t.Fatalf("%s row %d: ORT %v (%#08x), Go %v (%#08x), %d ULP apart (allowed %d); row %v", name, i, got,
				math.Float32bits(got), want[i], math.Float32bits(want[i]), d, maxULP, rows[i])
		}
		off++
		worst = max(worst, d)
	}
	defer func() {
		if maxULP > 0 {
			t.Logf("exp link: %d of %d outputs differ from the Go walk, by at most %d ULP", off, checked, worst)
		}
	}()
	for i, r := range rows {
		got, err := p.Predict(ctx, [][]float32{r})
		if err != nil {
			t.Fatal(err)
		}
		check("single", i, got[0])
	}
	for _, size := range []int{2, 7, 128, 129, 256, 1000, len(rows)} {
		for start := 0; start+size <= len(rows); start += size {
			got, err := p.Predict(ctx, rows[start:start+size])
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				check(fmt.Sprintf("batch %d", size), start+i, got[i])
			}
			if size >= 1000 {
				break
			}
		}
	}
}

func TestORTSumsInFloat32TreeOrder(t *testing.T) {
	requireORT(t)
	// In float32, 1e8 + 1 == 1e8: ORT must add the trees in order in
	// float32 and the base last, as model.Ensemble.Predict does.
	leaf := func(v float32) model.Tree { return model.Tree{Nodes: []model.Node{{Leaf: true, Value: v}}} }
	e := &model.Ensemble{NumFeatures: 1, Base: -1e8, Trees: []model.Tree{leaf(1e8)}}
	for range 10 {
		e.Trees = append(e.Trees, leaf(1))
	}
	p := newORT(t, e)
	got, err := p.Predict(context.Background(), [][]float32{{0}, {1}})
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		if g != 0 || g != e.Predict([]float32{0}) {
			t.Fatalf("row %d: ORT %v, want 0", i, g)
		}
	}
}

func TestORTEmptyEnsemblePredictsBase(t *testing.T) {
	requireORT(t)
	tests := []struct {
		link   string
		base   float32
		want   float32
		maxULP int64
	}{
		{model.LinkIdentity, 12.5, 12.5, 0},
		{model.LinkExp, 0, 1, 0},
		{model.LinkExp, float32(math.Log(12.5)), float32(math.Exp(float64(float32(math.Log(12.5))))), model.ExpMaxULP},
	}
	for _, tt := range tests {
		e := &model.Ensemble{NumFeatures: 3, Base: tt.base, Link: tt.link}
		p := newORT(t, e)
		got, err := p.Predict(context.Background(), [][]float32{{1, 2, 3}})
		if err != nil {
			t.Fatal(err)
		}
		if ulps(got[0], tt.want) > tt.maxULP || e.Predict([]float32{1, 2, 3}) != tt.want {
			t.Fatalf("%s link, base %v: ORT %v, Go %v, want %v", tt.link, tt.base, got[0], e.Predict([]float32{1, 2, 3}), tt.want)
		}
	}
}

func TestNewORTPredictorRejectsCorruptModels(t *testing.T) {
	requireORT(t)
	rng := rand.New(rand.NewPCG(5, 6))
	e := ortRandomEnsemble(rng, 10, 4, 8)
	valid, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 2048)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	flipped := bytes.Clone(valid)
	for i := 0; i < len(flipped); i += 7 {
		flipped[i] ^= 0xA5
	}
	tests := []struct {
		name     string
		b        []byte
		features int
	}{
		{"empty", nil, 8},
		{"text", []byte("not a model"), 8},
		{"random bytes", garbage, 8},
		{"truncated", valid[:len(valid)*2/3], 8},
		{"flipped bytes", flipped, 8},
		{"wrong feature count", valid, 7},
		{"zero features", valid, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewORTPredictor(tt.b, tt.features, ORTOptions{PoolSize: 2})
			if err == nil {
				p.Close()
				t.Fatalf("NewORTPredictor accepted the model")
			}
			if tt.features == 8 {
				if _, err := model.UnmarshalONNX(tt.b); !errors.Is(err, model.ErrInvalidModel) {
					t.Fatalf("UnmarshalONNX = %v, want ErrInvalidModel", err)
				}
			}
		})
	}
}

func TestORTConcurrentPredict(t *testing.T) {
	requireORT(t)
	rng := rand.New(rand.NewPCG(8, 8))
	e := ortRandomEnsemble(rng, 50, 5, 10)
	p := newORT(t, e)
	rows := randomRows(rng, 512, 10)
	want := make([]float32, len(rows))
	e.PredictBatch(rows, want)

	const goroutines = 32
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for k := range 100 {
				i := (g*131 + k*17) % len(rows)
				n := 1
				if k%5 == 0 {
					n = min(1+k%40, len(rows)-i)
				}
				got, err := p.Predict(context.Background(), rows[i:i+n])
				if err != nil {
					errs <- err
					return
				}
				for j := range got {
					if !sameBits(got[j], want[i+j]) {
						errs <- fmt.Errorf("row %d: got %v, want %v", i+j, got[j], want[i+j])
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestORTPredictErrors(t *testing.T) {
	requireORT(t)
	e := ortRandomEnsemble(rand.New(rand.NewPCG(1, 9)), 3, 3, 4)
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewORTPredictor(b, 4, ORTOptions{PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g := NewGoPredictor(e)
	for name, pr := range map[string]Predictor{"ort": p, "go": g} {
		t.Run(name, func(t *testing.T) {
			if _, err := pr.Predict(ctx, [][]float32{{1, 2, 3}}); !errors.Is(err, ErrRowWidth) {
				t.Errorf("short row: %v, want ErrRowWidth", err)
			}
			if _, err := pr.Predict(ctx, [][]float32{{1, 2, 3, 4}, {1, 2, 3, 4, 5}}); !errors.Is(err, ErrRowWidth) {
				t.Errorf("long row: %v, want ErrRowWidth", err)
			}
			out, err := pr.Predict(ctx, nil)
			if err != nil || len(out) != 0 {
				t.Errorf("no rows: %v, %v", out, err)
			}
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := pr.Predict(cctx, [][]float32{{1, 2, 3, 4}}); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled: %v, want context.Canceled", err)
			}
		})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Predict(ctx, [][]float32{{1, 2, 3, 4}}); !errors.Is(err, ErrPredictorClosed) {
		t.Fatalf("Predict after Close: %v, want ErrPredictorClosed", err)
	}
}

func TestORTLibraryPath(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "repo", ortLibraryRel)
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, []byte("lib"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(dir, "repo", "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env, wd, want string
		wantErr             bool
	}{
		{"env wins", lib, dir, lib, false},
		{"env missing file", filepath.Join(dir, "nope.so"), deep, "", true},
		{"found in parent", "", deep, lib, false},
		{"not found", "", dir, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(ORTLibraryEnv, tt.env)
			t.Chdir(tt.wd)
			got, err := ORTLibraryPath()
			if tt.wantErr {
				if !errors.Is(err, ErrORTUnavailable) {
					t.Fatalf("ORTLibraryPath = %q, %v; want ErrORTUnavailable", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("ORTLibraryPath = %q, want %q", got, tt.want)
			}
		})
	}
}

func benchRows(n int) (*model.Ensemble, [][]float32) {
	rng := rand.New(rand.NewPCG(11, 12))
	return ortRandomEnsemble(rng, 100, 6, 20), randomRows(rng, n, 20)
}

func BenchmarkORTSingleRow(b *testing.B) {
	requireORT(b)
	e, rows := benchRows(1024)
	p := newORT(b, e)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := p.Predict(ctx, rows[i%len(rows):i%len(rows)+1]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkORTSingleRowParallel(b *testing.B) {
	requireORT(b)
	e, rows := benchRows(1024)
	p := newORT(b, e)
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := p.Predict(ctx, rows[i%len(rows):i%len(rows)+1]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkORTBatch256(b *testing.B) {
	requireORT(b)
	e, rows := benchRows(256)
	p := newORT(b, e)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Predict(ctx, rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
}

func BenchmarkGoWalkSingleRow(b *testing.B) {
	e, rows := benchRows(1024)
	p := NewGoPredictor(e)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := p.Predict(ctx, rows[i%len(rows):i%len(rows)+1]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoWalkBatch256(b *testing.B) {
	e, rows := benchRows(256)
	p := NewGoPredictor(e)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Predict(ctx, rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
}

// coldCache evicts the CPU caches as a request's other work does between
// two forecasts in the server (GraphQL, Redis, Kafka, the sink): it writes
// 16 MiB, past these machines' L2 and their share of L3 (4 MiB left ONNX
// Runtime at a third of its cold time). The eviction is slow, so `make
// bench-go` skips the Cold benchmarks: run them with
// `go test -run '^$' -bench Cold ./inference` (about 3 minutes each).
type coldCache []byte

func (c coldCache) evict() {
	for i := 0; i < len(c); i += 64 {
		c[i]++
	}
}

// benchCold measures single-row predictions with cold caches; the eviction
// itself is not timed.
func benchCold(b *testing.B, p Predictor, rows [][]float32) {
	c := make(coldCache, 16<<20)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c.evict()
		b.StartTimer()
		if _, err := p.Predict(ctx, rows[i%len(rows):i%len(rows)+1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkORTSingleRowCold and BenchmarkGoWalkSingleRowCold: one row with
// the caches cold, as in the server at 1,000 quotes/s, where a CPU profile
// puts ONNX Runtime's Run at several times its warm micro-benchmark.
func BenchmarkORTSingleRowCold(b *testing.B) {
	requireORT(b)
	e, rows := benchRows(1024)
	benchCold(b, newORT(b, e), rows)
}

func BenchmarkGoWalkSingleRowCold(b *testing.B) {
	e, rows := benchRows(1024)
	benchCold(b, NewGoPredictor(e), rows)
}
