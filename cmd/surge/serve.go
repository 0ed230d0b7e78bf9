package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/bookings"
	"github.com/surgeworks/surge/consumer"
	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/live"
	"github.com/surgeworks/surge/migrations"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/monitoring"
	"github.com/surgeworks/surge/publish"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/ratelimit"
	"github.com/surgeworks/surge/redisconn"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/resolvers"
	"github.com/surgeworks/surge/retrain"
	"github.com/surgeworks/surge/rollout"
	"github.com/surgeworks/surge/rules"
	"github.com/surgeworks/surge/schedule"
	"github.com/surgeworks/surge/server"
	"github.com/surgeworks/surge/sink"
	"github.com/surgeworks/surge/spool"
	"github.com/surgeworks/surge/streaming"
	"github.com/surgeworks/surge/training"
)

func newServeCmd() *cobra.Command {
	var cfg config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the GraphQL pricing API against existing Redis, ClickHouse and Kafka",
		Long: `serve connects to Redis, ClickHouse and Kafka, applies the ClickHouse migrations,
loads the active model from the registry and serves /graphql, /playground, /health,
/ready and /metrics until SIGINT or SIGTERM.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			if err := setMemoryLimit(logger); err != nil {
				return err
			}
			if err := cfg.readSecretFiles(); err != nil {
				return err
			}
			a, err := newApp(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			return a.run(cmd.Context())
		},
	}
	cfg.addConnFlags(cmd.Flags())
	cfg.addServeFlags(cmd.Flags())
	return cmd
}

// app is the serving process: its components and their lifecycles.
type app struct {
	logger      *slog.Logger
	brokers     []string
	rdb         redis.UniversalClient // the price path's: millisecond timeouts
	bulk        redis.UniversalClient // the intake's and the consumers': pipelines of up to 1,000 commands
	ch          driver.Conn
	rules       *rules.Cache
	averages    *analytics.HistoricalAverages
	forecaster  *inference.Forecaster
	watcher     *inference.Watcher
	rollouts    *rollout.Controller
	accuracy    *monitoring.Accuracy
	quotes      *quotes.Service
	live        *live.Hub
	experiments *experiments.Service
	publisher   *publish.Publisher
	keys        *auth.Keys
	events      *ingest.EventWriter
	intake      *ingest.Intake
	stream      *streaming.Consumer // nil unless cfg.Consumers
	sink        *sink.Sink          // nil unless cfg.Consumers
	retrain     *schedule.Scheduler // nil unless cfg.RetrainSchedule
	server      *server.Server
	pprof       *server.Aux // nil unless cfg.PprofAddr
}

// openClickHouse connects and applies the migrations.
func openClickHouse(ctx context.Context, cfg config, logger *slog.Logger) (driver.Conn, error) {
	if c := cfg.ClickHouseCluster; c != "" && !analytics.ValidIdentifier(c) {
		return nil, fmt.Errorf("--clickhouse-cluster %q: want a cluster name of letters, digits and _", c)
	}
	ch, err := analytics.Open(ctx, analytics.Options{
		Addr: cfg.ClickHouseAddr, Database: cfg.ClickHouseDatabase,
		Username: cfg.ClickHouseUser, Password: cfg.ClickHousePassword,
		Cluster: cfg.ClickHouseCluster != "",
	})
	if err != nil {
		return nil, fmt.Errorf("connect to ClickHouse at %s: %w", cfg.ClickHouseAddr, err)
	}
	applied, err := migrations.ApplyWith(ctx, ch, cfg.ClickHouseDatabase, migrations.Options{Cluster: cfg.ClickHouseCluster})
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	if len(applied) > 0 {
		logger.Info("migrations applied", "migrations", applied)
	}
	return ch, nil
}

func newRedis(cfg config) redis.UniversalClient {
	return redisconn.New(redis.UniversalOptions{
		Addrs:         splitList(cfg.RedisAddr),
		IsClusterMode: cfg.RedisCluster,
		DialTimeout:   200 * time.Millisecond,
		ReadTimeout:   100 * time.Millisecond,
		WriteTimeout:  100 * time.Millisecond,
		PoolSize:      64,
		MinIdleConns:  4,
		MaxRetries:    1,
	})
}

func newApp(ctx context.Context, cfg config, logger *slog.Logger) (*app, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rt, err := inference.ParseRuntime(cfg.ModelRuntime)
	if err != nil {
		return nil, err
	}
	a := &app{logger: logger, brokers: cfg.brokers()}
	topics, err := cfg.topicSpecs()
	if err != nil {
		return nil, err
	}
	if len(cfg.UserHashKey) < 16 {
		// Quotes, exposures and the intake of every replica must hash a
		// user alike, with a key that is not guessable.
		return nil, errors.New("USER_HASH_KEY (or --user-hash-key-file) must hold a key of at least 16 bytes: user ids are stored and logged only as its keyed hash, the same on every replica")
	}
	if a.ch, err = openClickHouse(ctx, cfg, logger); err != nil {
		return nil, err
	}
	a.rdb = newRedis(cfg)
	a.bulk = ingest.NewIntakeRedis(splitList(cfg.RedisAddr), cfg.RedisCluster, 2*time.Second)
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		logger.Warn("Redis not reachable at start; prices are served degraded until it is", "addr", cfg.RedisAddr, "err", err)
	}
	if err := ingest.LogTopicMismatch(logger, ingest.EnsureTopics(ctx, cfg.brokers(), topics)); err != nil {
		logger.Warn("Kafka topics not ensured; audit records wait in memory until Kafka answers", "err", err)
	}

	store := rules.NewStore(a.ch)
	if a.rules, err = rules.NewCache(store, rules.CacheOptions{Logger: logger, Registerer: reg}); err != nil {
		return nil, err
	}
	if err := a.rules.Refresh(ctx); err != nil {
		logger.Warn("pricing rules not loaded at start", "err", err)
	}
	history := analytics.NewHistory(a.ch, analytics.HistoryOptions{})
	if a.averages, err = analytics.NewHistoricalAverages(history, analytics.AveragesOptions{Logger: logger, Registerer: reg}); err != nil {
		return nil, err
	}
	if err := a.averages.Refresh(ctx); err != nil {
		logger.Warn("historical averages not loaded at start", "err", err)
	}
	a.forecaster = inference.NewForecaster(a.rdb, a.averages, inference.ForecasterOptions{
		Timeout: cfg.InferenceTimeout, Logger: logger, Registerer: reg,
	})
	artifacts, err := registry.OpenStore(ctx, cfg.ModelStoreURL, cfg.ModelDir)
	if err != nil {
		return nil, err
	}
	models := registry.New(a.ch, artifacts)
	a.watcher = inference.NewWatcher(models, a.forecaster, inference.WatcherOptions{
		Name: cfg.ModelName, Runtime: rt, Interval: cfg.ModelPoll, Logger: logger, Registerer: reg,
	})
	if err := a.watcher.Sync(ctx); err != nil {
		logger.Warn("no model served at start; forecasts fall back until one is registered", "err", err)
	}
	// Zero values (a config built in code) take the flags' defaults.
	cfg.RolloutPhase = cmp.Or(cfg.RolloutPhase, time.Hour)
	cfg.RolloutCheck = cmp.Or(cfg.RolloutCheck, 10*time.Second)
	cfg.RolloutMinServed = cmp.Or(cfg.RolloutMinServed, 100)
	cfg.RolloutMinScored = cmp.Or(cfg.RolloutMinScored, 50)
	phase := cfg.RolloutPhase
	if a.accuracy, err = monitoring.New(a.ch, monitoring.Options{Logger: logger, Registerer: reg}); err != nil {
		return nil, err
	}
	a.rollouts = rollout.New(models, a.forecaster, rollout.Options{
		Name: cfg.ModelName, Runtime: rt, Logger: logger, Registerer: reg,
		Phases:        []rollout.Phase{{Percent: 10, Duration: phase}, {Percent: 50, Duration: phase}, {Percent: 100, Duration: phase}},
		CheckInterval: cfg.RolloutCheck,
		Accuracy:      a.accuracy,
		Store:         rollout.NewRedisStore(a.rdb, cfg.ModelName), // every replica serves the same rollout
		MinSamples:    cfg.RolloutMinServed, MinAccuracySamples: cfg.RolloutMinScored, LatencySlack: cfg.RolloutSlack,
	})
	if cfg.RetrainSchedule != "" {
		job, err := cfg.retrainJob(a.ch, models, a.rollouts, logger)
		if err != nil {
			return nil, err
		}
		if a.retrain, err = schedule.New(schedule.Options{
			Spec: cfg.RetrainSchedule, Redis: a.rdb, Logger: logger, Registerer: reg,
			Train: job.Run,
		}); err != nil {
			return nil, err
		}
	}
	// The audit and exposure records wait in a spool on disk until Kafka
	// took them: neither an outage nor a crash of this process loses one.
	sp, err := spool.Open(cfg.AuditSpoolDir, spool.Options{})
	if err != nil {
		return nil, fmt.Errorf("audit spool: %w", err)
	}
	a.publisher = publish.New(cfg.brokers(), publish.Options{Spool: sp, Logger: logger, Registerer: reg})
	if a.experiments, err = experiments.New(a.ch, experiments.Options{
		DayLength: cfg.ExperimentDay, ResultsInterval: cfg.ExperimentResults, Publisher: a.publisher, Rules: a.rules, Logger: logger, Registerer: reg,
	}); err != nil {
		return nil, err
	}
	if err := a.experiments.Refresh(ctx); err != nil {
		logger.Warn("experiments not loaded at start", "err", err)
	}
	a.quotes = quotes.New(a.rules, a.rdb, a.forecaster, a.publisher, quotes.Options{
		HorizonMinutes: cfg.HorizonMinutes, Validity: cfg.QuoteValidity, Logger: logger, Registerer: reg,
		UserHashKey: cfg.UserHashKey, Experiments: a.experiments, Decisions: analytics.NewDecisions(a.ch),
	})
	a.events = ingest.NewEventWriter(cfg.brokers())
	guard, err := ingest.NewSupplyGuard(a.bulk, ingest.SupplyGuardOptions{MaxDrop: cfg.SupplyMaxDrop, Disabled: cfg.SupplyMaxDrop >= 1, Logger: logger, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("--supply-max-drop: %w", err)
	}
	if a.intake, err = ingest.NewIntake(a.bulk, a.events, ratelimit.NewLimiter(a.bulk, ratelimit.Options{Registerer: reg}), ingest.IntakeOptions{
		UserHashKey: cfg.UserHashKey, Logger: logger, Registerer: reg,
		DedupTTL: cfg.IngestDedupTTL, SupplyGuard: guard,
	}); err != nil {
		return nil, err
	}
	if cfg.Consumers {
		a.stream = streaming.NewConsumer(cfg.brokers(), a.bulk, a.averages, streaming.Options{
			Backfill: training.Backfill(a.ch), Logger: logger, Registerer: reg,
		})
		if a.sink, err = sink.New(cfg.brokers(), a.ch, cfg.ClickHouseDatabase, sink.Options{Logger: logger, Registerer: reg}); err != nil {
			return nil, err
		}
	}
	a.live = live.New(a.rdb, a.quotes, a.rules, live.Options{
		RepriceInterval: cfg.LiveReprice, MaxSubscriptions: cfg.LiveMaxSubs, MaxPerConnection: cfg.LiveMaxPerConn,
		Logger: logger, Registerer: reg,
	})
	books := bookings.New(a.quotes, a.rdb, a.intake, bookings.Options{})
	res := &resolvers.Resolver{
		Quotes: a.quotes, Rules: a.rules, RuleHistory: store, Intake: a.intake,
		Demand: history, FeatureStore: features.NewStore(a.rdb, 0), Ingestion: a.ingestionStatus,
		Rollouts: a.rollouts, Accuracy: a.accuracy, ExperimentService: a.experiments, Bookings: books,
		Live: a.live,
	}
	a.keys = auth.NewKeys(a.ch, a.rdb, cfg.ClickHouseDatabase, auth.KeysOptions{Logger: logger, Registerer: reg})
	if err := a.keys.Load(ctx); err != nil {
		return nil, err
	}
	authn, err := cfg.authenticator(a.keys)
	if err != nil {
		return nil, err
	}
	logger.Info("authentication", "open_roles", authn.Open().String(), "admin_key", cfg.AdminKey != "",
		"ingest_keys", len(cfg.IngestAPIKeys), "jwt", len(cfg.JWTSecret) > 0 || cfg.JWTJWKSFile != "")
	a.server = server.New(res, authn, a.readiness(), server.Options{
		Addr: cfg.ListenAddr, MetricsAddr: cfg.MetricsAddr, Logger: logger, Registry: reg,
		Limiter: ratelimit.NewLimiter(a.rdb, ratelimit.Options{}), RatePerClient: cfg.RatePerClient, RateBurst: int(2 * cfg.RatePerClient),
		AnonymousRate: cfg.RateAnonymous, AnonymousBurst: max(100, int(2*cfg.RateAnonymous)),
		DisableIntrospection: !cfg.Introspection, DisablePlayground: !cfg.Playground, WSPingInterval: cfg.WSPing,
	})
	a.server.Mount(ingest.EventsPath, auth.RoleIngest, a.intake.Handler())
	a.server.Mount(bookings.Path, auth.RoleClient, books.Handler(logger))
	if err := a.server.Listen(); err != nil {
		return nil, err
	}
	if cfg.PprofAddr != "" {
		if a.pprof, err = server.Pprof(cfg.PprofAddr, cfg.PprofAllowRemote, logger); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// ingestionStatus assembles ingestionStatus from the consumers this
// process runs or, when they run in `surge consume` processes, from the
// groups' offsets in Kafka.
func (a *app) ingestionStatus(ctx context.Context) (resolvers.IngestionStatus, error) {
	var out resolvers.IngestionStatus
	if a.stream == nil {
		for _, opts := range []interface{ Group() (string, []string) }{streaming.Options{}, sink.Options{}} {
			group, topics := opts.Group()
			lags, err := consumer.Lag(ctx, a.brokers, group, topics)
			if err != nil {
				return out, err
			}
			for _, l := range lags {
				out.Partitions = append(out.Partitions, resolvers.PartitionLag{Group: group, Topic: l.Topic, Partition: l.Partition,
					NextOffset: l.Committed, HighWatermark: l.HighWatermark, Lag: l.Lag})
			}
		}
		return out, nil
	}
	st := a.stream.Status()
	out.LateEvents, out.BackfillEvents = st.LateEvents, st.BackfillSkipped
	for _, p := range st.Partitions {
		next := p.Committed
		if next < 0 {
			next = p.Position
		}
		out.Partitions = append(out.Partitions, resolvers.PartitionLag{Group: st.GroupID, Topic: p.Topic, Partition: p.Partition,
			NextOffset: next, HighWatermark: p.HighWatermark, Lag: p.Lag})
	}
	sk := a.sink.Status()
	out.LastSinkError, out.LastSinkErrorAt, out.SinkRowsInserted = sk.LastError, sk.LastErrorAt, sk.RowsInserted
	for _, p := range sk.Partitions {
		out.Partitions = append(out.Partitions, resolvers.PartitionLag{Group: sk.Group, Topic: p.Topic, Partition: p.Partition,
			NextOffset: p.NextOffset, HighWatermark: p.HighWatermark, Lag: p.Lag})
	}
	return out, nil
}

// readiness lists what /ready checks.
func (a *app) readiness() map[string]server.Check {
	return map[string]server.Check{
		"redis":      func(ctx context.Context) error { return a.rdb.Ping(ctx).Err() },
		"clickhouse": func(ctx context.Context) error { return a.ch.Ping(ctx) },
		"model": func(context.Context) error {
			if a.forecaster.Model() == nil {
				return errors.New("no model loaded")
			}
			return nil
		},
		"rules": func(context.Context) error {
			if !a.rules.Loaded() {
				return errors.New("pricing rules not loaded")
			}
			return nil
		},
	}
}

// run runs every component until ctx ends or one fails, then stops them in
// order: the server stops accepting and drains its requests (and the live
// subscriptions), then the components behind the answers flush (the quote
// writes, the audit and exposure records to Kafka), then the consumers
// commit, and the clients are closed last.
func (a *app) run(ctx context.Context) error {
	serving := []runner{a.server, a.live}
	if a.pprof != nil {
		serving = append(serving, a.pprof)
	}
	behind := []runner{a.keys, a.rules, a.averages, a.forecaster, a.watcher, a.rollouts, a.accuracy, a.experiments, a.quotes, a.publisher}
	var consuming []runner
	if a.stream != nil {
		consuming = append(consuming, a.stream, a.sink)
	}
	if a.retrain != nil {
		behind = append(behind, a.retrain, &retrain.Eager{
			Generated: func() bool { return a.forecaster.Model().DataSource() != model.DataReal },
			RunOnce:   a.retrain.RunOnce, Logger: a.logger,
		})
	}
	err := runInOrder(ctx, serving, behind, consuming)
	if m := a.forecaster.SetModel(nil); m != nil {
		_ = m.Close()
	}
	_ = a.watcher.Close() // the versions kept in memory
	_ = a.events.Close()
	a.rdb.Close()
	a.bulk.Close()
	a.ch.Close()
	a.logger.Info("stopped")
	return err
}

// runner is a component with a lifecycle.
type runner interface{ Run(context.Context) error }

// runInOrder runs the components of every stage at once and stops them
// stage by stage: when ctx ends or a component fails, the first stage is
// cancelled, and each later stage once every component of the one before
// it has returned. It returns the first failure.
func runInOrder(ctx context.Context, stages ...[]runner) error {
	ctxs := make([]context.Context, len(stages))
	cancels := make([]context.CancelFunc, len(stages))
	ctxs[0], cancels[0] = context.WithCancel(ctx)
	for i := 1; i < len(stages); i++ {
		ctxs[i], cancels[i] = context.WithCancel(context.WithoutCancel(ctx))
	}
	var (
		mu    sync.Mutex
		first error
	)
	wgs := make([]sync.WaitGroup, len(stages))
	for i, stage := range stages {
		for _, c := range stage {
			wgs[i].Go(func() {
				if err := c.Run(ctxs[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancels[0]()
				}
			})
		}
	}
	for i := range stages {
		wgs[i].Wait()
		cancels[i]()
		if i+1 < len(stages) {
			cancels[i+1]()
		}
	}
	return first
}
