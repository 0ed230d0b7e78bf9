package inference

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/registry"
)

// Runtime names a model runtime.
type Runtime string

// The runtimes: ONNX Runtime serves; the Go walk is the reference and a
// runtime for machines without the ONNX Runtime library.
const (
	RuntimeORT Runtime = "onnxruntime"
	RuntimeGo  Runtime = "go"
)

// ParseRuntime checks a runtime name.
func ParseRuntime(s string) (Runtime, error) {
	switch r := Runtime(s); r {
	case RuntimeORT, RuntimeGo:
		return r, nil
	}
	return "", fmt.Errorf("unknown model runtime %q (want %q or %q)", s, RuntimeORT, RuntimeGo)
}

// Model is a loaded, servable model version.
type Model struct {
	Name      string
	Version   string
	Ensemble  *model.Ensemble // the decoded trees and metadata
	Predictor Predictor
	// Schema is the feature schema the model was trained on (features.V1,
	// V2 or V3), Encoding what a long-memory model learned (nil for V1).
	Schema   features.Schema
	Encoding *features.Encoding
	// MaxHorizon (V1) is the longest horizon the model was trained for,
	// from its "horizons" parameter; 0 means V1MaxHorizon.
	MaxHorizon int
}

// Row builds the model's input row for a request: V1 at the request's
// horizon up to its longest trained one (MaxHorizon, scaled beyond);
// V2 and V3 at its serving horizon (features.ServingHorizon) from the
// origin of the features (their window end), with the factor that scales
// the prediction to the requested horizon and a warning when long-memory
// windows were missing.
func (m *Model) Row(r Request) (row []float32, scale float64, warning string) {
	if m.Encoding == nil {
		h := min(r.HorizonMinutes, cmp.Or(m.MaxHorizon, V1MaxHorizon))
		return m.Schema.Vector(nil, r.Features.Online, r.At, h), float64(r.HorizonMinutes) / float64(h), ""
	}
	h := features.ServingHorizon(r.HorizonMinutes)
	at := r.At.Truncate(time.Minute)
	if ms, ok := r.Features.Online[features.WindowEndField]; ok {
		at = time.UnixMilli(int64(ms)).UTC()
	}
	row, missing := m.Schema.VectorFor(nil, features.Input{
		Online: r.Features.Online, At: at, Horizon: h, Region: r.RegionID, Encoding: m.Encoding,
	})
	if len(missing) > 0 {
		warning = fmt.Sprintf("long-memory features missing (%s): they took the region's learned level", strings.Join(missing, ", "))
	}
	return row, float64(r.HorizonMinutes) / float64(h), warning
}

// V1MaxHorizon is the longest horizon V1 models are trained for by default
// (5, 15 and 60 minutes) and the one assumed for a model that does not list
// its horizons: trees cannot tell longer horizons from the longest they
// saw, so a longer request is served at it and scaled.
const V1MaxHorizon = 60

// maxHorizon reads the longest of a model's "horizons" parameter
// ("5,15,60"); 0 when it has none.
func maxHorizon(params map[string]string) int {
	most := 0
	for _, f := range strings.Split(params["horizons"], ",") {
		if h, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && h > most {
			most = h
		}
	}
	return most
}

// DataSource tells what a model was trained on: "generated" (the synthetic
// bootstrap history) or "real" (demand history from ClickHouse); "" when the
// model does not say.
func (m *Model) DataSource() string {
	if m == nil || m.Ensemble == nil {
		return ""
	}
	return m.Ensemble.Meta.Params[model.ParamDataSource]
}

// Close releases the runtime's resources.
func (m *Model) Close() error {
	if m == nil || m.Predictor == nil {
		return nil
	}
	return m.Predictor.Close()
}

