package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/surgeworks/surge/model"
)

// Predictor turns model input rows (features.Schema order) into demand
// predictions, one per row. Implementations are safe for concurrent use.
type Predictor interface {
	Predict(ctx context.Context, rows [][]float32) ([]float32, error)
	Close() error
}

// Errors of the predictors.
var (
	// ErrORTUnavailable: the ONNX Runtime shared library cannot be found
	// or loaded. Callers may fall back to the Go runtime.
	ErrORTUnavailable = errors.New("onnxruntime unavailable")
	// ErrPredictorClosed is returned by Predict after Close.
	ErrPredictorClosed = errors.New("predictor closed")
	// ErrRowWidth: an input row does not have the model's feature count.
	ErrRowWidth = errors.New("input row has the wrong number of features")
)

// ORTLibraryEnv names the environment variable that overrides the path of
// the ONNX Runtime shared library.
const ORTLibraryEnv = "ORT_LIB_PATH"

// ortLibraryRel is where `make deps` puts the library, relative to the
// repository root.
const ortLibraryRel = ".cache/onnxruntime/libonnxruntime.so.1.24.1"

// ORTLibraryPath returns $ORT_LIB_PATH when set, or else the first
// .cache/onnxruntime/libonnxruntime.so.1.24.1 found in the working directory
// or one of its parents. The error wraps ErrORTUnavailable.
func ORTLibraryPath() (string, error) {
	if p := os.Getenv(ORTLibraryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %w", ErrORTUnavailable, ORTLibraryEnv, p, err)
		}
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrORTUnavailable, err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, ortLibraryRel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return "", fmt.Errorf("%w: %s not found in %s or its parents: run `make deps`, or set %s", ErrORTUnavailable, ortLibraryRel, wd, ORTLibraryEnv)
}

// ortInitMu serialises the creation of the process-wide environment.
var ortInitMu sync.Mutex

// initORT loads the shared library and creates the process-wide ONNX Runtime
// environment on first use. It is idempotent; after a failure the next call
// tries again. The environment lives as long as the process.
func initORT(libPath string) error {
	ortInitMu.Lock()
	defer ortInitMu.Unlock()
	if ort.IsInitialized() {
		return nil
	}
	if libPath == "" {
		p, err := ORTLibraryPath()
		if err != nil {
			return err
		}
		libPath = p
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelWarning()); err != nil {
		return fmt.Errorf("%w: initialise with %s: %w", ErrORTUnavailable, libPath, err)
	}
	slog.Info("onnxruntime initialised", "version", ort.GetVersion(), "library", libPath)
	return nil
}

// ORTOptions configures an ORTPredictor.
type ORTOptions struct {
	// PoolSize is the number of single-row sessions, each bound to its own
	// input and output tensors. Default runtime.GOMAXPROCS(0).
	PoolSize int
	// LibraryPath of the ONNX Runtime shared library, used when the
	// process-wide environment is not initialised yet. Default
	// ORTLibraryPath().
	LibraryPath string
}

// ortSlot is a session pre-bound to a one-row input and its output.
type ortSlot struct {
	session *ort.AdvancedSession
	in      *ort.Tensor[float32]
	out     *ort.Tensor[float32]
}

func (s *ortSlot) destroy() {
	if s.session != nil {
		s.session.Destroy()
	}
	if s.in != nil {
		s.in.Destroy()
	}
	if s.out != nil {
		s.out.Destroy()
	}
}

// ORTPredictor runs a model on ONNX Runtime (CPU, one intra-op and one
// inter-op thread per call: the fastest for single rows here, and the setting
// in which ONNX Runtime sums the trees in order, bit-identical to
// model.Ensemble.Predict). Single rows go through a pool of pre-bound
// sessions; larger batches through one shared dynamic session. It is safe
// for concurrent use.
type ORTPredictor struct {
	numFeatures int
	pool        chan *ortSlot
	slots       []*ortSlot
	batch       *ort.DynamicAdvancedSession

	mu     sync.RWMutex // held for reading by Predict, for writing by Close
	closed bool
}

