// Package streaming turns the event topics into online features: a Kafka
// consumer group ("features") keeps per-region event-time windows in memory
// and writes each region's features to Redis (features.Store) at most once
// a second, committing offsets only once the writes that reflect them have
// succeeded.
//
// # Windows
//
// Each region has a ring of 1-minute tumbling buckets in event time
// (searches, bookings, cancels, and the latest supply, weather, traffic and
// local-event levels), long enough for the 15 closed minutes of the window,
// the minute under way and slack. The V1 features are
// features.FromMinutes over the closed minutes before the minute under way —
// the function training uses — so the 1-, 5- and 15-minute views, trend and
// supply/demand ratio mean the same thing online and offline. The minute
// under way is written next to them (searches_current, bookings_current,
// cancels_current, supply_current, see features/online.go), so the hash
// changes within a second of an event while the model inputs change when a
// minute closes, as they did in training. The seasonality index is looked
// up at the end of the window (event time). A region's windows advance with
// its own event time only: a region without events is not rewritten, its
// features expire from Redis after the TTL (serving then degrades as for
// stale features), and its state leaves memory after Options.IdleRegion.
//
// # Lateness
//
// A region's watermark on a topic is the newest event time seen for that
// region on that topic minus Options.Grace. An event behind it is late: it
// does not touch the live features and is counted in
// surge_stream_late_events_total (it still reaches ClickHouse through the
// sink). Events within the grace land in their own minute, even one that
// has closed: the region is rewritten. The watermark is per region and
// topic because a region's events of one topic are totally ordered on one
// partition: a replay makes the same decisions as the live run, and one
// region's clock does not make another's events late. Backfill events are
// skipped and counted.
//
// # Writes and commits
//
// A flush loop (every FlushInterval) writes, in one Redis pipeline, the
// regions that changed and were last written at least MinWriteInterval ago.
// The offset committed for a partition is the lowest offset whose effect
// is not yet in Redis (a region changed but not yet written holds it back),
// and a commit is sent only after the write succeeded. While Redis is down
// the consumer keeps reading into memory, commits nothing, and retries with
// backoff; it catches up by itself when Redis answers. A crash therefore
// re-reads, never skips.
//
// # Restarts and rebalances
//
// The windows live in memory. When a generation starts without usable
// state (process start, rebalance onto other partitions, a position the
// group moved past), each assigned partition is re-read from the offset of
// Options.Rebuild ago (Kafka record time, ListOffsets by timestamp) or from
// the committed offset if that is older, so the 15-minute windows are
// complete again; nothing is written until every partition is back at its
// committed offset, and the re-read messages below it are not counted in
// the metrics again. Redis only holds snapshots of the windows, so a
// rebuild cannot double count. The cost is a re-read of Rebuild worth of
// traffic per rebuild. With Rebuild < 0 the consumer starts at the committed
// offsets and the windows before the last commit are lost (they fill up again
// over 15 minutes). When a generation keeps exactly the partitions of the
// previous one and the group has not moved past this consumer's positions
// (a broker restart), the state is kept and reading resumes where it was.
//
// The group membership, the generations, the per-partition readers and
// the co-partitioning check are package consumer's (shared with the
// ClickHouse sink): the consumer chooses where each partition starts (the
// rebuild), keeps per-partition positions and lag, and commits once per
// flush for all partitions. The readers decode in parallel and hand the
// events to one goroutine that owns all the state, so the windows need no
// locks.
//
// With several consumer instances, a region's events of the three topics
// must reach the same instance: the topics need the same partition count
// (the producer's Murmur2 key hash then puts a region on the same partition
// number; package consumer refuses topics that differ) and the range
// balancer (the default) assigns equal partition numbers together.
package streaming

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/surgeworks/surge/consumer"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/redisconn"
	"github.com/surgeworks/surge/retry"
)

// SeasonalityLookup gives a region's hour-of-week demand index at a time
// (1 = average); analytics.HistoricalAverages implements it.
type SeasonalityLookup interface {
	Index(regionID string, at time.Time) (float64, bool)
}

// SeasonalityFunc adapts a function to SeasonalityLookup.
type SeasonalityFunc func(regionID string, at time.Time) (float64, bool)

