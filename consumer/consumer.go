// Package consumer is the partition-consumer runtime the features consumer
// (package streaming) and the ClickHouse sink (package sink) share: Kafka
// group membership with kafka-go's ConsumerGroup and Generation API, the
// generation loop, the assigned partitions, the reading of one partition
// from an offset the caller chose (a Reader per partition, reopened with
// backoff after a failure), commits, and the co-partitioning rule. What the
// callers keep is theirs: where a partition starts (ClickHouse's offsets,
// or a rebuild of the windows) and what a record does.
//
// The caller's handler runs once per generation, in the loop: kafka-go
// joins the next generation only after it returned and every function the
// handler started with Generation.Start has returned, so work in flight at
// a rebalance finishes first.
package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/retry"
)

// Options configures a group member. Zero values take the defaults.
type Options struct {
	// GroupID and Topics are required.
	GroupID string
	Topics  []string
	// Balancers of the group (default kafka-go's: range, then round robin).
	Balancers []kafka.GroupBalancer
	// SessionTimeout (default 30 s), RebalanceTimeout (default the session
	// timeout) and HeartbeatInterval (default a tenth of the session
	// timeout, at least 100 ms) of the membership.
	SessionTimeout, RebalanceTimeout, HeartbeatInterval time.Duration
	// JoinGroupBackoff is the wait before rejoining after an error (default 1 s).
	JoinGroupBackoff time.Duration
	// CoPartitioned: every topic must have the same partition count, so
	// that one key's records of every topic go to one member (the features
	// consumer joins a region's events of all its topics).
	CoPartitioned bool
	// Dialer for Kafka connections (default kafka.DefaultDialer).
	Dialer *kafka.Dialer
	// Logger receives kafka-go's messages at Debug (default slog.Default()).
	Logger *slog.Logger
	// OnError is told the group's errors (for a status), besides the log.
	OnError func(error)
}

func (o Options) withDefaults() Options {
	o.SessionTimeout = cmp.Or(o.SessionTimeout, 30*time.Second)
	o.RebalanceTimeout = cmp.Or(o.RebalanceTimeout, o.SessionTimeout)
	o.HeartbeatInterval = cmp.Or(o.HeartbeatInterval, max(o.SessionTimeout/10, 100*time.Millisecond))
	o.JoinGroupBackoff = cmp.Or(o.JoinGroupBackoff, time.Second)
	if o.Dialer == nil {
		o.Dialer = kafka.DefaultDialer
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Partition is an assigned topic partition.
type Partition struct {
	Topic string
	ID    int
	// Committed is the group's committed offset, -1 when none.
	Committed int64
}

// Generation is one generation of the group: its partitions and its end.
type Generation struct {
	ID       int32
	MemberID string
	// Partitions are the assigned ones, by topic (in Options.Topics order)
	// and number.
	Partitions []Partition
	gen        *kafka.Generation
	ctx        context.Context
}

// Context ends when the generation does (a rebalance, or the member left);
// not when Run's context does: a handler stopping on that one, too, selects
// on both (the group is left after the handler returned).
func (g *Generation) Context() context.Context { return g.ctx }

// Start runs fn in the generation: the next generation waits for it.
func (g *Generation) Start(fn func(ctx context.Context)) { g.gen.Start(fn) }

// Commit commits offsets (topic → partition → next offset) to the group.
func (g *Generation) Commit(offsets map[string]map[int]int64) error {
	return g.gen.CommitOffsets(offsets)
}

// ErrNotCoPartitioned is reported when Options.CoPartitioned is set and the
// topics' partition counts differ.
var ErrNotCoPartitioned = errors.New("consumer: topics are not co-partitioned")

// Run joins the group at brokers and calls handle for every generation
// until ctx ends, then leaves the group and returns nil. It returns an
// error only when it cannot start.
func Run(ctx context.Context, brokers []string, opts Options, handle func(ctx context.Context, g *Generation)) error {
	if opts.GroupID == "" || len(opts.Topics) == 0 {
		return errors.New("consumer: a group id and topics are required")
	}
	opts = opts.withDefaults()
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    opts.GroupID,
		Brokers:               brokers,
		Dialer:                opts.Dialer,
		Topics:                opts.Topics,
		GroupBalancers:        opts.Balancers,
		HeartbeatInterval:     opts.HeartbeatInterval,
		SessionTimeout:        opts.SessionTimeout,
		RebalanceTimeout:      opts.RebalanceTimeout,
		JoinGroupBackoff:      opts.JoinGroupBackoff,
		WatchPartitionChanges: true,
		StartOffset:           kafka.FirstOffset, // unused: the caller chooses where each partition starts
		Logger:                Logger(opts.Logger, slog.LevelDebug),
		ErrorLogger:           Logger(opts.Logger, slog.LevelDebug),
	})
	if err != nil {
		return fmt.Errorf("consumer: group %s: %w", opts.GroupID, err)
	}
	defer group.Close() // ends the generation and waits for its functions
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
			return nil
		}
		if err != nil {
			if !errors.Is(err, kafka.RebalanceInProgress) {
				opts.Logger.Warn("consumer group error; rejoining", "group", opts.GroupID, "err", err)
				if opts.OnError != nil {
					opts.OnError(fmt.Errorf("consumer group %s: %w", opts.GroupID, err))
				}
			}
			continue // the group backs off by itself before rejoining
		}
		g := &Generation{ID: gen.ID, MemberID: gen.MemberID, Partitions: assigned(gen, opts.Topics), gen: gen}
		started := make(chan context.Context)
		gen.Start(func(gctx context.Context) {
			started <- gctx
			<-gctx.Done()
		})
		g.ctx = <-started
		if opts.CoPartitioned {
			if err := checkCoPartitioned(ctx, brokers, opts); err != nil {
				opts.Logger.Error("consumer: refusing to consume", "group", opts.GroupID, "err", err)
				if opts.OnError != nil {
					opts.OnError(err)
				}
				select { // until the topics change (a new generation) or Run stops
				case <-g.ctx.Done():
				case <-ctx.Done():
				}
				continue
			}
		}
		handle(ctx, g)
	}
}

