package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// config is everything the service reads at start: flags, with defaults from
// the environment variables named in their help.
type config struct {
	ListenAddr         string
	RedisAddr          string
	ClickHouseAddr     string
	ClickHouseDatabase string
	ClickHouseUser     string
	ClickHousePassword string
	KafkaBrokers       string
	KafkaPartitions    int
	ModelName          string
	ModelRuntime       string
	ModelDir           string
	ModelStoreURL      string
	ModelPoll          time.Duration
	AdminKeyFile       string
	InferenceTimeout   time.Duration
	QuoteValidity      time.Duration
	HorizonMinutes     int
	RatePerClient      float64
	Introspection      bool
	Playground         bool
	LiveReprice        time.Duration
	LiveMaxSubs        int
	LiveMaxPerConn     int
	WSPing             time.Duration
	PprofAddr          string
	Consumers          bool
	RetrainSchedule    string
	RetrainWindow      string // parseWindow syntax
	RetrainFrom        string // parseTime syntax; empty: RetrainWindow before RetrainTo
	RetrainTo          string // empty: now
	RetrainMinDays     float64
	RetrainRollout     bool
	Holidays           string // features.ParseCalendar syntax
	RolloutPhase       time.Duration
	RolloutCheck       time.Duration
	RolloutMinServed   int
	RolloutMinScored   int
	ExperimentDay      time.Duration
	ExperimentResults  time.Duration
	UserHashKey        []byte
	LogFormat          string
	LogLevel           string
}

// env returns the environment variable or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(env(name, "")); err == nil {
		return v
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(env(name, ""), 64); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(env(name, "")); err == nil {
		return v
	}
	return def
}

// help appends the environment variable to a flag's usage.
func help(usage, envName string) string { return usage + " (env " + envName + ")" }

// addConnFlags registers the addresses of the dependencies.
func (c *config) addConnFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.RedisAddr, "redis-addr", env("REDIS_ADDR", "127.0.0.1:6379"), help("Redis address; several comma-separated for a cluster", "REDIS_ADDR"))
	fs.StringVar(&c.ClickHouseAddr, "clickhouse-addr", env("CLICKHOUSE_ADDR", "127.0.0.1:9000"), help("ClickHouse native-protocol address", "CLICKHOUSE_ADDR"))
	fs.StringVar(&c.ClickHouseDatabase, "clickhouse-database", env("CLICKHOUSE_DATABASE", "surge"), help("ClickHouse database (created if missing)", "CLICKHOUSE_DATABASE"))
	fs.StringVar(&c.ClickHouseUser, "clickhouse-user", env("CLICKHOUSE_USER", "default"), help("ClickHouse user", "CLICKHOUSE_USER"))
	c.ClickHousePassword = env("CLICKHOUSE_PASSWORD", "") // a secret: environment only, never a flag
	fs.StringVar(&c.KafkaBrokers, "kafka-brokers", env("KAFKA_BROKERS", "127.0.0.1:9092"), help("Kafka bootstrap brokers, comma-separated", "KAFKA_BROKERS"))
	fs.IntVar(&c.KafkaPartitions, "kafka-partitions", envInt("KAFKA_PARTITIONS", 6), help("partitions of topics created at start", "KAFKA_PARTITIONS"))
	fs.StringVar(&c.ModelDir, "model-dir", env("MODEL_DIR", "data/models"), help("directory of the model artifact store", "MODEL_DIR"))
	fs.StringVar(&c.ModelStoreURL, "model-store", env("MODEL_STORE_URL", ""), help("S3-compatible model artifact store, s3://bucket[/prefix] (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; endpoint from MODEL_STORE_ENDPOINT); empty: the --model-dir directory", "MODEL_STORE_URL"))
	fs.StringVar(&c.LogFormat, "log-format", env("LOG_FORMAT", "json"), help("log format: json or text", "LOG_FORMAT"))
	fs.StringVar(&c.LogLevel, "log-level", env("LOG_LEVEL", "info"), help("log level: debug, info, warn, error", "LOG_LEVEL"))
}