// Index calls f.
func (f SeasonalityFunc) Index(regionID string, at time.Time) (float64, bool) { return f(regionID, at) }

// Options configures a Consumer. Zero values take the defaults.
type Options struct {
	// GroupID is the consumer group. Default "features".
	GroupID string
	// Topics are the event topics read. Default ingest.EventTopics.
	Topics []string
	// Grace is how far behind the newest event time of its region and
	// topic an event may be and still count in the live features.
	// Default 30 s.
	Grace time.Duration
	// MinWriteInterval is the shortest time between two feature writes of
	// one region. Default 1 s.
	MinWriteInterval time.Duration
	// FlushInterval is the period of the flush loop: a region's change
	// reaches Redis within MinWriteInterval + FlushInterval (plus the
	// write). Default 200 ms.
	FlushInterval time.Duration
	// Rebuild is how far back (Kafka record time) a generation without
	// usable state re-reads its partitions to rebuild the windows.
	// Default 17 minutes (15 closed minutes, the one under way, grace and
	// margin); at most 24 minutes; negative: no rebuild (start at the
	// committed offsets; a new group starts at the end).
	Rebuild time.Duration
	// MaxFutureSkew drops events whose time is more than this after their
	// Kafka record time (a broken client clock would otherwise push the
	// region's windows into the future). Default 5 minutes.
	MaxFutureSkew time.Duration
	// TTL of the features hash. Default features.DefaultTTL (120 s).
	TTL time.Duration
	// WriteTimeout bounds one pipelined Redis write and one commit.
	// Default 5 s.
	WriteTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed write or
	// commit (doubling). Defaults 250 ms and 5 s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// IdleRegion is how long a region without events keeps its state in
	// memory (its features expire from Redis after TTL anyway). Default
	// 1 hour.
	IdleRegion time.Duration
	// SessionTimeout of the group membership: a consumer killed without
	// leaving holds its partitions this long. Default 10 s.
	SessionTimeout time.Duration
	// Backfill, when set, seeds the long-memory features at start with the
	// history before the rebuild point (training.LoadHistory over
	// ClickHouse); without it (or when it fails) they fill from the events,
	// and forecasts fall back for the windows not yet covered.
	Backfill BackfillFunc
	// Dialer for Kafka connections. Default kafka.DefaultDialer.
	Dialer *kafka.Dialer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics (surge_stream_*); nil registers none.
	Registerer prometheus.Registerer
}

// Consumer is the streaming feature consumer. Create it with NewConsumer
// and run it with Run; Status may be called at any time.
type Consumer struct {
	brokers []string
	store   *features.Store
	rdb     redis.UniversalClient
	season  SeasonalityLookup
	opts    Options
	m       *metrics

	// Owned by the Run goroutine.
	counts    counts
	backoff   time.Duration
	retryAt   time.Time
	lagLabels map[[2]string]bool // label values of the lag gauge set last
	memories  map[string]*memory // long history per region, across generations

	mu     sync.Mutex
	status Status
}

type counts struct {
	processed, late, backfill, invalid, writeErrors uint64
	lastFlush, lastCommit                           time.Time
}

// NewConsumer returns a consumer of brokers writing features to rdb.
// seasonality may be nil (index 1); pass an untyped nil, not a nil pointer.
// Group returns the consumer group and the topics of a Consumer with these
// options.
func (o Options) Group() (id string, topics []string) {
	id, topics = cmp.Or(o.GroupID, "features"), o.Topics
	if len(topics) == 0 {
		topics = ingest.EventTopics
	}
	return id, topics
}

