package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/failsafe-go/failsafe-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/consumer"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/retry"
)

// Options configures a Sink. Zero values take the defaults.
type Options struct {
	// GroupID is the Kafka consumer group. Default "clickhouse-sink".
	GroupID string
	// EventTopics feed events_raw. Default ingest.EventTopics.
	EventTopics []string
	// DecisionTopics feed pricing_decisions. Default
	// [ingest.TopicPricingDecisions].
	DecisionTopics []string
	// ExposureTopics feed experiment_exposures. Default
	// [ingest.TopicExperiments].
	ExposureTopics []string
	// BatchSize bounds the rows of one insert block. Default 10,000.
	BatchSize int
	// Inserters is the number of inserts per table that may run at the
	// same time, each for its own share of the partitions (default 2): one
	// insert's fixed cost (parts written for the table and each view)
	// overlaps another's.
	Inserters int
	// BatchDelay is the longest a record waits for its batch to fill before
	// the batch is inserted. Default 500 ms.
	BatchDelay time.Duration
	// InsertTimeout bounds one insert attempt. Default 30 s.
	InsertTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts while ClickHouse fails. Defaults 100 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// LagInterval is how often the high watermarks of the assigned
	// partitions are read, for lag and rows/s. Default 1 s.
	LagInterval time.Duration
	// StartOffset is where a partition starts that ClickHouse knows nothing
	// of: kafka.FirstOffset (default: everything Kafka retains) or
	// kafka.LastOffset.
	StartOffset int64
	// SessionTimeout is the group session timeout (default 30 s; Kafka
	// refuses values below its group.min.session.timeout.ms, 6 s by
	// default). A member that crashed holds its partitions this long.
	// RebalanceTimeout is how long the coordinator waits for members to
	// rejoin (default 30 s). HeartbeatInterval defaults to a third of the
	// session timeout, at most 3 s.
	SessionTimeout, RebalanceTimeout, HeartbeatInterval time.Duration
	Logger                                              *slog.Logger
	// Registerer receives the surge_sink_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Group returns the consumer group and the topics of a Sink with these
// options.
func (o Options) Group() (id string, topics []string) {
	o = o.withDefaults()
	return o.GroupID, slices.Concat(o.EventTopics, o.DecisionTopics, o.ExposureTopics)
}

func (o Options) withDefaults() Options {
	o.GroupID = cmp.Or(o.GroupID, "clickhouse-sink")
	if o.EventTopics == nil {
		o.EventTopics = ingest.EventTopics
	}
	if o.DecisionTopics == nil {
		o.DecisionTopics = []string{ingest.TopicPricingDecisions}
	}
	if o.ExposureTopics == nil {
		o.ExposureTopics = []string{ingest.TopicExperiments}
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 10_000
	}
	if o.Inserters <= 0 {
		o.Inserters = 2
	}
	if o.BatchDelay <= 0 {
		o.BatchDelay = 500 * time.Millisecond
	}
	if o.InsertTimeout <= 0 {
		o.InsertTimeout = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.LagInterval <= 0 {
		o.LagInterval = time.Second
	}
	if o.StartOffset != kafka.LastOffset {
		o.StartOffset = kafka.FirstOffset
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 30 * time.Second
	}
	if o.RebalanceTimeout <= 0 {
		o.RebalanceTimeout = 30 * time.Second
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = min(3*time.Second, o.SessionTimeout/3)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Sink consumes the event and decision topics in its own consumer group and
// inserts them into ClickHouse exactly once (see the package doc). Run does
// the work; Status may be called at any time from any goroutine.
type Sink struct {
	brokers   []string
	conn      driver.Conn
	db        string
	opts      Options
	log       *slog.Logger
	m         *metrics
	events    *table[eventRow]
	decisions *table[decisionRow]
	exposures *table[exposureRow]
	client    *kafka.Client
	running   atomic.Bool
	// viewsMu holds events_raw inserts (read) off a repair of its views
	// (write).
	viewsMu sync.RWMutex

	rows       atomic.Uint64
	invalid    atomic.Uint64
	duplicates atomic.Uint64

	mu           sync.Mutex
	parts        map[tp]*partState
	lastErr      string
	lastErrAt    time.Time
	lastInsertAt time.Time
	rate         []rateSample // rows inserted over the last rateWindow
	lastInvalid  time.Time    // last time an invalid record was logged
}

// tp is a topic partition.
type tp struct {
	topic     string
	partition int
}

type partState struct {
	table string
	next  int64 // next offset to land in ClickHouse; -1 while unknown
	hwm   int64 // high watermark; -1 while unknown
}

type rateSample struct {
	at   time.Time
	rows uint64
}

const rateWindow = 10 * time.Second

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// New returns a sink from brokers into database (which must hold the
// migrated tables) through conn. It connects to nothing before Run.
func New(brokers []string, conn driver.Conn, database string, opts Options) (*Sink, error) {
	if len(brokers) == 0 {
		return nil, errors.New("sink: no Kafka brokers")
	}
	if conn == nil {
		return nil, errors.New("sink: no ClickHouse connection")
	}
	if len(database) > 128 || !identRE.MatchString(database) {
		return nil, fmt.Errorf("sink: invalid database name %q", database)
	}
	opts = opts.withDefaults()
	seen := map[string]bool{}
	for _, t := range slices.Concat(opts.EventTopics, opts.DecisionTopics, opts.ExposureTopics) {
		if t == "" || seen[t] {
			return nil, fmt.Errorf("sink: empty or repeated topic %q", t)
		}
		seen[t] = true
	}
	if len(seen) == 0 {
		return nil, errors.New("sink: no topics")
	}
	events, decisions, exposures := eventsTable, decisionsTable, exposuresTable
	events.topics, decisions.topics, exposures.topics = opts.EventTopics, opts.DecisionTopics, opts.ExposureTopics
	return &Sink{
		brokers:   brokers,
		conn:      conn,
		db:        database,
		opts:      opts,
		log:       opts.Logger.With("component", "sink", "group", opts.GroupID),
		m:         newMetrics(opts.Registerer),
		events:    &events,
		decisions: &decisions,
		exposures: &exposures,
		client:    &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second},
		parts:     map[tp]*partState{},
	}, nil
}

func (s *Sink) topics() []string {
	return slices.Concat(s.opts.EventTopics, s.opts.DecisionTopics, s.opts.ExposureTopics)
}

// Run consumes until ctx ends, then lets an insert in flight finish, tries
// once to insert the batch at hand, leaves the group and returns nil. It
// returns an error only when it cannot start. Run may be called once.
func (s *Sink) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sink: Run called twice")
	}
	lagCtx, stopLag := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { s.watchLag(lagCtx) })
	defer func() {
		stopLag()
		wg.Wait()
		s.log.Info("sink stopped")
	}()
	s.log.Info("sink started", "topics", s.topics(), "database", s.db)
	err := consumer.Run(ctx, s.brokers, consumer.Options{
		GroupID:           s.opts.GroupID,
		Topics:            s.topics(),
		Balancers:         []kafka.GroupBalancer{kafka.RoundRobinGroupBalancer{}},
		SessionTimeout:    s.opts.SessionTimeout,
		RebalanceTimeout:  s.opts.RebalanceTimeout,
		HeartbeatInterval: s.opts.HeartbeatInterval,
		JoinGroupBackoff:  s.opts.MaxBackoff,
		Logger:            s.log,
		OnError:           func(err error) { s.fail("kafka consumer group", err) },
	}, func(ctx context.Context, g *consumer.Generation) {
		// The generation's work ends with it, or when the sink stops.
		gctx, cancel := context.WithCancel(g.Context())
		defer cancel()
		defer context.AfterFunc(ctx, cancel)()
		s.generation(gctx, g, time.Now())
	})
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}

