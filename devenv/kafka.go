package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// KafkaOptions configures StartKafka.
type KafkaOptions struct {
	// Dir is kfake's DataDir: topics, records and committed offsets
	// survive Stop and a process crash. Required; created if missing.
	Dir string
	// Addr is the listen address of the first broker. Default
	// "127.0.0.1:0": a free port bound directly (no race). The other
	// brokers listen on free loopback ports.
	Addr string
	// NumBrokers is the number of brokers of the cluster (default 1). With
	// several, StopBroker stops one of them.
	NumBrokers int
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

// Kafka is an in-process kfake cluster. It is a test broker (one event
// loop for all its brokers, one copy of the data whatever the replication
// factor, page-cache durability); production points at real Kafka by
// address.
type Kafka struct {
	// Brokers are the bootstrap addresses (host:port) for clients, one per
	// broker, a stopped one included (as a client's list would).
	Brokers []string
	// Dir is the data directory.
	Dir string

	opts   KafkaOptions
	logger *slog.Logger

	mu        sync.Mutex
	cluster   *kfake.Cluster    // nil when stopped
	listeners []*brokerListener // by node ID, of the running cluster
	stopped   int               // brokers of the running cluster stopped by StopBroker
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
	opts.NumBrokers = orDefault(opts.NumBrokers, 1)
	k := &Kafka{Dir: dir, opts: opts, logger: loggerOrDiscard(opts.Logger)}
	k.mu.Lock()
	defer k.mu.Unlock()
	addrs := make([]string, opts.NumBrokers)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	addrs[0] = opts.Addr
	if err := k.startLocked(ctx, addrs); err != nil {
		return nil, err
	}
	return k, nil
}

// startLocked starts the cluster, broker i listening on addrs[i].
func (k *Kafka) startLocked(ctx context.Context, addrs []string) error {
	begin := time.Now()
	k.listeners, k.stopped = nil, 0
	listen := func(network, _ string) (net.Listener, error) { // kfake calls it for node 0, 1, …
		if len(k.listeners) == len(addrs) {
			return nil, fmt.Errorf("devenv: kafka: more listeners asked for than the %d brokers", len(addrs))
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, network, addrs[len(k.listeners)])
		if err != nil {
			return nil, err
		}
		bl := &brokerListener{Listener: ln, conns: map[net.Conn]struct{}{}}
		k.listeners = append(k.listeners, bl)
		return bl, nil
	}
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(len(addrs)),
		kfake.ListenFn(listen),
		kfake.DataDir(k.Dir),
		kfake.DefaultNumPartitions(k.opts.Partitions),
		kfake.WithLogger(slogKfake{k.logger}),
	)
	if err != nil {
		return fmt.Errorf("devenv: start kafka on %s in %s: %w", strings.Join(addrs, ","), k.Dir, err)
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
	k.logger.Info("devenv: started", "name", "kafka", "addrs", k.Brokers, "dir", k.Dir,
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

// StopBroker stops broker node (0 … NumBrokers-1) as a crash would: it
// closes its listener and every client connection to it, and kfake moves
// the leadership of its partitions and its groups to the others (the data
// stays: kfake keeps one copy for all brokers, where Kafka would have the
// replicas on the survivors). From then on, acks=all produces to the
// topics existing now whose min.insync.replicas exceeds the brokers left
// are refused with NOT_ENOUGH_REPLICAS, as Kafka would (kfake itself does
// not enforce the setting). The cluster's controller, the last node,
// cannot be stopped (kfake never moves it). Restart brings every broker
// back.
func (k *Kafka) StopBroker(ctx context.Context, node int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.cluster == nil:
		return errors.New("devenv: kafka: stop broker: the cluster is stopped")
	case node < 0 || node >= len(k.listeners):
		return fmt.Errorf("devenv: kafka: stop broker %d: the cluster has brokers 0 to %d", node, len(k.listeners)-1)
	case node == len(k.listeners)-1:
		return fmt.Errorf("devenv: kafka: stop broker %d: it is the controller, which kfake cannot move", node)
	}
	if err := k.cluster.RemoveNode(int32(node)); err != nil {
		return fmt.Errorf("devenv: kafka: stop broker %d: %w", node, err)
	}
	k.listeners[node].closeConns()
	k.stopped++
	live := len(k.listeners) - k.stopped
	k.logger.Info("devenv: stopped broker", "name", "kafka", "node", node, "addr", k.Brokers[node], "live", live)
	return k.refuseUnderReplicated(ctx, live)
}

// refuseUnderReplicated makes the cluster refuse acks=all produces to the
// topics whose min.insync.replicas exceeds live.
func (k *Kafka) refuseUnderReplicated(ctx context.Context, live int) error {
	md, err := (&kafka.Client{Addr: kafka.TCP(k.Brokers[len(k.Brokers)-1]), Transport: &kafka.Transport{}}).Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return fmt.Errorf("devenv: kafka: list topics: %w", err)
	}
	for _, t := range md.Topics {
		info := k.cluster.TopicInfo(t.Name)
		if info == nil || info.Configs["min.insync.replicas"] == nil {
			continue
		}
		n, err := strconv.Atoi(*info.Configs["min.insync.replicas"])
		if err != nil || n <= live {
			continue
		}
		k.cluster.Fault(kfake.Fault{
			Keys: []kmsg.Key{kmsg.Produce}, Topic: t.Name, Err: kerr.NotEnoughReplicas, Count: -1,
			When: func(req kmsg.Request) bool { return req.(*kmsg.ProduceRequest).Acks == -1 },
		})
		k.logger.Info("devenv: kafka: refusing acks=all produces", "topic", t.Name, "min.insync.replicas", n, "live", live)
	}
	return nil
}

// Stop closes the cluster, flushing its state to Dir. It is idempotent.
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

// Restart stops the cluster if it runs and starts it again, every broker on
// its address and the same Dir, for broker-down/up tests.
func (k *Kafka) Restart(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopLocked()
	if len(k.Brokers) == 0 {
		return errors.New("devenv: kafka restart: no previous address")
	}
	return k.startLocked(ctx, k.Brokers)
}

// brokerListener is a broker's listener that keeps the connections it
// accepted, so that StopBroker can cut them.
type brokerListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	killed bool // by closeConns: a connection accepted meanwhile is cut too
}

func (l *brokerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	return &trackedConn{Conn: c, l: l}, nil
}

func (l *brokerListener) closeConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = true
	for c := range l.conns {
		_ = c.Close()
	}
	clear(l.conns)
}

// trackedConn leaves its listener's set when closed.
type trackedConn struct {
	net.Conn
	l *brokerListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
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
