package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/spf13/pflag"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/ingest"
)

// config is everything the service reads at start: flags, with defaults from
// the environment variables named in their help.
type config struct {
	ListenAddr         string
	RedisAddr          string
	RedisCluster       bool // a cluster even behind one address
	ClickHouseAddr     string
	ClickHouseDatabase string
	ClickHouseUser     string
	ClickHouseCluster  string // empty: one server
	KafkaBrokers       string
	KafkaPartitions    int
	KafkaTopicConfig   string // ingest.ParseTopicConfig syntax
	// Secrets, from the environment only (readSecrets).
	ClickHousePassword string
	AdminKey           string
	UserHashKey        []byte
	IngestAPIKeys      []string
	JWTSecret          []byte
	UserHashKeyFile    string
	JWTSecretFile      string
	JWTJWKSFile        string
	JWTIssuer          string
	JWTAudience        string
	JWTLeeway          time.Duration
	OpenRoles          string // auth.ParseRoles syntax
	MetricsAddr        string
	PprofAllowRemote   bool
	SupplyMaxDrop      float64
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
	RateAnonymous      float64
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
	RolloutSlack       time.Duration
	ExperimentDay      time.Duration
	ExperimentResults  time.Duration
	IngestDedupTTL     time.Duration
	AuditSpoolDir      string
	LogFormat          string
	LogLevel           string
}

// envRE finds the environment variable named in a flag's usage (help).
var envRE = regexp.MustCompile(`\(env ([A-Z][A-Z0-9_]*)\)$`)