// addServeFlags registers the settings of the serving path.
func (c *config) addServeFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ListenAddr, "listen", env("LISTEN_ADDR", "127.0.0.1:8000"), help("HTTP listen address", "LISTEN_ADDR"))
	fs.StringVar(&c.ModelName, "model-name", env("MODEL_NAME", "demand"), help("registered model to serve", "MODEL_NAME"))
	fs.StringVar(&c.ModelRuntime, "model-runtime", env("MODEL_RUNTIME", "onnxruntime"), help("model runtime: onnxruntime or go", "MODEL_RUNTIME"))
	fs.DurationVar(&c.ModelPoll, "model-poll", envDuration("MODEL_POLL_INTERVAL", 30*time.Second), help("how often the registry is checked for a new active model", "MODEL_POLL_INTERVAL"))
	fs.StringVar(&c.AdminKeyFile, "admin-key-file", env("ADMIN_API_KEY_FILE", ""), help("file holding the admin API key (ADMIN_API_KEY, when set, wins)", "ADMIN_API_KEY_FILE"))
	fs.DurationVar(&c.InferenceTimeout, "inference-timeout", envDuration("INFERENCE_TIMEOUT", 50*time.Millisecond), help("timeout of one model inference", "INFERENCE_TIMEOUT"))
	fs.DurationVar(&c.QuoteValidity, "quote-validity", envDuration("QUOTE_VALIDITY", 60*time.Second), help("how long a quote is valid and kept for factorBreakdown", "QUOTE_VALIDITY"))
	fs.IntVar(&c.HorizonMinutes, "price-horizon", envInt("PRICE_HORIZON_MINUTES", 15), help("forecast horizon, in minutes, that prices are based on", "PRICE_HORIZON_MINUTES"))
	fs.BoolVar(&c.Consumers, "consumers", env("RUN_CONSUMERS", "true") == "true", help("run the stream consumers (features into Redis, events into ClickHouse) in this process", "RUN_CONSUMERS"))
	fs.StringVar(&c.RetrainSchedule, "retrain-schedule", env("RETRAIN_SCHEDULE", "0 2 * * 0"), help("cron expression (UTC) of the weekly retrain; empty: no scheduled retrain", "RETRAIN_SCHEDULE"))
	fs.StringVar(&c.RetrainWindow, "retrain-window", env("RETRAIN_WINDOW", "28d"), help("history the scheduled retrain trains on, ending at --retrain-to or now (28d, 336h)", "RETRAIN_WINDOW"))
	fs.StringVar(&c.RetrainFrom, "retrain-from", env("RETRAIN_FROM", ""), help("fixed start of the retrain's history, RFC 3339 or a date; empty: --retrain-window before the end", "RETRAIN_FROM"))
	fs.StringVar(&c.RetrainTo, "retrain-to", env("RETRAIN_TO", ""), help("fixed end (exclusive) of the retrain's history; empty: now", "RETRAIN_TO"))
	fs.Float64Var(&c.RetrainMinDays, "retrain-min-days", envFloat("RETRAIN_MIN_REAL_DAYS", 14), help("days of real events the retrain needs before it trains (until then the bootstrap model serves)", "RETRAIN_MIN_REAL_DAYS"))
	fs.BoolVar(&c.RetrainRollout, "retrain-rollout", env("RETRAIN_ROLLOUT", "true") == "true", help("start the canary of a retrained model that passed the gate", "RETRAIN_ROLLOUT"))
	fs.StringVar(&c.Holidays, "holidays", env("HOLIDAYS", ""), help("holiday calendar of the retrained models, comma-separated dates YYYY-MM-DD", "HOLIDAYS"))
	fs.IntVar(&c.RolloutMinServed, "rollout-min-forecasts", envInt("ROLLOUT_MIN_FORECASTS", 100), help("forecasts the candidate must serve before a canary phase may end", "ROLLOUT_MIN_FORECASTS"))
	fs.IntVar(&c.RolloutMinScored, "rollout-min-scored", envInt("ROLLOUT_MIN_SCORED", 50), help("candidate forecasts scored on realised demand before a canary phase may end; negative: do not wait", "ROLLOUT_MIN_SCORED"))
	fs.DurationVar(&c.RolloutPhase, "rollout-phase", envDuration("ROLLOUT_PHASE_DURATION", time.Hour), help("length of each canary phase (10 %, 50 %, 100 %)", "ROLLOUT_PHASE_DURATION"))
	fs.DurationVar(&c.RolloutCheck, "rollout-check", envDuration("ROLLOUT_CHECK_INTERVAL", 10*time.Second), help("how often a canary is compared with the stable model", "ROLLOUT_CHECK_INTERVAL"))
	fs.StringVar(&c.PprofAddr, "pprof-addr", env("PPROF_ADDR", ""), help("serve net/http/pprof on this (loopback) address; empty: off", "PPROF_ADDR"))
	fs.DurationVar(&c.ExperimentDay, "experiment-day", envDuration("EXPERIMENT_DAY_LENGTH", 24*time.Hour), help("length of an experiment day given to new experiments (surge dev: 1m, so a week passes in minutes)", "EXPERIMENT_DAY_LENGTH"))
	fs.DurationVar(&c.ExperimentResults, "experiment-results-interval", envDuration("EXPERIMENT_RESULTS_INTERVAL", 5*time.Minute), help("age at which a running experiment's results snapshot is recomputed (surge dev: 10s)", "EXPERIMENT_RESULTS_INTERVAL"))
	fs.Float64Var(&c.RatePerClient, "rate-limit", envFloat("RATE_LIMIT_RPS", 5000), help("GraphQL requests per second allowed per client address", "RATE_LIMIT_RPS"))
	fs.BoolVar(&c.Introspection, "introspection", env("GRAPHQL_INTROSPECTION", "true") == "true", help("answer GraphQL introspection (schema docs and completion in tools); false refuses __schema and __type", "GRAPHQL_INTROSPECTION"))
	fs.BoolVar(&c.Playground, "playground", env("PLAYGROUND", "true") == "true", help("serve the GraphiQL playground at /playground", "PLAYGROUND"))
	fs.DurationVar(&c.LiveReprice, "live-reprice", envDuration("LIVE_REPRICE_INTERVAL", time.Second), help("how often the pairs watched by surgeUpdated subscribers are repriced, so their multipliers move without price requests; negative: never", "LIVE_REPRICE_INTERVAL"))
	fs.IntVar(&c.LiveMaxSubs, "live-max-subscriptions", envInt("LIVE_MAX_SUBSCRIPTIONS", 20000), help("live subscriptions allowed on this instance", "LIVE_MAX_SUBSCRIPTIONS"))
	fs.DurationVar(&c.WSPing, "ws-ping-interval", envDuration("WS_PING_INTERVAL", 10*time.Second), help("how often websocket clients are pinged; one that does not answer within twice the interval is disconnected", "WS_PING_INTERVAL"))
	fs.IntVar(&c.LiveMaxPerConn, "live-max-per-connection", envInt("LIVE_MAX_PER_CONNECTION", 50), help("live subscriptions allowed on one websocket connection", "LIVE_MAX_PER_CONNECTION"))
}

func (c *config) brokers() []string { return splitList(c.KafkaBrokers) }

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// logger builds the process logger.
func (c *config) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var l *slog.Logger
	switch c.LogFormat {
	case "json":
		l = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	case "text":
		l = slog.New(slog.NewTextHandler(os.Stderr, opts))
	default:
		return nil, fmt.Errorf("log format %q: want json or text", c.LogFormat)
	}
	slog.SetDefault(l) // packages that log through the default use the same handler
	return l, nil
}
