package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/server"
	"github.com/surgeworks/surge/sink"
	"github.com/surgeworks/surge/streaming"
	"github.com/surgeworks/surge/training"
)

func newConsumeCmd() *cobra.Command {
	var cfg config
	cmd := &cobra.Command{
		Use:   "consume",
		Short: "Run the stream consumers (features into Redis, events and audit records into ClickHouse) as a process of their own",
		Long: `consume runs, as a process of its own, the two consumer groups that serve
runs in-process by default: the features stream (events from Kafka into the live features in
Redis) and the ClickHouse sink (events, audit records and experiment
exposures, exactly once per Kafka offset). Run the API with
--consumers=false (RUN_CONSUMERS=false) and as many consume processes as the
topics have partitions; Kafka's group protocol spreads the partitions over
them and moves a dead one's partitions to the others. It serves /health,
/ready and /metrics on --listen until SIGINT or SIGTERM, then commits what it
has processed and stops.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			if err := setMemoryLimit(logger); err != nil {
				return err
			}
			c, err := newConsumers(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			return c.run(cmd.Context())
		},
	}
	cfg.addConnFlags(cmd.Flags())
	cmd.Flags().StringVar(&cfg.ListenAddr, "listen", "127.0.0.1:8001", help("address of /health, /ready and /metrics", "LISTEN_ADDR"))
	return cmd
}

// consumers is the consume process: the features stream and the sink with
// what they need.
type consumers struct {
	logger   *slog.Logger
	ch       driver.Conn
	bulk     redis.UniversalClient
	averages *analytics.HistoricalAverages
	stream   *streaming.Consumer
	sink     *sink.Sink
	ops      *server.Aux
}

func newConsumers(ctx context.Context, cfg config, logger *slog.Logger) (c *consumers, err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c = &consumers{logger: logger}
	topics, err := cfg.topicSpecs()
	if err != nil {
		return nil, err
	}
	if c.ch, err = openClickHouse(ctx, cfg, logger); err != nil {
		return nil, err
	}
	c.bulk = ingest.NewIntakeRedis(splitList(cfg.RedisAddr), cfg.RedisCluster, 2*time.Second)
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if err := c.bulk.Ping(ctx).Err(); err != nil {
		logger.Warn("Redis not reachable at start; features wait until it is", "addr", cfg.RedisAddr, "err", err)
	}
	if err := ingest.LogTopicMismatch(logger, ingest.EnsureTopics(ctx, cfg.brokers(), topics)); err != nil {
		return nil, fmt.Errorf("kafka topics: %w", err)
	}
	if c.averages, err = analytics.NewHistoricalAverages(analytics.NewHistory(c.ch, analytics.HistoryOptions{}), analytics.AveragesOptions{Logger: logger, Registerer: reg}); err != nil {
		return nil, err
	}
	if err := c.averages.Refresh(ctx); err != nil {
		logger.Warn("historical averages not loaded at start", "err", err)
	}
	c.stream = streaming.NewConsumer(cfg.brokers(), c.bulk, c.averages, streaming.Options{
		Backfill: training.Backfill(c.ch), Logger: logger, Registerer: reg,
	})
	if c.sink, err = sink.New(cfg.brokers(), c.ch, cfg.ClickHouseDatabase, sink.Options{Logger: logger, Registerer: reg}); err != nil {
		return nil, err
	}
	if c.ops, err = server.Ops(cfg.ListenAddr, reg, map[string]server.Check{
		"redis":      func(ctx context.Context) error { return c.bulk.Ping(ctx).Err() },
		"clickhouse": func(ctx context.Context) error { return c.ch.Ping(ctx) },
	}, logger); err != nil {
		return nil, err
	}
	logger.Info("consuming", "brokers", cfg.brokers(), "listen", c.ops.Addr())
	return c, nil
}

// run consumes until ctx ends or a component fails; the operational
// endpoints stop first, then the averages refresh, then the consumers
// commit what they processed, and the clients are closed last.
func (c *consumers) run(ctx context.Context) error {
	err := runInOrder(ctx, []runner{c.ops}, []runner{c.averages}, []runner{c.stream, c.sink})
	c.close()
	c.logger.Info("stopped")
	return err
}

func (c *consumers) close() {
	c.bulk.Close()
	c.ch.Close()
}