func NewConsumer(brokers []string, rdb redis.UniversalClient, seasonality SeasonalityLookup, opts Options) *Consumer {
	if opts.GroupID == "" {
		opts.GroupID = "features"
	}
	if len(opts.Topics) == 0 {
		opts.Topics = ingest.EventTopics
	}
	opts.Topics = slices.Clone(opts.Topics)
	if opts.Grace <= 0 {
		opts.Grace = 30 * time.Second
	}
	if opts.MinWriteInterval <= 0 {
		opts.MinWriteInterval = time.Second
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 200 * time.Millisecond
	}
	if opts.Rebuild == 0 {
		opts.Rebuild = 17 * time.Minute
	}
	opts.Rebuild = min(opts.Rebuild, maxRebuild)
	if opts.MaxFutureSkew <= 0 {
		opts.MaxFutureSkew = 5 * time.Minute
	}
	if opts.TTL <= 0 {
		opts.TTL = features.DefaultTTL
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 250 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	opts.MinBackoff = min(opts.MinBackoff, opts.MaxBackoff)
	if opts.IdleRegion <= 0 {
		opts.IdleRegion = time.Hour
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = 10 * time.Second
	}
	if opts.Dialer == nil {
		opts.Dialer = kafka.DefaultDialer
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Consumer{
		brokers:  slices.Clone(brokers),
		store:    features.NewStore(rdb, opts.TTL),
		rdb:      rdb,
		season:   seasonality,
		opts:     opts,
		m:        newMetrics(opts.Registerer),
		backoff:  opts.MinBackoff,
		status:   Status{GroupID: opts.GroupID},
		memories: map[string]*memory{},
	}
}

// Status returns a snapshot of the consumer's partitions and counters.
func (c *Consumer) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Partitions = slices.Clone(s.Partitions)
	return s
}

func (c *Consumer) setError(err error) {
	c.mu.Lock()
	c.status.LastError, c.status.LastErrorAt = err.Error(), time.Now()
	c.mu.Unlock()
}

// Run consumes until ctx ends. At the end it writes what changed, commits
// what the writes cover (within WriteTimeout) and leaves the group. It
// returns nil on a clean stop; Kafka and Redis failures are retried, not
// returned.
func (c *Consumer) Run(ctx context.Context) error {
	c.backfill(ctx)
	c.opts.Logger.Info("streaming: feature consumer started", "group", c.opts.GroupID, "topics", c.opts.Topics, "grace", c.opts.Grace, "rebuild", c.opts.Rebuild)
	var st *state
	err := consumer.Run(ctx, c.brokers, consumer.Options{
		GroupID:          c.opts.GroupID,
		Topics:           c.opts.Topics,
		SessionTimeout:   c.opts.SessionTimeout,
		JoinGroupBackoff: time.Second,
		CoPartitioned:    true,
		Dialer:           c.opts.Dialer,
		Logger:           c.opts.Logger,
		OnError:          c.setError,
	}, func(ctx context.Context, g *consumer.Generation) { st = c.runGeneration(ctx, g, st) })
	if err != nil {
		return fmt.Errorf("streaming: %w", err)
	}
	return nil
}

// part is one assigned topic partition.
type part struct {
	topic     string
	stream    int // index of topic in Options.Topics
	partition int
	committed int64 // group's committed offset, -1 none
	next      int64 // next offset to apply
	countFrom int64 // offsets below were counted by an earlier run: replay only
	rebuilt   bool  // next ≥ countFrom
	hwm       int64
	late      uint64

	processedC, lateC, backfillC interface{ Inc() }
}

// region is the state of one region: its window and its write bookkeeping.
type region struct {
	id string
	w  *window

	dirty     bool
	pend      []pendOffset // per partition: the first applied offset not yet in Redis
	pendSince int64        // oldest ReceivedAt (ms) of the live events not yet in Redis, 0 none
	lastWrite time.Time    // start of the last write attempt

	inJob    bool         // part of the write in flight
	jobPend  []pendOffset // the same, for the write in flight
	jobSince int64

	touched time.Time // wall time (flush-tick resolution) of the last event applied
}

type pendOffset struct {
	part   int
	offset int64
}

func addPend(ps []pendOffset, part int, offset int64) []pendOffset {
	for i := range ps {
		if ps[i].part == part {
			ps[i].offset = min(ps[i].offset, offset)
			return ps
		}
	}
	return append(ps, pendOffset{part, offset})
}

// state is everything that lives across the messages of a generation and,
// when the assignment does not change, across generations.
type state struct {
	parts      []*part
	regions    map[string]*region
	dirty      []*region
	rebuilding int // partitions with next < countFrom
	buf        []features.Minute
	now        time.Time // the last tick: a cheap clock for region.touched
	swept      time.Time // the last sweep of idle regions
}

func (st *state) region(id string, topics int) *region {
	r := st.regions[id]
	if r == nil {
		r = &region{id: id, w: newWindow(topics)}
		st.regions[id] = r
	}
	return r
}

// record is one message as the partition readers hand it over.
type record struct {
	part    int
	offset  int64
	hwm     int64
	ev      event
	invalid string // reason the message cannot be used, "" if usable
}

// job is one flush: feature writes and the commit they allow.
type job struct {
	gen      *consumer.Generation
	at       time.Time
	regions  []*region
	writes   []features.Online
	commit   map[string]map[int]int64
	parts    []*part // of the commit entries, parallel to commitTo
	commitTo []int64
}

type result struct {
	job       *job
	started   time.Time
	took      time.Duration
	writeErr  error
	commitErr error
}

// runGeneration consumes one generation and returns the state for the
// next one.
func (c *Consumer) runGeneration(ctx context.Context, gen *consumer.Generation, prev *state) *state {
	genDone := gen.Context().Done()
	parts := assigned(gen, c.opts.Topics)
	st := c.prepare(ctx, genDone, gen.ID, parts, prev)
	if st == nil {
		return nil // the generation or ctx ended before the offsets were known
	}
	c.updateStatus(st, time.Now())

	in := make(chan record, 4096)
	for i, p := range st.parts {
		start := p.next
		gen.Start(func(gctx context.Context) { c.read(gctx, i, p, start, in) })
	}

	tick := time.NewTicker(c.opts.FlushInterval)
	defer tick.Stop()
	results := make(chan result, 1)
	var inflight *job
	for {
		select {
		case rec := <-in:
			c.apply(st, rec)
		case now := <-tick.C:
			st.now = now
			c.sweep(st, now)
			if inflight == nil && !now.Before(c.retryAt) {
				if j := c.flush(st, gen, now, false); j != nil {
					inflight = j
					go func() { results <- c.execute(ctx, j) }()
				}
			}
			c.updateStatus(st, now)
		case res := <-results:
			c.complete(st, res)
			inflight = nil
			c.updateStatus(st, time.Now())
		case <-genDone:
			if inflight != nil {
				c.complete(st, <-results)
			}
			c.opts.Logger.Info("streaming: generation ended", "group", c.opts.GroupID, "generation", gen.ID)
			return st
		case <-ctx.Done():
			if inflight != nil {
				c.complete(st, <-results)
			}
			if j := c.flush(st, gen, time.Now(), true); j != nil {
				c.complete(st, c.execute(ctx, j))
			}
			c.updateStatus(st, time.Now())
			return st
		}
	}
}

// assigned is a generation's partitions, in topic, partition order.
func assigned(gen *consumer.Generation, topics []string) []*part {
	parts := make([]*part, len(gen.Partitions))
	for i, a := range gen.Partitions {
		parts[i] = &part{topic: a.Topic, stream: slices.Index(topics, a.Topic), partition: a.ID, committed: a.Committed}
	}
	return parts
}

// prepare decides where each partition starts: where the previous state
// left off when it is still valid, else a rebuild. It returns nil when
// the generation or ctx ended first.
func (c *Consumer) prepare(ctx context.Context, genDone <-chan struct{}, genID int32, parts []*part, prev *state) *state {
	if prev != nil && len(prev.parts) == len(parts) && prev.rebuilding == 0 {
		keep := true
		for i, p := range parts {
			q := prev.parts[i]
			if q.topic != p.topic || q.partition != p.partition || p.committed > q.next {
				keep = false
				break
			}
		}
		if keep {
			for i, p := range parts {
				q := prev.parts[i]
				q.committed = p.committed
				q.processedC, q.lateC, q.backfillC = c.partMetrics(q)
			}
			c.opts.Logger.Info("streaming: generation keeps its state", "group", c.opts.GroupID, "generation", genID, "partitions", len(parts))
			return prev
		}
	}

	st := &state{parts: parts, regions: map[string]*region{}, now: time.Now()}
	c.m.resets.Inc()
	if len(parts) == 0 {
		return st
	}
	firsts, ends, atRebuild, err := c.offsets(ctx, genDone, parts)
	if err != nil {
		return nil
	}
	for i, p := range parts {
		p.hwm = ends[i]
		switch {
		case p.committed >= 0 && c.opts.Rebuild < 0:
			p.next = p.committed
		case p.committed >= 0:
			p.next = min(p.committed, atRebuild[i])
		case c.opts.Rebuild < 0:
			p.next = ends[i] // a new group without rebuild starts at the end
		default:
			p.next = atRebuild[i]
		}
		p.countFrom = p.next
		if p.committed >= 0 {
			p.countFrom = min(p.committed, ends[i])
		}
		p.next = max(min(p.next, p.countFrom), firsts[i]) // records below the log start are gone
		p.countFrom = max(p.countFrom, p.next)
		p.rebuilt = p.next >= p.countFrom
		if !p.rebuilt {
			st.rebuilding++
		}
		p.processedC, p.lateC, p.backfillC = c.partMetrics(p)
	}
	c.opts.Logger.Info("streaming: generation starts", "group", c.opts.GroupID, "generation", genID,
		"partitions", len(parts), "rebuilding", st.rebuilding)
	return st
}

func (c *Consumer) partMetrics(p *part) (processed, late, backfill interface{ Inc() }) {
	return c.m.processed.WithLabelValues(p.topic), c.m.late.WithLabelValues(p.topic), c.m.backfill.WithLabelValues(p.topic)
}

// offsets returns each partition's log start and end offsets and the first
// offset at or after now − Rebuild (the end when there is none), retrying
// until it succeeds or the generation or ctx ends. Kafka answers one
// offset per partition per request, hence three requests.
func (c *Consumer) offsets(ctx context.Context, genDone <-chan struct{}, parts []*part) (firsts, ends, at []int64, err error) {
	// A transport of its own: the shared kafka.DefaultTransport keeps
	// pooled connections that fail once after a broker restart.
	tr := &kafka.Transport{Dial: c.opts.Dialer.DialFunc, ClientID: c.opts.Dialer.ClientID}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(c.brokers...), Timeout: c.opts.WriteTimeout, Transport: tr}
	list := func(of func(p *part) kafka.OffsetRequest) (*kafka.ListOffsetsResponse, error) {
		req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
		for _, p := range parts {
			req.Topics[p.topic] = append(req.Topics[p.topic], of(p))
		}
		return client.ListOffsets(ctx, req)
	}
	// Retried with backoff until it succeeds, ctx ends or the generation
	// does.
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-genDone:
			cancel()
		case <-gctx.Done():
		}
	}()
	err = retry.Forever[any](gctx, retry.Options{
		MinBackoff: c.opts.MinBackoff, MaxBackoff: c.opts.MaxBackoff,
		OnRetry: func(err error, delay time.Duration) {
			c.setError(fmt.Errorf("list offsets: %w", err))
			c.opts.Logger.Warn("streaming: listing offsets failed; retrying", "err", err, "backoff", delay)
		},
	}).Run(func() error {
		since := time.Now().Add(-c.opts.Rebuild)
		resFirst, err := list(func(p *part) kafka.OffsetRequest { return kafka.FirstOffsetOf(p.partition) })
		if err != nil {
			return err
		}
		resEnd, err := list(func(p *part) kafka.OffsetRequest { return kafka.LastOffsetOf(p.partition) })
		if err != nil {
			return err
		}
		var resAt *kafka.ListOffsetsResponse
		if c.opts.Rebuild > 0 {
			if resAt, err = list(func(p *part) kafka.OffsetRequest { return kafka.TimeOffsetOf(p.partition, since) }); err != nil {
				return err
			}
		}
		firsts, ends, at, err = offsetsFrom(parts, resFirst, resEnd, resAt)
		return err
	})
	switch {
	case err == nil:
		return firsts, ends, at, nil
	case ctx.Err() != nil:
		return nil, nil, nil, ctx.Err()
	default:
		return nil, nil, nil, kafka.ErrGenerationEnded
	}
}