// assigned lists a generation's partitions in topic, partition order.
func assigned(gen *kafka.Generation, topics []string) []Partition {
	var parts []Partition
	for _, topic := range topics {
		for _, a := range gen.Assignments[topic] {
			parts = append(parts, Partition{Topic: topic, ID: a.ID, Committed: max(a.Offset, -1)})
		}
	}
	slices.SortFunc(parts, func(a, b Partition) int {
		return cmp.Or(cmp.Compare(slices.Index(topics, a.Topic), slices.Index(topics, b.Topic)), cmp.Compare(a.ID, b.ID))
	})
	return parts
}

func checkCoPartitioned(ctx context.Context, brokers []string, opts Options) error {
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: opts.Topics})
	if err != nil {
		return nil // not known now: the next generation checks again
	}
	counts := map[string]int{}
	for _, t := range md.Topics {
		counts[t.Name] = len(t.Partitions)
	}
	for _, t := range opts.Topics[1:] {
		if counts[t] != counts[opts.Topics[0]] {
			return fmt.Errorf("%w: %s has %d partitions, %s %d", ErrNotCoPartitioned, opts.Topics[0], counts[opts.Topics[0]], t, counts[t])
		}
	}
	return nil
}

// ReaderOptions configures ReadPartition. Zero values take kafka-go's
// defaults (MaxBytes 1 MB).
type ReaderOptions struct {
	Brokers       []string
	Dialer        *kafka.Dialer
	MaxBytes      int
	MaxWait       time.Duration
	QueueCapacity int
	// OffsetOutOfRangeError reports a start past the partition's end
	// instead of waiting for it.
	OffsetOutOfRangeError bool
	// MinBackoff and MaxBackoff bound the wait between reopenings after a
	// failure (defaults 100 ms and 10 s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// OnError is told each failure (then retried), for a status and the
	// caller's log (ReadPartition logs them at Debug only).
	OnError func(error)
}

// ReadPartition reads topic/partition from offset start and hands each
// message to deliver, until ctx ends or deliver returns false. A failed
// fetch reopens the reader at the next offset, with capped exponential
// backoff.
func ReadPartition(ctx context.Context, opts ReaderOptions, topic string, partition int, start int64, deliver func(kafka.Message) bool) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.MaxBytes = cmp.Or(opts.MaxBytes, 1e6)
	open := func(at int64) *kafka.Reader {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:               opts.Brokers,
			Dialer:                opts.Dialer,
			Topic:                 topic,
			Partition:             partition,
			MinBytes:              1,
			MaxBytes:              opts.MaxBytes,
			MaxWait:               opts.MaxWait,
			QueueCapacity:         opts.QueueCapacity,
			ReadLagInterval:       -1,
			OffsetOutOfRangeError: opts.OffsetOutOfRangeError,
			Logger:                Logger(opts.Logger, slog.LevelDebug),
			ErrorLogger:           Logger(opts.Logger, slog.LevelDebug),
		})
		if err := r.SetOffset(at); err != nil { // only fails on a closed reader
			opts.Logger.Error("consumer: set reader offset", "topic", topic, "partition", partition, "err", err)
		}
		return r
	}
	next := start
	r := open(next)
	defer func() { _ = r.Close() }()
	fail := func(err error) {
		opts.Logger.Debug("consumer: fetch failed; reopening the reader", "topic", topic, "partition", partition, "offset", next, "err", err)
		err = fmt.Errorf("read %s/%d at offset %d: %w", topic, partition, next, err)
		if opts.OnError != nil {
			opts.OnError(err)
		}
		_ = r.Close()
		r = open(next)
	}
	fetch := retry.Forever[kafka.Message](ctx, retry.Options{
		MinBackoff: opts.MinBackoff, MaxBackoff: opts.MaxBackoff,
		OnRetry: func(err error, _ time.Duration) { fail(err) },
	})
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil && ctx.Err() == nil {
			fail(err)
			m, err = fetch.Get(func() (kafka.Message, error) { return r.FetchMessage(ctx) })
		}
		if err != nil {
			return // ctx ended
		}
		next = m.Offset + 1
		if !deliver(m) {
			return
		}
	}
}

// Logger adapts slog for kafka-go at a level.
func Logger(l *slog.Logger, level slog.Level) kafka.Logger {
	return kafka.LoggerFunc(func(msg string, args ...any) {
		if l.Enabled(context.Background(), level) {
			l.Log(context.Background(), level, "kafka: "+fmt.Sprintf(msg, args...))
		}
	})
}
