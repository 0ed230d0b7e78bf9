// Package schedule runs the periodic model retrain inside the service: a
// cron expression (robfig/cron/v3, UTC) triggers a train function, and a
// Redis lock makes sure that two trainings never run at once across
// replicas.
//
// The lock is the key lock:training set with SET NX PX to an owner token
// unique to the scheduler; while training runs it is renewed (PEXPIRE,
// only while the key still holds the owner's token) every TTL/3, and it is
// released with a compare-and-delete Lua script, so a scheduler never
// deletes a lock another one took after its own expired. If the process
// dies, the lock expires after its TTL and the next run proceeds.
package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
)

// DefaultSpec is the default schedule: Sunday 02:00 UTC.
const DefaultSpec = "0 2 * * 0"

// ErrLocked is returned by RunOnce when another owner holds the lock.
var ErrLocked = errors.New("schedule: training lock held by another owner")

// ErrLockLost is returned by RunOnce when the lock could not be kept while
// training (it expired or was taken over); the train context is cancelled.
var ErrLockLost = errors.New("schedule: training lock lost")

// Options configures a Scheduler. A zero field takes the documented
// default; Redis and Train are required.
type Options struct {
	// Spec is a standard 5-field cron expression evaluated in UTC (or a
	// descriptor such as "@weekly"); default DefaultSpec.
	Spec  string
	Redis redis.UniversalClient
	// Train runs one training; its ctx is cancelled when the scheduler
	// stops or the lock is lost.
	Train func(ctx context.Context) error
	// LockKey is the Redis key of the lock; default "lock:training".
	LockKey string
	// LockTTL is the lock's expiry, renewed every LockTTL/3 while training;
	// default 10 minutes.
	LockTTL time.Duration
	// Owner identifies this scheduler in the lock; default
	// "<hostname>-<pid>-<random>".
	Owner      string
	Registerer prometheus.Registerer // nil: no metrics
	Logger     *slog.Logger          // default slog.Default()
}

// Scheduler triggers Train on a cron schedule under a Redis lock.
type Scheduler struct {
	opts  Options
	sched cron.Schedule
	m     *metrics
	mu    sync.Mutex // one run at a time within the process
}

// New validates the options and returns a Scheduler.
func New(opts Options) (*Scheduler, error) {
	if opts.Redis == nil || opts.Train == nil {
		return nil, fmt.Errorf("schedule: Redis and Train are required")
	}
	if opts.Spec == "" {
		opts.Spec = DefaultSpec
	}
	sched, err := cron.ParseStandard(opts.Spec)
	if err != nil {
		return nil, fmt.Errorf("schedule: cron expression %q: %w", opts.Spec, err)
	}
	if opts.LockKey == "" {
		opts.LockKey = "lock:training"
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 10 * time.Minute
	}
	if opts.Owner == "" {
		host, _ := os.Hostname()
		var b [6]byte
		_, _ = rand.Read(b[:])
		opts.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Scheduler{opts: opts, sched: sched, m: newMetrics(opts.Registerer)}, nil
}

// Next is the first scheduled time after t.
func (s *Scheduler) Next(t time.Time) time.Time { return s.sched.Next(t.UTC()) }

// Run triggers RunOnce at every scheduled time until ctx is done, then
// waits for a running training to stop and returns nil. Errors of a run are
// logged and counted, not returned: the next run will try again.
func (s *Scheduler) Run(ctx context.Context) error {
	c := cron.New(cron.WithLocation(time.UTC))
	c.Schedule(s.sched, cron.FuncJob(func() {
		ran, err := s.RunOnce(ctx)
		switch {
		case errors.Is(err, ErrLocked):
			s.opts.Logger.Info("scheduled training skipped: another replica holds the lock", "key", s.opts.LockKey)
		case err != nil:
			s.opts.Logger.Error("scheduled training failed", "err", err)
		case ran:
			s.opts.Logger.Info("scheduled training done")
		}
	}))
	s.opts.Logger.Info("training schedule started", "spec", s.opts.Spec, "next", s.Next(time.Now()))
	c.Start()
	<-ctx.Done()
	<-c.Stop().Done()
	return nil
}

// RunOnce takes the lock and trains. It returns ran = false with ErrLocked
// when another owner holds the lock, and the training's error (wrapped) or
// ErrLockLost otherwise.
func (s *Scheduler) RunOnce(ctx context.Context) (ran bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, err := s.acquire(ctx)
	if err != nil {
		s.m.result("error")
		return false, err
	}
	if !ok {
		s.m.result("skipped")
		return false, ErrLocked
	}
	start := time.Now()
	s.m.lastRun(start)
	trainCtx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.renew(trainCtx, cancel, done) })
	err = s.opts.Train(trainCtx)
	close(done)
	wg.Wait()
	lost := context.Cause(trainCtx)
	cancel(nil)
	// Release with a fresh context: ctx may be done already.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	if rerr := s.release(rctx); rerr != nil {
		s.opts.Logger.Warn("training lock release failed (it expires by itself)", "key", s.opts.LockKey, "err", rerr)
	}
	s.m.duration(time.Since(start))
	switch {
	case errors.Is(lost, ErrLockLost):
		s.m.result("error")
		return true, fmt.Errorf("%w (training error: %v)", ErrLockLost, err)
	case err != nil:
		s.m.result("error")
		return true, fmt.Errorf("schedule: training: %w", err)
	}
	s.m.result("ok")
	return true, nil
}