func offsetsFrom(parts []*part, resFirst, resEnd, resAt *kafka.ListOffsetsResponse) (firsts, ends, at []int64, err error) {
	find := func(res *kafka.ListOffsetsResponse, p *part) (kafka.PartitionOffsets, error) {
		for _, po := range res.Topics[p.topic] {
			if po.Partition == p.partition {
				return po, po.Error
			}
		}
		return kafka.PartitionOffsets{}, errors.New("no offsets in the answer")
	}
	firsts, ends, at = make([]int64, len(parts)), make([]int64, len(parts)), make([]int64, len(parts))
	for i, p := range parts {
		first, err := find(resFirst, p)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s/%d: %w", p.topic, p.partition, err)
		}
		last, err := find(resEnd, p)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s/%d: %w", p.topic, p.partition, err)
		}
		firsts[i], ends[i], at[i] = max(first.FirstOffset, 0), last.LastOffset, last.LastOffset
		if resAt == nil {
			continue
		}
		po, err := find(resAt, p)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s/%d: %w", p.topic, p.partition, err)
		}
		for off := range po.Offsets {
			if off >= 0 { // -1: no record at or after the time
				at[i] = min(off, ends[i])
			}
		}
	}
	return firsts, ends, at, nil
}

// read fetches one partition from start and hands the decoded messages to
// the state goroutine until the generation ends.
func (c *Consumer) read(ctx context.Context, idx int, p *part, start int64, out chan<- record) {
	consumer.ReadPartition(ctx, consumer.ReaderOptions{
		Brokers: c.brokers, Dialer: c.opts.Dialer, MaxBytes: 8 << 20, MaxWait: 500 * time.Millisecond, QueueCapacity: 1024,
		MaxBackoff: time.Second, Logger: c.opts.Logger, OnError: c.setError,
	}, p.topic, p.partition, start, func(m kafka.Message) bool {
		rec := record{part: idx, offset: m.Offset, hwm: m.HighWaterMark}
		rec.ev, rec.invalid = decode(m, c.opts.MaxFutureSkew)
		select {
		case out <- rec:
			return true
		case <-ctx.Done():
			return false
		}
	})
}

