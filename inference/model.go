package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
}

// Close releases the runtime's resources.
func (m *Model) Close() error {
	if m == nil || m.Predictor == nil {
		return nil
	}
	return m.Predictor.Close()
}

// LoadModel decodes an ONNX artifact, refuses it when it was trained on
// another feature schema than schema, and starts it on the runtime.
func LoadModel(data []byte, rt Runtime, schema features.Schema) (*Model, error) {
	ens, err := model.UnmarshalONNX(data)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	if err := schema.CheckHash(ens.Meta.SchemaHash); err != nil {
		return nil, fmt.Errorf("load model %s: %w", ens.Meta.Version, err)
	}
	if ens.NumFeatures != schema.Len() {
		return nil, fmt.Errorf("load model %s: %w: %d inputs, schema has %d", ens.Meta.Version, features.ErrSchemaMismatch, ens.NumFeatures, schema.Len())
	}
	m := &Model{Name: ens.Meta.Name, Version: ens.Meta.Version, Ensemble: ens}
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
	Name       string        // model name (default "demand")
	Runtime    Runtime       // default onnxruntime
	Interval   time.Duration // how often the registry is polled (default 30 s)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Watcher keeps the forecaster serving the registry's active model version.
// A version that fails to load (corrupt artifact, other feature schema) is
// refused and the previous one keeps serving.
type Watcher struct {
	src  ModelSource
	fc   *Forecaster
	opts WatcherOptions

	mu         sync.Mutex           // serialises Sync
	failed     map[string]time.Time // version → when it last failed to load
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
	if t, ok := w.failed[version]; ok && time.Since(t) < 10*w.opts.Interval {
		return nil // refused recently: do not refetch it every poll
	}
	data, err := w.src.Load(ctx, entry)
	if err != nil {
		w.loadErrors.WithLabelValues("fetch").Inc()
		w.failed[version] = time.Now()
		return fmt.Errorf("fetch model %s %s: %w", w.opts.Name, version, err)
	}
	m, err := LoadModel(data, w.opts.Runtime, features.V1)
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
	old := w.fc.SetModel(m)
	w.opts.Logger.Info("model loaded", "name", m.Name, "version", m.Version, "runtime", w.opts.Runtime, "trees", len(m.Ensemble.Trees))
	if old != nil {
		// In-flight calls may still use the old runtime: close it a little later.
		time.AfterFunc(10*time.Second, func() { _ = old.Close() })
	}
	return nil
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