// applyEnv sets every flag of fs that was not given on the command line
// from the environment variable named in its help, parsing it as the flag
// would (the flag then counts as Changed): a value it cannot parse (KAFKA_PARTITIONS=abc, RUN_CONSUMERS=1 —
// booleans are true or false) stops the start with an error naming the
// variable, instead of falling back to the default. This is the one place
// that reads the environment for settings; secrets are read by
// readSecrets.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		m := envRE.FindStringSubmatch(f.Usage)
		if m == nil || f.Changed {
			return
		}
		v, ok := os.LookupEnv(m[1])
		if !ok || v == "" {
			return
		}
		if f.Value.Type() == "bool" && v != "true" && v != "false" {
			errs = append(errs, fmt.Errorf("environment variable %s=%q (flag --%s): want true or false", m[1], v, f.Name))
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s=%q (flag --%s): %w", m[1], v, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

// readSecrets reads the settings that are never flags (they would show in
// the process list): passwords and keys.
func (c *config) readSecrets() {
	c.ClickHousePassword = os.Getenv("CLICKHOUSE_PASSWORD")
	c.AdminKey = os.Getenv("ADMIN_API_KEY")
	c.UserHashKey = []byte(os.Getenv("USER_HASH_KEY"))
	c.IngestAPIKeys = splitList(os.Getenv("INGEST_API_KEYS"))
	c.JWTSecret = []byte(os.Getenv("JWT_HS256_SECRET"))
}

// readSecretFiles reads the secrets given as files (flags name the file,
// never the secret) that the environment did not set.
func (c *config) readSecretFiles() error {
	for _, f := range []struct {
		path string
		dst  func(string)
		set  bool
	}{
		{c.AdminKeyFile, func(v string) { c.AdminKey = v }, c.AdminKey != ""},
		{c.UserHashKeyFile, func(v string) { c.UserHashKey = []byte(v) }, len(c.UserHashKey) > 0},
		{c.JWTSecretFile, func(v string) { c.JWTSecret = []byte(v) }, len(c.JWTSecret) > 0},
	} {
		if f.path == "" || f.set {
			continue
		}
		v, err := auth.ReadKey(f.path)
		if err != nil {
			return err
		}
		f.dst(v)
	}
	return nil
}

// authenticator builds who-may-do-what from the configured credentials:
// the stored keys, the admin key (admin), the ingest keys (supply: every
// event type), JWTs, and the open roles.
func (c *config) authenticator(keys *auth.Keys) (*auth.Authenticator, error) {
	open, err := auth.ParseRoles(c.OpenRoles)
	if err != nil {
		return nil, fmt.Errorf("--open-roles: %w", err)
	}
	static := auth.Static{}
	if c.AdminKey != "" {
		static.Add(c.AdminKey, "admin", auth.RoleAdmin)
	}
	for i, k := range c.IngestAPIKeys {
		static.Add(k, fmt.Sprintf("ingest-key-%d", i+1), auth.RoleSupply)
	}
	verifiers := []auth.Verifier{static}
	if keys != nil {
		verifiers = append(verifiers, keys)
	}
	jwt, err := auth.NewJWT(auth.JWTOptions{HS256Secret: c.JWTSecret, JWKSFile: c.JWTJWKSFile, Issuer: c.JWTIssuer, Audience: c.JWTAudience, Leeway: c.JWTLeeway})
	if err != nil {
		return nil, err
	}
	if jwt != nil {
		verifiers = append(verifiers, jwt)
	}
	return auth.New(auth.Options{Verifiers: verifiers, Open: open}), nil
}

// help appends the environment variable to a flag's usage.
func help(usage, envName string) string { return usage + " (env " + envName + ")" }

// addConnFlags registers the addresses of the dependencies.
func (c *config) addConnFlags(fs *pflag.FlagSet) {
	c.readSecrets()
	fs.StringVar(&c.RedisAddr, "redis-addr", "127.0.0.1:6379", help("Redis address; two or more comma-separated seeds for a Redis Cluster", "REDIS_ADDR"))
	fs.BoolVar(&c.RedisCluster, "redis-cluster", false, help("--redis-addr is a Redis Cluster even when it names one address (several always are one)", "REDIS_CLUSTER"))
	fs.StringVar(&c.ClickHouseAddr, "clickhouse-addr", "127.0.0.1:9000", help("ClickHouse native-protocol address", "CLICKHOUSE_ADDR"))
	fs.StringVar(&c.ClickHouseDatabase, "clickhouse-database", "surge", help("ClickHouse database (created if missing)", "CLICKHOUSE_DATABASE"))
	fs.StringVar(&c.ClickHouseUser, "clickhouse-user", "default", help("ClickHouse user", "CLICKHOUSE_USER"))
	fs.StringVar(&c.ClickHouseCluster, "clickhouse-cluster", "", help("ClickHouse cluster (a remote_servers name; see docs/clickhouse-cluster.md) the migrations create the schema on: replicated local tables under Distributed ones, every DDL ON CLUSTER; empty: one server", "CLICKHOUSE_CLUSTER"))
	fs.StringVar(&c.KafkaBrokers, "kafka-brokers", "127.0.0.1:9092", help("Kafka bootstrap brokers, comma-separated", "KAFKA_BROKERS"))
	c.addTopicFlags(fs)
	fs.StringVar(&c.ModelDir, "model-dir", "data/models", help("directory of the model artifact store", "MODEL_DIR"))
	fs.StringVar(&c.ModelStoreURL, "model-store", "", help("S3-compatible model artifact store, s3://bucket[/prefix] (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; endpoint from MODEL_STORE_ENDPOINT); empty: the --model-dir directory", "MODEL_STORE_URL"))
	fs.StringVar(&c.LogFormat, "log-format", "json", help("log format: json or text", "LOG_FORMAT"))
	fs.StringVar(&c.LogLevel, "log-level", "info", help("log level: debug, info, warn, error", "LOG_LEVEL"))
}

// addServeFlags registers the settings of the serving path.
func (c *config) addServeFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ListenAddr, "listen", "127.0.0.1:8000", help("HTTP listen address", "LISTEN_ADDR"))
	fs.StringVar(&c.ModelName, "model-name", "demand", help("registered model to serve", "MODEL_NAME"))
	fs.StringVar(&c.ModelRuntime, "model-runtime", "onnxruntime", help("model runtime: onnxruntime or go", "MODEL_RUNTIME"))
	fs.DurationVar(&c.ModelPoll, "model-poll", 30*time.Second, help("how often the registry is checked for a new active model", "MODEL_POLL_INTERVAL"))
	fs.StringVar(&c.AdminKeyFile, "admin-key-file", "", help("file holding the admin API key (ADMIN_API_KEY, when set, wins)", "ADMIN_API_KEY_FILE"))
	fs.StringVar(&c.UserHashKeyFile, "user-hash-key-file", "", help("file holding the key user ids are hashed with (USER_HASH_KEY, when set, wins); required: every replica must use the same", "USER_HASH_KEY_FILE"))
	fs.StringVar(&c.OpenRoles, "open-roles", "", help("roles callers without a key or token hold, comma-separated (client, ingest, supply, analyst, admin); empty: none, everything but /health, /ready and /metrics needs a key or token", "AUTH_OPEN_ROLES"))
	fs.StringVar(&c.JWTSecretFile, "jwt-secret-file", "", help("file holding the HS256 secret of bearer tokens (JWT_HS256_SECRET, when set, wins; at least 32 bytes)", "JWT_HS256_SECRET_FILE"))
	fs.StringVar(&c.JWTJWKSFile, "jwt-jwks-file", "", help("JSON Web Key Set file whose public keys verify RS256 bearer tokens", "JWT_JWKS_FILE"))
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", help("issuer (iss) bearer tokens must name", "JWT_ISSUER"))
	fs.StringVar(&c.JWTAudience, "jwt-audience", "", help("audience (aud) bearer tokens must name", "JWT_AUDIENCE"))
	fs.DurationVar(&c.JWTLeeway, "jwt-leeway", 30*time.Second, help("clock skew allowed on a token's exp, nbf and iat", "JWT_LEEWAY"))
	fs.StringVar(&c.MetricsAddr, "metrics-listen", "", help("serve /metrics on this address instead of the API's listener; empty: on the API's", "METRICS_LISTEN_ADDR"))
	fs.BoolVar(&c.PprofAllowRemote, "pprof-allow-remote", false, help("allow --pprof-addr on a non-loopback address", "PPROF_ALLOW_REMOTE"))
	fs.Float64Var(&c.SupplyMaxDrop, "supply-max-drop", 0.5, help("largest fall of a region's supply one supply_update may make (0.5: to half); a larger one is held until a second report confirms it; 1: no check", "INGEST_SUPPLY_MAX_DROP"))
	fs.DurationVar(&c.InferenceTimeout, "inference-timeout", 50*time.Millisecond, help("timeout of one model inference", "INFERENCE_TIMEOUT"))
	fs.DurationVar(&c.QuoteValidity, "quote-validity", 60*time.Second, help("how long a quote is valid and kept for factorBreakdown", "QUOTE_VALIDITY"))
	fs.IntVar(&c.HorizonMinutes, "price-horizon", 15, help("forecast horizon, in minutes, that prices are based on", "PRICE_HORIZON_MINUTES"))
	fs.BoolVar(&c.Consumers, "consumers", true, help("run the stream consumers (features into Redis, events into ClickHouse) in this process", "RUN_CONSUMERS"))
	fs.StringVar(&c.RetrainSchedule, "retrain-schedule", "0 2 * * 0", help("cron expression (UTC) of the weekly retrain; empty: no scheduled retrain", "RETRAIN_SCHEDULE"))
	fs.StringVar(&c.RetrainWindow, "retrain-window", "28d", help("history the scheduled retrain trains on, ending at --retrain-to or now (28d, 336h)", "RETRAIN_WINDOW"))
	fs.StringVar(&c.RetrainFrom, "retrain-from", "", help("fixed start of the retrain's history, RFC 3339 or a date; empty: --retrain-window before the end", "RETRAIN_FROM"))
	fs.StringVar(&c.RetrainTo, "retrain-to", "", help("fixed end (exclusive) of the retrain's history; empty: now", "RETRAIN_TO"))
	fs.Float64Var(&c.RetrainMinDays, "retrain-min-days", 14, help("days of real events the retrain needs before it trains (until then the bootstrap model serves)", "RETRAIN_MIN_REAL_DAYS"))
	fs.BoolVar(&c.RetrainRollout, "retrain-rollout", true, help("start the canary of a retrained model that passed the gate", "RETRAIN_ROLLOUT"))
	fs.StringVar(&c.Holidays, "holidays", "", help("holiday calendar of the retrained models, comma-separated dates YYYY-MM-DD", "HOLIDAYS"))
	fs.IntVar(&c.RolloutMinServed, "rollout-min-forecasts", 100, help("forecasts the candidate must serve before a canary phase may end", "ROLLOUT_MIN_FORECASTS"))
	fs.IntVar(&c.RolloutMinScored, "rollout-min-scored", 50, help("candidate forecasts scored on realised demand before a canary phase may end; negative: do not wait", "ROLLOUT_MIN_SCORED"))
	fs.DurationVar(&c.RolloutPhase, "rollout-phase", time.Hour, help("length of each canary phase (10 %, 50 %, 100 %)", "ROLLOUT_PHASE_DURATION"))
	fs.DurationVar(&c.RolloutSlack, "rollout-latency-slack", 5*time.Millisecond, help("a canary is rolled back when its inference p99 exceeds 1.5 × the stable one's plus this", "ROLLOUT_LATENCY_SLACK"))
	fs.DurationVar(&c.RolloutCheck, "rollout-check", 10*time.Second, help("how often a canary is compared with the stable model", "ROLLOUT_CHECK_INTERVAL"))
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", help("serve net/http/pprof on this (loopback) address; empty: off", "PPROF_ADDR"))
	fs.DurationVar(&c.ExperimentDay, "experiment-day", 24*time.Hour, help("length of an experiment day given to new experiments (surge dev: 1m, so a week passes in minutes)", "EXPERIMENT_DAY_LENGTH"))
	fs.DurationVar(&c.ExperimentResults, "experiment-results-interval", 5*time.Minute, help("age at which a running experiment's results snapshot is recomputed (surge dev: 10s)", "EXPERIMENT_RESULTS_INTERVAL"))
	fs.Float64Var(&c.RatePerClient, "rate-limit", 5000, help("GraphQL requests per second allowed per API key or token subject (burst: twice that), shared by the replicas", "RATE_LIMIT_RPS"))
	fs.Float64Var(&c.RateAnonymous, "anonymous-rate-limit", 1000.0/60, help("GraphQL requests per second allowed per address to callers without credentials (default 1,000 a minute, burst 100; surge dev: as --rate-limit)", "RATE_LIMIT_ANONYMOUS_RPS"))
	fs.BoolVar(&c.Introspection, "introspection", false, help("answer GraphQL introspection (schema docs and completion in tools) to callers holding a role; false refuses __schema and __type (surge dev: true)", "GRAPHQL_INTROSPECTION"))
	fs.BoolVar(&c.Playground, "playground", false, help("serve the GraphiQL playground at /playground (surge dev: true)", "PLAYGROUND"))
	fs.DurationVar(&c.LiveReprice, "live-reprice", time.Second, help("how often the pairs watched by surgeUpdated subscribers are repriced, so their multipliers move without price requests; negative: never", "LIVE_REPRICE_INTERVAL"))
	fs.IntVar(&c.LiveMaxSubs, "live-max-subscriptions", 20000, help("live subscriptions allowed on this instance", "LIVE_MAX_SUBSCRIPTIONS"))
	fs.DurationVar(&c.WSPing, "ws-ping-interval", 10*time.Second, help("how often websocket clients are pinged; one that does not answer within twice the interval is disconnected", "WS_PING_INTERVAL"))
	fs.StringVar(&c.AuditSpoolDir, "audit-spool-dir", "data/audit-spool", help("where the audit and exposure records wait for Kafka (one directory per replica; up to 1 GiB, then quotes are refused)", "AUDIT_SPOOL_DIR"))
	fs.DurationVar(&c.IngestDedupTTL, "ingest-dedup-ttl", 5*time.Minute, help("how long the intake remembers an accepted eventId in Redis (the first filter: about 110 bytes per event; the ClickHouse sink drops resends at any age)", "INGEST_DEDUP_TTL"))
	fs.IntVar(&c.LiveMaxPerConn, "live-max-per-connection", 50, help("live subscriptions allowed on one websocket connection", "LIVE_MAX_PER_CONNECTION"))
}