func (s *Scheduler) acquire(ctx context.Context) (bool, error) {
	ok, err := s.opts.Redis.SetNX(ctx, s.opts.LockKey, s.opts.Owner, s.opts.LockTTL).Result()
	if err != nil {
		return false, fmt.Errorf("schedule: take lock %s: %w", s.opts.LockKey, err)
	}
	return ok, nil
}

var (
	renewScript   = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`)
	releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)
)

// renew extends the lock every TTL/3 until done; when the lock is no
// longer ours it cancels the training with ErrLockLost.
func (s *Scheduler) renew(ctx context.Context, cancel context.CancelCauseFunc, done <-chan struct{}) {
	t := time.NewTicker(s.opts.LockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := renewScript.Run(ctx, s.opts.Redis, []string{s.opts.LockKey}, s.opts.Owner, s.opts.LockTTL.Milliseconds()).Int()
		if err != nil {
			// Redis unreachable: keep training; the next tick retries
			// before the TTL runs out.
			s.opts.Logger.Warn("training lock renewal failed", "key", s.opts.LockKey, "err", err)
			continue
		}
		if n == 0 {
			s.opts.Logger.Error("training lock lost: cancelling the training", "key", s.opts.LockKey)
			cancel(ErrLockLost)
			return
		}
	}
}

func (s *Scheduler) release(ctx context.Context) error {
	if err := releaseScript.Run(ctx, s.opts.Redis, []string{s.opts.LockKey}, s.opts.Owner).Err(); err != nil {
		return fmt.Errorf("schedule: release lock %s: %w", s.opts.LockKey, err)
	}
	return nil
}

type metrics struct {
	last prometheus.Gauge
	dur  prometheus.Gauge
	runs *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_training_last_run_timestamp_seconds",
			Help: "Start of the last training this replica ran under the lock (Unix seconds).",
		}),
		dur: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_training_last_duration_seconds",
			Help: "Duration of the last training this replica ran.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_training_runs_total",
			Help: "Scheduled training attempts by result: ok, error, skipped (another replica held the lock).",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "error", "skipped"} {
		m.runs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.last, m.dur, m.runs)
	}
	return m
}

func (m *metrics) lastRun(t time.Time)      { m.last.Set(float64(t.UnixNano()) / 1e9) }
func (m *metrics) duration(d time.Duration) { m.dur.Set(d.Seconds()) }
func (m *metrics) result(r string)          { m.runs.WithLabelValues(r).Inc() }