// LoadModel decodes an ONNX artifact, refuses it when it was trained on a
// feature schema this server cannot build vectors for (features.ByHash), or
// whose long-memory encoding is unreadable, and starts it on the runtime.
func LoadModel(data []byte, rt Runtime) (*Model, error) {
	ens, err := model.UnmarshalONNX(data)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	schema, err := features.ByHash(ens.Meta.SchemaHash)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", ens.Meta.Version, err)
	}
	if ens.NumFeatures != schema.Len() {
		return nil, fmt.Errorf("load model %s: %w: %d inputs, schema has %d", ens.Meta.Version, features.ErrSchemaMismatch, ens.NumFeatures, schema.Len())
	}
	m := &Model{Name: ens.Meta.Name, Version: ens.Meta.Version, Ensemble: ens, Schema: schema}
	if schema.LongMemory() {
		if m.Encoding, err = features.ParseEncoding(ens.Meta.Params[features.EncodingParam]); err != nil {
			return nil, fmt.Errorf("load model %s: %w", ens.Meta.Version, err)
		}
	} else {
		m.MaxHorizon = maxHorizon(ens.Meta.Params)
	}
	switch rt {
	case RuntimeGo:
		m.Predictor = NewGoPredictor(ens)
	default:
		p, err := NewORTPredictor(data, ens.NumFeatures, ORTOptions{})
		if err != nil {
			return nil, fmt.Errorf("load model %s on onnxruntime: %w", ens.Meta.Version, err)
		}
		m.Predictor = p
	}
	return m, nil
}

// ModelSource tells which model version to serve and gives its artifact;
// registry.Registry implements it.
type ModelSource interface {
	Active(ctx context.Context, name string) (registry.Entry, error)
	Load(ctx context.Context, e registry.Entry) ([]byte, error)
}

// WatcherOptions configures a Watcher. Zero values take the defaults.
type WatcherOptions struct {
	Name     string        // model name (default "demand")
	Runtime  Runtime       // default onnxruntime
	Interval time.Duration // how often the registry is polled (default 30 s)
	// Keep is how many loaded versions stay in memory, the served one
	// included (default 3), so that switching back to one of them (a
	// rollback) needs no fetch and no decode.
	Keep int
	// CloseDelay is how long a version pushed out of memory stays open for
	// the calls still using it (default 10 s).
	CloseDelay time.Duration
	// Load turns an artifact into a servable model (default LoadModel on
	// Runtime).
	Load       func(data []byte) (*Model, error)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultKeepModels is the default of WatcherOptions.Keep.
const DefaultKeepModels = 3

// ownedPredictor is the predictor of a model the Watcher keeps in memory:
// the Watcher closes the runtime when it drops the version, so Close by
// whoever swapped the model out of the forecaster does nothing.
type ownedPredictor struct{ Predictor }

func (ownedPredictor) Close() error { return nil }

// loaded is a version kept in memory: served is what the forecaster gets,
// real the runtime to close when the version is dropped.
type loaded struct {
	served *Model
	real   Predictor
}

// Watcher keeps the forecaster serving the registry's active model version.
// A version that fails to load (corrupt artifact, other feature schema) is
// refused and the previous one keeps serving. The last Keep versions loaded
// stay in memory (least recently used dropped first, never one the
// forecaster serves), so switching back to one of them fetches and decodes
// nothing; the Watcher owns them and closes their runtimes when it drops
// them, or on Close.
type Watcher struct {
	src  ModelSource
	fc   *Forecaster
	opts WatcherOptions

	mu         sync.Mutex           // serialises Sync and guards the fields below
	failed     map[string]time.Time // version → when it last failed to load
	cache      []loaded             // loaded versions, most recently used first
	loadErrors *prometheus.CounterVec
}

// NewWatcher returns a watcher feeding fc from src.
func NewWatcher(src ModelSource, fc *Forecaster, opts WatcherOptions) *Watcher {
	if opts.Name == "" {
		opts.Name = "demand"
	}
	if opts.Runtime == "" {
		opts.Runtime = RuntimeORT
	}
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeepModels
	}
	if opts.CloseDelay <= 0 {
		opts.CloseDelay = 10 * time.Second
	}
	if opts.Load == nil {
		rt := opts.Runtime
		opts.Load = func(data []byte) (*Model, error) { return LoadModel(data, rt) }
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Watcher{src: src, fc: fc, opts: opts, failed: map[string]time.Time{},
		loadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_model_load_errors_total",
			Help: "Model versions refused at load, by reason (fetch, invalid).",
		}, []string{"reason"})}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(w.loadErrors)
	}
	return w
}