// generation runs one consumer-group generation: it returns only once
// ctx (the generation) has ended, since a returning function ends it.
func (s *Sink) generation(ctx context.Context, gen *consumer.Generation, started time.Time) {
	assigned := make([]tp, len(gen.Partitions))
	for i, p := range gen.Partitions {
		assigned[i] = tp{p.Topic, p.ID}
	}
	s.log.Info("sink generation", "generation", gen.ID, "member", gen.MemberID, "partitions", len(assigned))
	s.assign(assigned)
	defer s.unassign(assigned)
	if len(assigned) == 0 {
		<-ctx.Done()
		return
	}
	starts, ok := s.startOffsets(ctx, assigned, started)
	if !ok {
		return // the generation ended
	}
	s.commitStarts(gen, starts)
	var wg sync.WaitGroup
	var evParts, decParts, expParts []tp
	for _, p := range assigned {
		s.setNext(p, starts[p])
		switch {
		case slices.Contains(s.events.topics, p.topic):
			evParts = append(evParts, p)
		case slices.Contains(s.exposures.topics, p.topic):
			expParts = append(expParts, p)
		default:
			decParts = append(decParts, p)
		}
	}
	startTable(ctx, &wg, s, s.events, gen, evParts, starts)
	startTable(ctx, &wg, s, s.decisions, gen, decParts, starts)
	startTable(ctx, &wg, s, s.exposures, gen, expParts, starts)
	wg.Wait()
}

