package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// KafkaOptions configures StartKafka.
type KafkaOptions struct {
	// Dir is kfake's DataDir: topics, records and committed offsets
	// survive Stop and a process crash. Required; created if missing.
	Dir string
	// Addr is the listen address of the single broker. Default
	// "127.0.0.1:0": a free port bound directly (no race).
	Addr string
	// Partitions is the partition count of the topics created here and
	// the broker default. Default 6.
	Partitions int
	// Topics are created at every start unless they exist (kfake ignores
	// seed topics when it loads a DataDir, so they are created through its
	// admin API instead).
	Topics []string
	// SlowProduceEvery, for fault injection: every n-th produce request is
	// held for SlowProduceDelay before the broker handles it, so that the
	// client has timed out (and retries) when its records are written —
	// what a lost acknowledgement does. 0: off.
	SlowProduceEvery int
	// SlowProduceDelay is the hold of a slowed produce (default 6 s, past
	// the intake writer's 5 s timeout).
	SlowProduceDelay time.Duration
	// Logger receives start/stop events and kfake's warnings and errors.
	// Default: discard.
	Logger *slog.Logger
}

// Kafka is an in-process single-broker kfake cluster. It is a test broker
// (one event loop, no replication, page-cache durability); production
// points at real Kafka by address.
type Kafka struct {
	// Brokers are the bootstrap addresses (host:port) for clients.
	Brokers []string
	// Dir is the data directory.
	Dir string

	opts   KafkaOptions
	logger *slog.Logger

	mu      sync.Mutex
	cluster *kfake.Cluster // nil when stopped
}

// StartKafka starts kfake in this process with persistence in opts.Dir and
// creates opts.Topics.
func StartKafka(ctx context.Context, opts KafkaOptions) (*Kafka, error) {
	if opts.Dir == "" {
		return nil, errors.New("devenv: KafkaOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("devenv: kafka dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("devenv: kafka dir: %w", err)
	}
	opts.Dir = dir
	opts.Addr = orDefault(opts.Addr, "127.0.0.1:0")
	opts.Partitions = orDefault(opts.Partitions, 6)
	k := &Kafka{Dir: dir, opts: opts, logger: loggerOrDiscard(opts.Logger)}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.startLocked(ctx, opts.Addr); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Kafka) startLocked(ctx context.Context, addr string) error {
	begin := time.Now()
	listen := func(network, _ string) (net.Listener, error) {
		var lc net.ListenConfig
		return lc.Listen(ctx, network, addr)
	}
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ListenFn(listen),
		kfake.DataDir(k.Dir),
		kfake.DefaultNumPartitions(k.opts.Partitions),
		kfake.WithLogger(slogKfake{k.logger}),
	)
	if err != nil {
		return fmt.Errorf("devenv: start kafka on %s in %s: %w", addr, k.Dir, err)
	}
	for _, topic := range k.opts.Topics {
		if err := cl.CreateTopic(topic, int32(k.opts.Partitions), nil); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			cl.Close()
			return fmt.Errorf("devenv: kafka: create topic %q: %w", topic, err)
		}
	}
	if n := k.opts.SlowProduceEvery; n > 0 {
		delay := orDefault(k.opts.SlowProduceDelay, 6*time.Second)
		var seen int
		cl.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			cl.KeepControl()
			if seen++; seen%n == 0 {
				k.logger.Warn("devenv: kafka: fault injection: holding a produce request past its client's timeout", "hold", delay)
				cl.SleepControl(func() { time.Sleep(delay) })
			}
			return nil, nil, false // then handled as usual
		})
	}
	k.cluster = cl
	k.Brokers = cl.ListenAddrs()
	k.logger.Info("devenv: started", "name", "kafka", "addr", k.Brokers, "dir", k.Dir,
		"topics", len(k.opts.Topics), "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// Cluster exposes the running kfake cluster for fault injection
// (Control, ControlKey); nil while stopped.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster
}

// Stop closes the broker, flushing its state to Dir. It is idempotent.
func (k *Kafka) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopLocked()
}

func (k *Kafka) stopLocked() {
	if k.cluster == nil {
		return
	}
	k.cluster.Close()
	k.cluster = nil
	k.logger.Info("devenv: stopped", "name", "kafka", "addr", k.Brokers)
}

// Restart stops the broker if it runs and starts it again on the same
// address and Dir, for broker-down/up tests.
func (k *Kafka) Restart(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopLocked()
	if len(k.Brokers) == 0 {
		return errors.New("devenv: kafka restart: no previous address")
	}
	return k.startLocked(ctx, k.Brokers[0])
}

// slogKfake forwards kfake's warnings and errors to slog; its info and
// debug output is per request and too chatty.
type slogKfake struct{ l *slog.Logger }

func (s slogKfake) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		s.l.Error("kfake: " + fmt.Sprintf(msg, args...))
	case kfake.LogLevelWarn:
		s.l.Warn("kfake: " + fmt.Sprintf(msg, args...))
	}
}
