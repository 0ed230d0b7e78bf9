package inference

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/surgeworks/surge/registry"
)

// memSource is an in-memory ModelSource: an active version and artifacts,
// counting fetches per version.
type memSource struct {
	mu      sync.Mutex
	active  string
	fetches map[string]int
}

func (s *memSource) setActive(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active = v
}

func (s *memSource) fetched(v string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches[v]
}

func (s *memSource) Active(_ context.Context, name string) (registry.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return registry.Entry{Name: name, Version: s.active}, nil
}

func (s *memSource) Load(_ context.Context, e registry.Entry) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetches[e.Version]++
	return []byte(e.Version), nil
}

// closingPredictor records whether it was closed.
type closingPredictor struct {
	fakePredictor
	closed atomic.Int32
}

func (p *closingPredictor) Close() error {
	p.closed.Add(1)
	return nil
}

// loads records the runtimes a Watcher started, per version, in order.
type loads struct {
	mu    sync.Mutex
	byVer map[string][]*closingPredictor
}

func (l *loads) load(data []byte) (*Model, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := string(data)
	var n float32
	fmt.Sscanf(v, "v%g", &n)
	p := &closingPredictor{fakePredictor: fakePredictor{value: n}}
	l.byVer[v] = append(l.byVer[v], p)
	return &Model{Name: "decoded", Version: "decoded", Predictor: p}, nil
}

func (l *loads) get(v string, i int) *closingPredictor {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byVer[v][i]
}

func waitClosed(t *testing.T, p *closingPredictor, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for p.closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s was not closed", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestWatcherKeepsRecentVersionsInMemory(t *testing.T) {
	ctx := context.Background()
	src := &memSource{fetches: map[string]int{}}
	ld := &loads{byVer: map[string][]*closingPredictor{}}
	fc := NewForecaster(nil, fakeHistory{}, ForecasterOptions{})
	w := NewWatcher(src, fc, WatcherOptions{Keep: 2, CloseDelay: time.Millisecond, Load: ld.load})

	switchTo := func(v string) {
		t.Helper()
		src.setActive(v)
		if err := w.Sync(ctx); err != nil {
			t.Fatalf("sync to %s: %v", v, err)
		}
		m := fc.Model()
		if m == nil || m.Version != v || m.Name != "demand" {
			t.Fatalf("after sync to %s the forecaster serves %+v", v, m)
		}
		got, err := m.Predictor.Predict(ctx, [][]float32{{0}})
		if err != nil {
			t.Fatalf("predict on %s: %v", v, err)
		}
		if want := float32(v[1] - '0'); got[0] != want {
			t.Fatalf("%s predicts %v, want %v (another version's runtime)", v, got[0], want)
		}
	}

	switchTo("v1")
	switchTo("v2")
	switchTo("v1") // rollback: from memory
	if a, b := src.fetched("v1"), src.fetched("v2"); a != 1 || b != 1 {
		t.Fatalf("fetches v1=%d v2=%d, want 1 each", a, b)
	}
	if len(ld.byVer["v1"]) != 1 || len(ld.byVer["v2"]) != 1 {
		t.Fatalf("decoded %d×v1 %d×v2, want once each", len(ld.byVer["v1"]), len(ld.byVer["v2"]))
	}
	if got := w.CachedVersions(); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Fatalf("cached %v, want [v1 v2]", got)
	}
	// Whoever swaps a kept model out and closes it (as rollout does) does
	// not close the runtime the Watcher keeps.
	if err := fc.Model().Close(); err != nil {
		t.Fatal(err)
	}
	if ld.get("v1", 0).closed.Load() != 0 {
		t.Fatal("closing the served model closed the kept runtime")
	}
	if m, ok := w.Cached("v2"); !ok || m.Version != "v2" {
		t.Fatalf("Cached(v2) = %v, %v", m, ok)
	}
	if _, ok := w.Cached("v9"); ok {
		t.Fatal("Cached(v9) found a version never loaded")
	}

	// v3 pushes out the least recently used version (v1 was served after v2,
	// but Cached(v2) used v2 since).
	switchTo("v3")
	waitClosed(t, ld.get("v1", 0), "evicted v1")
	if got := w.CachedVersions(); !slices.Equal(got, []string{"v3", "v2"}) {
		t.Fatalf("cached %v, want [v3 v2]", got)
	}
	switchTo("v2")
	switchTo("v1") // evicted: fetched and decoded again
	if n := src.fetched("v1"); n != 2 {
		t.Fatalf("v1 fetched %d times, want 2 after its eviction", n)
	}
	if n := src.fetched("v2"); n != 1 {
		t.Fatalf("v2 fetched %d times, want 1", n)
	}
	waitClosed(t, ld.get("v3", 0), "evicted v3")
	if ld.get("v2", 0).closed.Load() != 0 || ld.get("v1", 1).closed.Load() != 0 {
		t.Fatal("a kept version was closed")
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*closingPredictor{ld.get("v1", 0), ld.get("v1", 1), ld.get("v2", 0), ld.get("v3", 0)} {
		if n := p.closed.Load(); n != 1 {
			t.Fatalf("a runtime was closed %d times, want once", n)
		}
	}
}

func TestWatcherNeverEvictsServedVersion(t *testing.T) {
	ctx := context.Background()
	src := &memSource{fetches: map[string]int{}}
	ld := &loads{byVer: map[string][]*closingPredictor{}}
	fc := NewForecaster(nil, fakeHistory{}, ForecasterOptions{})
	w := NewWatcher(src, fc, WatcherOptions{Keep: 1, CloseDelay: time.Millisecond, Load: ld.load})
	src.setActive("v1")
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// A rollout serves the kept v1 as its candidate while v2 becomes stable.
	v1, _ := w.Cached("v1")
	fc.SetCandidate(v1, 10, false)
	src.setActive("v2")
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.CachedVersions(); !slices.Equal(got, []string{"v2", "v1"}) {
		t.Fatalf("cached %v, want the candidate kept beside v2", got)
	}
	time.Sleep(20 * time.Millisecond)
	if ld.get("v1", 0).closed.Load() != 0 {
		t.Fatal("the candidate's runtime was closed while served")
	}
	fc.ClearCandidate()
	src.setActive("v3")
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ld.get("v1", 0), "v1 once no longer served")
	waitClosed(t, ld.get("v2", 0), "v2 once no longer served")
	if got := w.CachedVersions(); !slices.Equal(got, []string{"v3"}) {
		t.Fatalf("cached %v, want [v3]", got)
	}
	_ = w.Close()
}

func TestWatcherDefaults(t *testing.T) {
	w := NewWatcher(&memSource{}, NewForecaster(nil, fakeHistory{}, ForecasterOptions{}), WatcherOptions{})
	if w.opts.Keep != DefaultKeepModels || DefaultKeepModels != 3 || w.opts.CloseDelay != 10*time.Second {
		t.Fatalf("defaults: keep %d, close delay %v", w.opts.Keep, w.opts.CloseDelay)
	}
}