// addTopicFlags registers how the Kafka topics are created.
func (c *config) addTopicFlags(fs *pflag.FlagSet) {
	fs.IntVar(&c.KafkaPartitions, "kafka-partitions", ingest.DefaultPartitions, help("partitions of each topic created at start, unless --kafka-topic-config says otherwise", "KAFKA_PARTITIONS"))
	fs.StringVar(&c.KafkaTopicConfig, "kafka-topic-config", "", help(`per-topic settings of the topics created at start, "topic:key=value,…;…" with keys partitions, replication, min.insync.replicas, retention (30d, 36h, forever) and topic "*" for every topic, e.g. "*:replication=3,min.insync.replicas=2;pricing-decisions:retention=90d"; empty: --kafka-partitions partitions, replication 1, the broker's defaults (docs/kafka.md)`, "KAFKA_TOPIC_CONFIG"))
}

// topicSpecs is how every topic is created, refusing a bad
// --kafka-topic-config.
func (c *config) topicSpecs() ([]ingest.TopicSpec, error) {
	if c.KafkaPartitions < 1 {
		return nil, fmt.Errorf("--kafka-partitions=%d: want at least 1", c.KafkaPartitions)
	}
	specs, err := ingest.ParseTopicConfig(c.KafkaTopicConfig, c.KafkaPartitions)
	if err != nil {
		return nil, fmt.Errorf("--kafka-topic-config (env KAFKA_TOPIC_CONFIG): %w", err)
	}
	return specs, nil
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

// setMemoryLimit sets the Go runtime's soft memory limit to 90 % of the
// container's (cgroup) memory limit, as Prometheus does, so that near the
// limit the collector works harder instead of the kernel killing the
// process. GOMEMLIMIT, when set, wins; AUTOMEMLIMIT sets another ratio in
// (0, 1], or "off". A bad AUTOMEMLIMIT stops the start; a limit that cannot
// be read (no cgroup, not Linux) leaves the runtime's default with a
// warning.
func setMemoryLimit(logger *slog.Logger) error {
	if v, ok := os.LookupEnv("AUTOMEMLIMIT"); ok && v != "off" {
		if r, err := strconv.ParseFloat(v, 64); err != nil || !(r > 0 && r <= 1) {
			return fmt.Errorf("environment variable AUTOMEMLIMIT=%q: want a ratio in (0, 1] or off", v)
		}
	}
	limit, err := memlimit.Set(memlimit.WithLogger(logger.With("component", "memlimit")))
	switch {
	case err != nil:
		logger.Warn("memory limit not set from the container's", "err", err)
	case limit < math.MaxInt64:
		logger.Info("memory limit set from the container's", "gomemlimit_bytes", limit)
	}
	return nil
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