// commitStarts commits the start offsets that are ahead of the group's
// committed ones: a sink that died between an insert and its commit left
// Kafka behind, and a partition without new records would show that lag
// forever.
func (s *Sink) commitStarts(gen *consumer.Generation, starts map[tp]int64) {
	commit := map[string]map[int]int64{}
	for _, pa := range gen.Partitions {
		if start, ok := starts[tp{pa.Topic, pa.ID}]; ok && start > pa.Committed {
			if commit[pa.Topic] == nil {
				commit[pa.Topic] = map[int]int64{}
			}
			commit[pa.Topic][pa.ID] = start
		}
	}
	if err := gen.Commit(commit); err != nil {
		s.m.commitErrors.Inc()
		s.log.Debug("sink: commit start offsets", "err", err)
	}
}

// batcherQueue bounds the records waiting for a batcher while it inserts:
// enough for the readers to keep reading through an insert's fixed cost,
// while Kafka's fetches and kafka-go's own queues hold the rest (at
// BatchSize, 10,000 records of a few hundred bytes waited in every one).
const batcherQueue = 1024

// startTable starts a reader per partition of a table and Inserters
// batchers. A partition always feeds the same batcher, so the inserts of
// one partition never overlap: that keeps the reasoning of flushBatch (and
// of its reconciliation) per partition.
func startTable[R any](ctx context.Context, wg *sync.WaitGroup, s *Sink, t *table[R], gen *consumer.Generation, parts []tp, starts map[tp]int64) {
	n := min(s.opts.Inserters, len(parts))
	chans := make([]chan record[R], n)
	for i := range chans {
		ch := make(chan record[R], min(s.opts.BatchSize, batcherQueue))
		chans[i] = ch
		wg.Go(func() { runBatcher(ctx, s, t, gen, ch) })
	}
	for i, p := range parts {
		ch := chans[i%n]
		wg.Go(func() { readPartition(ctx, s, t, p, starts[p], ch) })
	}
}

// startOffsets finds where each assigned partition starts: right after the
// highest offset ClickHouse holds, else at StartOffset resolved through
// Kafka. It first waits for inserts of this group that started before the
// generation (a previous owner's insert may still be running on the
// server). It retries until it succeeds or ctx ends (ok false).
func (s *Sink) startOffsets(ctx context.Context, assigned []tp, genStart time.Time) (map[tp]int64, bool) {
	starts, err := retrying[map[tp]int64](ctx, s, "read start offsets", nil).Get(func() (map[tp]int64, error) {
		return s.tryStartOffsets(ctx, assigned, genStart)
	})
	return starts, err == nil
}

// retrying is the sink's retry policy (failsafe-go): capped exponential
// backoff from MinBackoff to MaxBackoff with ±20 % jitter, so that replicas
// do not retry in step, until ctx ends. Each failure is recorded for Status
// and logged as what failed, and passed to onFailure (may be nil).
func retrying[R any](ctx context.Context, s *Sink, what string, onFailure func(error)) failsafe.Executor[R] {
	return retry.Forever[R](ctx, retry.Options{
		MinBackoff: s.opts.MinBackoff, MaxBackoff: s.opts.MaxBackoff,
		OnRetry: func(err error, _ time.Duration) {
			s.fail(what, err)
			if onFailure != nil {
				onFailure(err)
			}
		},
	})
}

func (s *Sink) tryStartOffsets(ctx context.Context, assigned []tp, genStart time.Time) (map[tp]int64, error) {
	if err := s.awaitOlderInserts(ctx, genStart); err != nil {
		return nil, err
	}
	held, err := s.positions(ctx)
	if err != nil {
		return nil, err
	}
	starts := make(map[tp]int64, len(assigned))
	unknown := map[string][]kafka.OffsetRequest{}
	for _, p := range assigned {
		if last, ok := held[p]; ok {
			starts[p] = last + 1
			continue
		}
		unknown[p.topic] = append(unknown[p.topic], kafka.OffsetRequest{Partition: p.partition, Timestamp: s.opts.StartOffset})
	}
	if len(unknown) == 0 {
		return starts, nil
	}
	resp, err := s.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: unknown})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	for topic, ps := range resp.Topics {
		for _, po := range ps {
			if po.Error != nil {
				return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
			}
			off := po.FirstOffset
			if s.opts.StartOffset == kafka.LastOffset {
				off = po.LastOffset
			}
			starts[tp{topic, po.Partition}] = off
		}
	}
	for _, p := range assigned {
		if _, ok := starts[p]; !ok {
			return nil, fmt.Errorf("list offsets: no answer for %s/%d", p.topic, p.partition)
		}
	}
	return starts, nil
}

// Status is a snapshot of the sink, for operators (GraphQL ingestionStatus).
type Status struct {
	// Group is the consumer group.
	Group string
	// Partitions are those assigned to this instance, by topic and number.
	Partitions []PartitionStatus
	// RowsInserted counts the rows this instance inserted (both tables).
	RowsInserted uint64
	// RowsPerSecond is the insert rate over the last 10 s.
	RowsPerSecond float64
	// InvalidRecords counts the records skipped as undecodable.
	InvalidRecords uint64
	// Duplicates counts the records not inserted because their table
	// already held their eventId or quoteId (a resend that reached Kafka
	// twice).
	Duplicates uint64
	// LastInsertAt is the time of the last successful insert.
	LastInsertAt time.Time
	// LastError is the last failure (ClickHouse or Kafka) and LastErrorAt
	// its time; they stay after recovery (compare with LastInsertAt).
	LastError   string
	LastErrorAt time.Time
}