func decode(m kafka.Message, maxFuture time.Duration) (event, string) {
	e, err := ingest.DecodeEvent(m.Value)
	if err != nil {
		return event{}, "decode"
	}
	ev := eventOf(&e)
	if ev.region == "" {
		ev.region = string(m.Key)
	}
	switch {
	case ev.region == "":
		return ev, "no_region"
	case e.Timestamp.IsZero():
		return ev, "no_timestamp"
	case !m.Time.IsZero() && e.Timestamp.After(m.Time.Add(maxFuture)):
		return ev, "future"
	}
	if ev.received == 0 && !m.Time.IsZero() {
		ev.received = m.Time.UnixMilli()
	}
	return ev, ""
}

// apply adds one message to the state.
func (c *Consumer) apply(st *state, rec record) {
	p := st.parts[rec.part]
	if rec.offset < p.next {
		return // already applied (a reader re-fetch)
	}
	p.next = rec.offset + 1
	p.hwm = max(p.hwm, rec.hwm)
	live := rec.offset >= p.countFrom
	if !p.rebuilt && p.next >= p.countFrom {
		p.rebuilt = true
		st.rebuilding--
		if st.rebuilding == 0 {
			c.opts.Logger.Info("streaming: windows rebuilt", "group", c.opts.GroupID, "regions", len(st.regions))
		}
	}
	if live {
		c.counts.processed++
		p.processedC.Inc()
	} else {
		c.m.replayed.Inc()
	}
	switch {
	case rec.invalid != "":
		if live {
			c.counts.invalid++
			c.m.invalid.WithLabelValues(rec.invalid).Inc()
		}
		return
	case rec.ev.backfill:
		if live {
			c.counts.backfill++
			p.backfillC.Inc()
		}
		return
	}
	r := st.region(rec.ev.region, len(c.opts.Topics))
	if r.w.mem == nil {
		r.w.mem = c.memoryOf(r.id)
	}
	r.w.mem.used = st.now
	switch r.w.apply(p.stream, &rec.ev, int64(c.opts.Grace)) {
	case late:
		if live {
			c.counts.late++
			p.late++
			p.lateC.Inc()
		}
	case applied:
		r.touched = st.now
		r.pend = addPend(r.pend, rec.part, rec.offset)
		if live && rec.ev.received > 0 && (r.pendSince == 0 || rec.ev.received < r.pendSince) {
			r.pendSince = rec.ev.received
		}
		if !r.dirty {
			r.dirty = true
			st.dirty = append(st.dirty, r)
		}
	}
}