// Sync loads the active version if it is not the one served. It returns an
// error when the active version could not be served.
func (w *Watcher) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	entry, err := w.src.Active(ctx, w.opts.Name)
	if err != nil {
		return fmt.Errorf("find active model %s: %w", w.opts.Name, err)
	}
	version := entry.Version
	if cur := w.fc.Model(); cur != nil && cur.Version == version {
		return nil
	}
	if m, ok := w.cachedLocked(version); ok {
		old := w.fc.SetModel(m)
		w.opts.Logger.Info("model loaded from memory", "name", m.Name, "version", m.Version)
		w.retire(old)
		return nil
	}
	if t, ok := w.failed[version]; ok && time.Since(t) < 10*w.opts.Interval {
		return nil // refused recently: do not refetch it every poll
	}
	data, err := w.src.Load(ctx, entry)
	if err != nil {
		w.loadErrors.WithLabelValues("fetch").Inc()
		w.failed[version] = time.Now()
		return fmt.Errorf("fetch model %s %s: %w", w.opts.Name, version, err)
	}
	m, err := w.opts.Load(data)
	if err != nil {
		w.loadErrors.WithLabelValues("invalid").Inc()
		w.failed[version] = time.Now()
		if cur := w.fc.Model(); cur != nil {
			w.opts.Logger.Error("model refused; the previous version keeps serving", "version", version, "serving", cur.Version, "err", err)
		}
		return err
	}
	delete(w.failed, version)
	m.Name, m.Version = entry.Name, entry.Version // the registry names versions
	served := *m
	served.Predictor = ownedPredictor{m.Predictor}
	w.cache = append([]loaded{{served: &served, real: m.Predictor}}, w.cache...)
	old := w.fc.SetModel(&served)
	trees := 0
	if m.Ensemble != nil {
		trees = len(m.Ensemble.Trees)
	}
	w.opts.Logger.Info("model loaded", "name", m.Name, "version", m.Version, "runtime", w.opts.Runtime, "trees", trees)
	w.retire(old)
	w.evictLocked()
	return nil
}

// retire closes, after the grace period, a model swapped out of the
// forecaster. Kept versions have an ownedPredictor, whose Close does
// nothing: they are closed when evicted.
func (w *Watcher) retire(old *Model) {
	if old == nil {
		return
	}
	// In-flight calls may still use the old runtime: close it a little later.
	time.AfterFunc(w.opts.CloseDelay, func() { _ = old.Close() })
}

// cachedLocked returns a kept version and marks it the most recently used.
func (w *Watcher) cachedLocked(version string) (*Model, bool) {
	for i, l := range w.cache {
		if l.served.Version == version {
			copy(w.cache[1:i+1], w.cache[:i])
			w.cache[0] = l
			return l.served, true
		}
	}
	return nil, false
}

// evictLocked drops the least recently used versions beyond Keep, except
// those the forecaster still serves (stable or candidate), and closes their
// runtimes after the grace period.
func (w *Watcher) evictLocked() {
	stable := w.fc.Model()
	cand, _, _ := w.fc.Candidate()
	for i := len(w.cache) - 1; i >= 0 && len(w.cache) > w.opts.Keep; i-- {
		l := w.cache[i]
		if l.served == stable || l.served == cand {
			continue
		}
		w.cache = append(w.cache[:i], w.cache[i+1:]...)
		w.opts.Logger.Info("model dropped from memory", "name", l.served.Name, "version", l.served.Version)
		time.AfterFunc(w.opts.CloseDelay, func() { _ = l.real.Close() })
	}
}

// Cached returns a version kept in memory (the served one or one of the
// last ones served), and marks it recently used; ok is false when the
// version is not in memory. The model stays owned by the Watcher: its
// Close does nothing, and its runtime is closed CloseDelay after the
// version is dropped from memory (never while the forecaster serves it as
// stable or candidate).
func (w *Watcher) Cached(version string) (m *Model, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cachedLocked(version)
}

// CachedVersions lists the versions kept in memory, most recently used
// first.
func (w *Watcher) CachedVersions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.cache))
	for i, l := range w.cache {
		out[i] = l.served.Version
	}
	return out
}

// Close closes the runtimes of every version kept in memory, at once; call
// it when serving has stopped.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, l := range w.cache {
		errs = append(errs, l.real.Close())
	}
	w.cache = nil
	return errors.Join(errs...)
}

// Run polls the registry until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		if err := w.Sync(ctx); err != nil && !errors.Is(err, context.Canceled) {
			w.opts.Logger.Warn("model sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