// PartitionStatus is the position of one partition.
type PartitionStatus struct {
	Topic     string
	Partition int
	// Table is the ClickHouse table the partition feeds.
	Table string
	// NextOffset is the offset of the next record to land in ClickHouse
	// (everything before it is there); -1 while unknown.
	NextOffset int64
	// HighWatermark is the offset the next record produced will get; -1
	// while unknown.
	HighWatermark int64
	// Lag is HighWatermark - NextOffset, the records not yet in ClickHouse;
	// -1 while unknown.
	Lag int64
}

// Lag is the sum of the known partition lags.
func (st Status) Lag() int64 {
	var n int64
	for _, p := range st.Partitions {
		if p.Lag > 0 {
			n += p.Lag
		}
	}
	return n
}

// Status returns the current state of the sink.
func (s *Sink) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		Group:          s.opts.GroupID,
		RowsInserted:   s.rows.Load(),
		InvalidRecords: s.invalid.Load(),
		Duplicates:     s.duplicates.Load(),
		LastInsertAt:   s.lastInsertAt,
		LastError:      s.lastErr,
		LastErrorAt:    s.lastErrAt,
	}
	if n := len(s.rate); n >= 2 {
		first, last := s.rate[0], s.rate[n-1]
		if d := last.at.Sub(first.at).Seconds(); d > 0 {
			st.RowsPerSecond = float64(last.rows-first.rows) / d
		}
	}
	for p, ps := range s.parts {
		st.Partitions = append(st.Partitions, PartitionStatus{
			Topic: p.topic, Partition: p.partition, Table: ps.table,
			NextOffset: ps.next, HighWatermark: ps.hwm, Lag: lag(ps),
		})
	}
	slices.SortFunc(st.Partitions, func(a, b PartitionStatus) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return st
}

func lag(ps *partState) int64 {
	if ps.next < 0 || ps.hwm < 0 {
		return -1
	}
	return max(ps.hwm-ps.next, 0)
}

func (s *Sink) tableOf(topic string) string {
	switch {
	case slices.Contains(s.events.topics, topic):
		return s.events.name
	case slices.Contains(s.exposures.topics, topic):
		return s.exposures.name
	}
	return s.decisions.name
}

func (s *Sink) assign(ps []tp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		s.parts[p] = &partState{table: s.tableOf(p.topic), next: -1, hwm: -1}
	}
}

func (s *Sink) unassign(ps []tp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		delete(s.parts, p)
		s.m.deleteLag(p)
	}
}

// setNext records that everything before next is in ClickHouse.
func (s *Sink) setNext(p tp, next int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps := s.parts[p]; ps != nil {
		ps.next = next
		if ps.hwm >= 0 && ps.hwm < next {
			ps.hwm = next // the watermark was read before these records came
		}
		s.m.setLag(p, lag(ps))
	}
}

// fail records a failure for Status and logs it.
func (s *Sink) fail(what string, err error) {
	s.mu.Lock()
	s.lastErr = what + ": " + err.Error()
	s.lastErrAt = time.Now()
	s.mu.Unlock()
	s.log.Warn("sink: "+what+" failed", "err", err)
}

// watchLag reads the high watermarks of the assigned partitions every
// LagInterval, and samples the insert rate.
func (s *Sink) watchLag(ctx context.Context) {
	t := time.NewTicker(s.opts.LagInterval)
	defer t.Stop()
	for {
		s.pollLag(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Sink) pollLag(ctx context.Context) {
	now := time.Now()
	s.mu.Lock()
	s.rate = append(s.rate, rateSample{now, s.rows.Load()})
	i := 0
	for i < len(s.rate)-2 && now.Sub(s.rate[i].at) > rateWindow {
		i++
	}
	s.rate = append(s.rate[:0], s.rate[i:]...)
	req := map[string][]kafka.OffsetRequest{}
	for p := range s.parts {
		req[p.topic] = append(req[p.topic], kafka.LastOffsetOf(p.partition))
	}
	s.mu.Unlock()
	if len(req) == 0 {
		return
	}
	resp, err := s.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("sink: read high watermarks", "err", err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, ps := range resp.Topics {
		for _, po := range ps {
			p := tp{topic, po.Partition}
			st := s.parts[p]
			if po.Error != nil || st == nil {
				continue
			}
			st.hwm = max(po.LastOffset, st.next)
			s.m.setLag(p, lag(st))
		}
	}
}