// flush builds the next write: the dirty regions last written at least
// MinWriteInterval ago (all dirty regions when final), and the offsets
// those writes make safe to commit. nil when there is nothing to do.
func (c *Consumer) flush(st *state, gen *consumer.Generation, now time.Time, final bool) *job {
	if st.rebuilding > 0 {
		return nil
	}
	j := &job{gen: gen, at: now}
	keep := st.dirty[:0]
	for _, r := range st.dirty {
		if !final && now.Sub(r.lastWrite) < c.opts.MinWriteInterval {
			keep = append(keep, r)
			continue
		}
		season := 1.0
		if c.season != nil {
			if s, ok := c.season.Index(r.id, r.w.windowEnd()); ok {
				season = s
			}
		}
		var online features.Online
		online, st.buf = r.w.features(season, st.buf)
		j.regions = append(j.regions, r)
		j.writes = append(j.writes, online)
		r.jobPend, r.pend = append(r.jobPend[:0], r.pend...), r.pend[:0]
		r.jobSince, r.pendSince = r.pendSince, 0
		r.dirty, r.inJob = false, true
	}
	clear(st.dirty[len(keep):])
	st.dirty = keep

	// A partition may be committed up to the first offset whose effect is
	// not in Redis yet: held back by the regions still dirty. The regions
	// of this job are covered once it succeeds.
	safe := make([]int64, len(st.parts))
	for i, p := range st.parts {
		safe[i] = p.next
	}
	for _, r := range st.dirty {
		for _, po := range r.pend {
			safe[po.part] = min(safe[po.part], po.offset)
		}
	}
	for i, p := range st.parts {
		if safe[i] > p.committed {
			if j.commit == nil {
				j.commit = map[string]map[int]int64{}
			}
			if j.commit[p.topic] == nil {
				j.commit[p.topic] = map[int]int64{}
			}
			j.commit[p.topic][p.partition] = safe[i]
			j.parts = append(j.parts, p)
			j.commitTo = append(j.commitTo, safe[i])
		}
	}
	if len(j.writes) == 0 && len(j.commit) == 0 {
		return nil
	}
	return j
}