// NewORTPredictor starts modelBytes (an ONNX model as written by
// model.Ensemble.MarshalONNX: input "input" [N, numFeatures], output "demand"
// [N, 1]) on ONNX Runtime. Invalid model bytes are an error, never a panic.
func NewORTPredictor(modelBytes []byte, numFeatures int, opts ORTOptions) (*ORTPredictor, error) {
	if numFeatures <= 0 {
		return nil, fmt.Errorf("new ort predictor: numFeatures %d", numFeatures)
	}
	if len(modelBytes) == 0 {
		return nil, fmt.Errorf("new ort predictor: %w: empty model", model.ErrInvalidModel)
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = runtime.GOMAXPROCS(0)
	}
	if err := initORT(opts.LibraryPath); err != nil {
		return nil, fmt.Errorf("new ort predictor: %w", err)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("new ort predictor: session options: %w", err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("new ort predictor: intra-op threads: %w", err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("new ort predictor: inter-op threads: %w", err)
	}

	p := &ORTPredictor{numFeatures: numFeatures, pool: make(chan *ortSlot, opts.PoolSize)}
	names := func() ([]string, []string) { return []string{model.InputName}, []string{model.OutputName} }
	fail := func(err error) (*ORTPredictor, error) {
		p.destroy()
		return nil, fmt.Errorf("new ort predictor: %w", err)
	}
	for range opts.PoolSize {
		s := &ortSlot{}
		p.slots = append(p.slots, s)
		if s.in, err = ort.NewEmptyTensor[float32](ort.NewShape(1, int64(numFeatures))); err != nil {
			return fail(err)
		}
		if s.out, err = ort.NewEmptyTensor[float32](ort.NewShape(1, 1)); err != nil {
			return fail(err)
		}
		in, out := names()
		s.session, err = ort.NewAdvancedSessionWithONNXData(modelBytes, in, out,
			[]ort.Value{s.in}, []ort.Value{s.out}, so)
		if err != nil {
			return fail(fmt.Errorf("%w: %w", model.ErrInvalidModel, err))
		}
		// A first run checks the input width against the model and
		// warms the session up.
		if err := s.session.Run(); err != nil {
			return fail(fmt.Errorf("%w: trial run with %d features: %w", model.ErrInvalidModel, numFeatures, err))
		}
		p.pool <- s
	}
	in, out := names()
	if p.batch, err = ort.NewDynamicAdvancedSessionWithONNXData(modelBytes, in, out, so); err != nil {
		return fail(fmt.Errorf("%w: %w", model.ErrInvalidModel, err))
	}
	return p, nil
}

// Predict returns one prediction per row; every row must have numFeatures
// values.
func (p *ORTPredictor) Predict(ctx context.Context, rows [][]float32) ([]float32, error) {
	if err := checkRows(rows, p.numFeatures); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, ErrPredictorClosed
	}
	switch len(rows) {
	case 0:
		return []float32{}, nil
	case 1:
		return p.predictOne(ctx, rows[0])
	default:
		return p.predictBatch(rows)
	}
}

func (p *ORTPredictor) predictOne(ctx context.Context, row []float32) ([]float32, error) {
	var s *ortSlot
	select {
	case s = <-p.pool:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { p.pool <- s }()
	copy(s.in.GetData(), row)
	if err := s.session.Run(); err != nil {
		return nil, fmt.Errorf("onnxruntime: %w", err)
	}
	return []float32{s.out.GetData()[0]}, nil
}

func (p *ORTPredictor) predictBatch(rows [][]float32) ([]float32, error) {
	n := len(rows)
	flat := make([]float32, n*p.numFeatures)
	for i, r := range rows {
		copy(flat[i*p.numFeatures:], r)
	}
	out := make([]float32, n)
	in, err := ort.NewTensor(ort.NewShape(int64(n), int64(p.numFeatures)), flat)
	if err != nil {
		return nil, fmt.Errorf("onnxruntime: input tensor: %w", err)
	}
	defer in.Destroy()
	ot, err := ort.NewTensor(ort.NewShape(int64(n), 1), out)
	if err != nil {
		return nil, fmt.Errorf("onnxruntime: output tensor: %w", err)
	}
	defer ot.Destroy()
	if err := p.batch.Run([]ort.Value{in}, []ort.Value{ot}); err != nil {
		return nil, fmt.Errorf("onnxruntime: %w", err)
	}
	// Keep the Go slices alive until ONNX Runtime is done with them.
	runtime.KeepAlive(flat)
	runtime.KeepAlive(out)
	return out, nil
}

// Close waits for running predictions and releases every session and
// tensor. It is idempotent.
func (p *ORTPredictor) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.destroy()
	return nil
}

func (p *ORTPredictor) destroy() {
	for _, s := range p.slots {
		s.destroy()
	}
	p.slots = nil
	if p.batch != nil {
		p.batch.Destroy()
		p.batch = nil
	}
}

// GoPredictor evaluates a model.Ensemble in Go: the reference runtime, and
// the fallback where ONNX Runtime is unavailable. It is safe for concurrent
// use.
type GoPredictor struct {
	e *model.Ensemble
}

// NewGoPredictor wraps a validated ensemble.
func NewGoPredictor(e *model.Ensemble) *GoPredictor { return &GoPredictor{e: e} }

// Predict returns one prediction per row; every row must have
// e.NumFeatures values.
func (p *GoPredictor) Predict(ctx context.Context, rows [][]float32) ([]float32, error) {
	if err := checkRows(rows, p.e.NumFeatures); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]float32, len(rows))
	p.e.PredictBatch(rows, out)
	return out, nil
}

// Close does nothing: the Go runtime holds no resources.
func (p *GoPredictor) Close() error { return nil }

func checkRows(rows [][]float32, n int) error {
	for i, r := range rows {
		if len(r) != n {
			return fmt.Errorf("%w: row %d has %d, the model takes %d", ErrRowWidth, i, len(r), n)
		}
	}
	return nil
}
