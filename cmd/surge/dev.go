package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/rules"
	"github.com/surgeworks/surge/simulate"
	"github.com/surgeworks/surge/training"
)

func newDevCmd() *cobra.Command {
	var (
		cfg          config
		dataDir      string
		demoFeatures bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole system locally (what `make run` starts)",
		Long: `dev starts Redis and ClickHouse as child processes and the embedded Kafka broker,
with their data under --data-dir (each is skipped when REDIS_ADDR, CLICKHOUSE_ADDR or
KAFKA_BROKERS points at an existing server), applies the migrations, trains and registers
a bootstrap model on a generated history the first time, seeds the demo pricing rules,
creates the admin API key, and serves the API in the foreground. SIGINT or SIGTERM
stops the service and every child process.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("log-format") {
				cfg.LogFormat = "text"
			}
			if !cmd.Flags().Changed("model-dir") {
				cfg.ModelDir = filepath.Join(dataDir, "models")
			}
			if !cmd.Flags().Changed("audit-spool-dir") {
				cfg.AuditSpoolDir = filepath.Join(dataDir, "audit-spool")
			}
			if !cmd.Flags().Changed("experiment-day") {
				// The local demo: an experiment's week passes in 7 minutes.
				cfg.ExperimentDay = time.Minute
			}
			if !cmd.Flags().Changed("experiment-results-interval") {
				cfg.ExperimentResults = 10 * time.Second
			}
			// The local demo on loopback: apps and analysts need no key,
			// the schema is browsable.
			if !cmd.Flags().Changed("open-roles") {
				cfg.OpenRoles = "client,analyst"
			}
			if !cmd.Flags().Changed("anonymous-rate-limit") {
				cfg.RateAnonymous = cfg.RatePerClient
			}
			if !cmd.Flags().Changed("introspection") {
				cfg.Introspection = true
			}
			if !cmd.Flags().Changed("playground") {
				cfg.Playground = true
			}
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			if err := setMemoryLimit(logger); err != nil {
				return err
			}
			own := ownServers{
				redis:      !cmd.Flags().Changed("redis-addr"),
				clickhouse: !cmd.Flags().Changed("clickhouse-addr"),
				kafka:      !cmd.Flags().Changed("kafka-brokers"),
			}
			return runDev(cmd.Context(), cfg, dataDir, demoFeatures, own, logger)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "data", help("where the local servers, models and admin key keep their data", "DATA_DIR"))
	cmd.Flags().BoolVar(&demoFeatures, "demo-features", true, help("keep demo online features fresh for the demo regions (until real events flow)", "DEMO_FEATURES"))
	cfg.addConnFlags(cmd.Flags())
	cfg.addServeFlags(cmd.Flags())
	return cmd
}

// preferAddr returns addr when its port is free, else a free loopback port,
// so that a second run normally gets the same ports.
func preferAddr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "127.0.0.1:0"
	}
	ln.Close()
	return addr
}

// ownServers says which servers dev starts itself: those whose address was
// not given (flag or environment).
type ownServers struct{ redis, clickhouse, kafka bool }

func runDev(ctx context.Context, cfg config, dataDir string, demoFeatures bool, own ownServers, logger *slog.Logger) error {
	start := time.Now()
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	if own.redis {
		p, err := devenv.StartRedis(ctx, devenv.RedisOptions{
			Dir: filepath.Join(dataDir, "redis"), Addr: preferAddr("127.0.0.1:16379"), Persist: true, Logger: logger,
		})
		if err != nil {
			return fmt.Errorf("start Redis: %w", err)
		}
		defer p.Stop()
		cfg.RedisAddr = p.Addr
		logger.Info("Redis started", "addr", p.Addr, "dir", filepath.Join(dataDir, "redis"))
	}
	if own.clickhouse {
		p, err := devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{
			Dir: filepath.Join(dataDir, "clickhouse"), TCPAddr: preferAddr("127.0.0.1:19000"), HTTPAddr: preferAddr("127.0.0.1:18123"), Logger: logger,
		})
		if err != nil {
			return fmt.Errorf("start ClickHouse: %w", err)
		}
		defer p.Stop()
		cfg.ClickHouseAddr = p.Addr
		logger.Info("ClickHouse started", "addr", p.Addr, "dir", filepath.Join(dataDir, "clickhouse"))
	}
	if own.kafka {
		k, err := devenv.StartKafka(ctx, devenv.KafkaOptions{
			Dir: filepath.Join(dataDir, "kafka"), Addr: preferAddr("127.0.0.1:19092"), Partitions: cfg.KafkaPartitions, Logger: logger,
		})
		if err != nil {
			return fmt.Errorf("start the embedded Kafka broker: %w", err)
		}
		defer k.Stop()
		if err := ensureTopics(ctx, cfg, k.Brokers, logger); err != nil {
			return err
		}
		cfg.KafkaBrokers = k.Brokers[0]
		logger.Info("embedded Kafka broker started", "brokers", k.Brokers, "dir", filepath.Join(dataDir, "kafka"))
	}

	ch, err := openClickHouse(ctx, cfg, logger)
	if err != nil {
		return err
	}
	seeded, err := rules.SeedDefaults(ctx, rules.NewStore(ch))
	if err != nil {
		ch.Close()
		return fmt.Errorf("seed pricing rules: %w", err)
	}
	if len(seeded) > 0 {
		logger.Info("default pricing rules seeded", "rules", len(seeded))
	}
	artifacts, err := registry.OpenStore(ctx, cfg.ModelStoreURL, cfg.ModelDir)
	if err != nil {
		ch.Close()
		return err
	}
	reg := registry.New(ch, artifacts)
	if _, err := reg.Active(ctx, cfg.ModelName); errors.Is(err, registry.ErrNotFound) {
		logger.Info("no model registered yet: training a bootstrap model on a generated history")
		e, _, err := training.RegisterBootstrap(ctx, ch, reg, training.BootstrapJob{Name: cfg.ModelName, Days: 14, Status: registry.StatusActive, LoadHistory: true}, logger)
		if err != nil {
			ch.Close()
			return fmt.Errorf("bootstrap model: %w", err)
		}
		logger.Info("bootstrap model registered", "name", e.Name, "version", e.Version, "metrics", e.Metrics)
	} else if err != nil {
		ch.Close()
		return fmt.Errorf("find the active model: %w", err)
	}
	ch.Close()

	if err := cfg.readSecretFiles(); err != nil {
		return err
	}
	// The demo's keys live in the data directory, created the first time.
	for _, k := range []struct {
		file, what string
		set        bool
		use        func(string)
	}{
		{"admin-api-key", "admin API key (X-Api-Key or X-Admin-Key)", cfg.AdminKey != "", func(v string) { cfg.AdminKey = v }},
		{"ingest-api-key", "ingest API key, every event type (X-Api-Key; surge replay and simulate read it)", len(cfg.IngestAPIKeys) > 0, func(v string) { cfg.IngestAPIKeys = []string{v} }},
		{"user-hash-key", "user id hash key", len(cfg.UserHashKey) > 0, func(v string) { cfg.UserHashKey = []byte(v) }},
	} {
		if k.set {
			continue
		}
		path := filepath.Join(dataDir, k.file)
		v, created, err := auth.LoadOrCreateKey(path)
		if err != nil {
			return err
		}
		k.use(v)
		if k.file != "user-hash-key" {
			logger.Info(k.what, "file", path, "created", created)
		}
	}

	a, err := newApp(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if demoFeatures {
		go simulate.DemoFeatures(ctx, features.NewStore(a.rdb, 0), a.rules.Regions, logger)
	}
	logger.Info("ready: open the playground", "url", "http://"+a.server.Addr()+"/playground",
		"graphql", "http://"+a.server.Addr()+"/graphql", "startup", time.Since(start).Round(time.Millisecond))
	return a.run(ctx)
}