// execute runs a job: the pipelined writes, then the commit if they
// succeeded. It runs outside the state goroutine and touches only the job.
func (c *Consumer) execute(ctx context.Context, j *job) result {
	ctx = context.WithoutCancel(ctx) // a write under way completes at shutdown
	res := result{job: j, started: time.Now()}
	if len(j.writes) > 0 {
		wctx, cancel := context.WithTimeout(ctx, c.opts.WriteTimeout)
		res.writeErr = c.write(wctx, j)
		cancel()
		res.took = time.Since(res.started)
	}
	if res.writeErr == nil && len(j.commit) > 0 {
		res.commitErr = j.gen.Commit(j.commit)
	}
	return res
}

// maxConcurrentSlots bounds the transactions of one job that run at once
// on a Redis Cluster.
const maxConcurrentSlots = 16

// write runs a job's feature writes, each region's in MULTI/EXEC: one
// transaction for every region on a single server, one per hash slot on a
// Redis Cluster (which refuses a transaction across slots), up to
// maxConcurrentSlots of them at once. It returns the first error.
func (c *Consumer) write(ctx context.Context, j *job) error {
	bySlot := redisconn.Group(len(j.regions), func(i int) string { return features.Key(j.regions[i].id) },
		len(j.regions), redisconn.Cluster(c.rdb))
	tx := func(idx []int) error {
		p := c.rdb.TxPipeline()
		for _, i := range idx {
			c.store.QueueWrite(ctx, p, j.regions[i].id, j.writes[i], j.at)
		}
		_, err := p.Exec(ctx)
		return err
	}
	if len(bySlot) == 1 { // a single server
		return tx(bySlot[0])
	}
	var g errgroup.Group
	g.SetLimit(maxConcurrentSlots)
	for _, idx := range bySlot {
		g.Go(func() error { return tx(idx) })
	}
	return g.Wait()
}

// complete applies a job's outcome to the state.
func (c *Consumer) complete(st *state, res result) {
	now := time.Now()
	j := res.job
	for _, r := range j.regions {
		r.lastWrite = res.started
		if res.writeErr != nil {
			for _, po := range r.jobPend {
				r.pend = addPend(r.pend, po.part, po.offset)
			}
			if r.jobSince > 0 && (r.pendSince == 0 || r.jobSince < r.pendSince) {
				r.pendSince = r.jobSince
			}
			if !r.dirty {
				r.dirty = true
				st.dirty = append(st.dirty, r)
			}
		} else if r.jobSince > 0 {
			c.m.freshness.Observe(now.Sub(time.UnixMilli(r.jobSince)).Seconds())
		}
		r.jobPend, r.jobSince, r.inJob = r.jobPend[:0], 0, false
	}
	failed := false
	if len(j.writes) > 0 {
		if res.writeErr != nil {
			failed = true
			c.counts.writeErrors++
			c.m.writeErrors.Inc()
			err := fmt.Errorf("write features of %d regions: %w", len(j.writes), res.writeErr)
			c.setError(err)
			c.opts.Logger.Warn("streaming: feature write failed; offsets stay uncommitted", "err", res.writeErr, "retry_in", c.backoff)
		} else {
			c.counts.lastFlush = now
			c.m.writes.Add(float64(len(j.writes)))
			c.m.flush.Observe(res.took.Seconds())
		}
	}
	if res.writeErr == nil && len(j.commit) > 0 {
		if res.commitErr != nil {
			failed = true
			c.m.commits.WithLabelValues("error").Inc()
			c.setError(fmt.Errorf("commit offsets: %w", res.commitErr))
			c.opts.Logger.Warn("streaming: offset commit failed", "err", res.commitErr, "retry_in", c.backoff)
		} else {
			c.m.commits.WithLabelValues("ok").Inc()
			c.counts.lastCommit = now
			for i, p := range j.parts {
				p.committed = max(p.committed, j.commitTo[i])
			}
		}
	}
	if failed {
		c.retryAt = now.Add(c.backoff)
		c.backoff = min(2*c.backoff, c.opts.MaxBackoff)
	} else {
		c.retryAt = time.Time{}
		c.backoff = c.opts.MinBackoff
	}
}

// sweep drops, once a minute, the state of regions without events for
// IdleRegion (new regions rebuild it from their next events).
func (c *Consumer) sweep(st *state, now time.Time) {
	if now.Sub(st.swept) < time.Minute {
		return
	}
	st.swept = now
	for id, r := range st.regions {
		if !r.dirty && !r.inJob && now.Sub(r.touched) > c.opts.IdleRegion {
			delete(st.regions, id)
		}
	}
	for id, m := range c.memories {
		if _, live := st.regions[id]; !live && now.Sub(m.used) > features.MemoryMinutes*time.Minute {
			delete(c.memories, id)
		}
	}
}

// updateStatus publishes the state's positions and the counters.
func (c *Consumer) updateStatus(st *state, now time.Time) {
	ps := make([]PartitionStatus, len(st.parts))
	for i, p := range st.parts {
		lag := p.hwm - p.next
		if p.committed >= 0 {
			lag = p.hwm - p.committed
		}
		lag = max(lag, 0)
		ps[i] = PartitionStatus{Topic: p.topic, Partition: p.partition, Committed: p.committed,
			Position: p.next, HighWatermark: p.hwm, Lag: lag, LateEvents: p.late}
	}
	labels := make(map[[2]string]bool, len(ps))
	for _, p := range ps {
		l := [2]string{p.Topic, partitionLabel(p.Partition)}
		labels[l] = true
		c.m.lag.WithLabelValues(l[0], l[1]).Set(float64(p.Lag))
	}
	for l := range c.lagLabels {
		if !labels[l] {
			c.m.lag.DeleteLabelValues(l[0], l[1]) // no longer assigned here
		}
	}
	c.lagLabels = labels
	c.m.regions.Set(float64(len(st.regions)))
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.status
	s.Partitions, s.Regions, s.Rebuilding = ps, len(st.regions), st.rebuilding > 0
	s.EventsProcessed, s.LateEvents, s.BackfillSkipped = c.counts.processed, c.counts.late, c.counts.backfill
	s.InvalidEvents, s.RedisWriteErrors = c.counts.invalid, c.counts.writeErrors
	s.LastFlush, s.LastCommit = c.counts.lastFlush, c.counts.lastCommit
}
