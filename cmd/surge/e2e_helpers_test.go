package main

// Helpers of the end-to-end tests (e2e_test.go): a whole serving stack on
// real servers (Redis, ClickHouse, kfake) built with newApp and run with
// app.run, and a small GraphQL-over-HTTP client.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/rules"
	"github.com/surgeworks/surge/training"
)

func TestMain(m *testing.M) {
	// Migrations and the ONNX Runtime log through the default logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if os.Getenv(inference.ORTLibraryEnv) == "" {
		// go test runs in cmd/surge; `make deps` puts the library at the root.
		if p, err := filepath.Abs(filepath.Join("..", "..", ".cache", "onnxruntime", "libonnxruntime.so.1.24.1")); err == nil {
			if _, err := os.Stat(p); err == nil {
				os.Setenv(inference.ORTLibraryEnv, p)
			}
		}
	}
	testenv.Main(m)
}

// testAdminKey is the admin API key of every test stack.
const testAdminKey = "e2e-admin-key-0123456789"

// testIngestKey is the ingest key (every event type) of every test stack;
// long enough that no hash or id stored in ClickHouse contains it by chance
// (TestE2ESecurity looks for it in every column).
const testIngestKey = "e2e-ingest-key-5550123"

// demoRegions are the regions rules.SeedDefaults installs, sorted.
var demoRegions = []string{"berlin", "london", "nyc", "paris", "sf"}

// stackOptions shape one test stack.
type stackOptions struct {
	// config changes the configuration before the app is built.
	config func(*config)
	// clickhouse is a private server (for tests that stop it); nil uses a
	// fresh database on the shared test server.
	clickhouse *devenv.Process
	// days of generated history to train on (default 3, the least
	// training.Bootstrap accepts with its 2 holdout days, plus one).
	days int
	// loadHistory also writes the history into ClickHouse, so that
	// historical averages exist. Use days ≥ 7 so that the current
	// hour-of-week slot is covered.
	loadHistory bool
	// noFeatures leaves the online feature store empty.
	noFeatures bool
	// quoteValidity overrides cfg.QuoteValidity (default 60 s).
	quoteValidity time.Duration
	// consumers runs the stream consumers (features, ClickHouse sink) in the app.
	consumers bool
	// experimentDay is the day length of new experiments (default 24 h).
	experimentDay time.Duration
	// maxPerConnection bounds the live subscriptions of a websocket
	// connection (default 50).
	maxPerConnection int
	// redisCluster runs the stack on a Redis Cluster of 3 masters and 3
	// replicas (stack.cluster) instead of one Redis (stack.redis).
	redisCluster bool
}

// stack is one serving process on its own servers.
type stack struct {
	cfg     config
	redis   *devenv.Process      // nil with stackOptions.redisCluster
	cluster *devenv.RedisCluster // with stackOptions.redisCluster
	kafka   *devenv.Kafka
	a       *app
	base    string // http://host:port
	client  *http.Client
	logs    *lockedBuffer
	logger  *slog.Logger

	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
	stopTook time.Duration
}

// lockedBuffer collects the app's logs; they are printed when a test fails.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newStack starts Redis, Kafka and (unless given) a ClickHouse database,
// migrates, seeds the demo rules, trains and registers model v1, writes
// fresh online features for the demo regions, builds the app with newApp and
// runs it until the test ends.
func newStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	begin := time.Now()
	if opts.days == 0 {
		opts.days = 3
	}
	s := &stack{logs: &lockedBuffer{}}
	s.logger = slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("app logs:\n%s", s.logs.String())
		}
	})

	redisAddr := ""
	if opts.redisCluster {
		s.cluster = testenv.RedisCluster(t)
		redisAddr = strings.Join(s.cluster.Addrs(), ",")
	} else {
		s.redis = testenv.Redis(t)
		redisAddr = s.redis.Addr
	}
	s.kafka = testenv.Kafka(t)
	chAddr, chDB := "", "surge"
	if opts.clickhouse != nil {
		chAddr = opts.clickhouse.Addr
	} else {
		chAddr, chDB = testenv.ClickHouse(t)
	}
	s.cfg = config{
		ListenAddr:         "127.0.0.1:0",
		RedisAddr:          redisAddr,
		ClickHouseAddr:     chAddr,
		ClickHouseDatabase: chDB,
		ClickHouseUser:     "default",
		KafkaBrokers:       strings.Join(s.kafka.Brokers, ","),
		KafkaPartitions:    6,
		ModelName:          "demand",
		ModelRuntime:       string(inference.RuntimeORT),
		ModelDir:           t.TempDir(),
		AuditSpoolDir:      t.TempDir(),
		// The tests call watcher.Sync themselves; an hourly poll keeps the
		// background one out of their way.
		ModelPoll:        time.Hour,
		InferenceTimeout: 50 * time.Millisecond,
		QuoteValidity:    60 * time.Second,
		HorizonMinutes:   15,
		RatePerClient:    1e6,
		RateAnonymous:    1e6,
		Introspection:    true,
		Playground:       true,
		LogFormat:        "text",
		LogLevel:         "info",
		// As surge dev: apps and analysts need no key.
		OpenRoles:     "client,analyst",
		AdminKey:      testAdminKey,
		IngestAPIKeys: []string{testIngestKey},
		UserHashKey:   []byte("e2e-user-hash-key-0123456789"),
	}
	if opts.quoteValidity > 0 {
		s.cfg.QuoteValidity = opts.quoteValidity
	}
	s.cfg.Consumers = opts.consumers
	s.cfg.ExperimentDay = opts.experimentDay
	s.cfg.LiveMaxPerConn = opts.maxPerConnection
	s.cfg.WSPing = 3 * time.Second // the protocol test waits for a ping
	if opts.config != nil {
		opts.config(&s.cfg)
	}
	if _, err := s.cfg.logger(); err != nil {
		t.Fatalf("config logger: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch, err := openClickHouse(ctx, s.cfg, s.logger)
	if err != nil {
		t.Fatalf("openClickHouse: %v", err)
	}
	seeded, err := rules.SeedDefaults(ctx, rules.NewStore(ch))
	if err != nil {
		ch.Close()
		t.Fatalf("seed rules: %v", err)
	}
	if len(seeded) != len(rules.DefaultRules()) {
		ch.Close()
		t.Fatalf("seeded %d rules, want %d", len(seeded), len(rules.DefaultRules()))
	}
	artifacts, err := registry.NewLocalStore(s.cfg.ModelDir)
	if err != nil {
		ch.Close()
		t.Fatal(err)
	}
	e, _, err := training.RegisterBootstrap(ctx, ch, registry.New(ch, artifacts), training.BootstrapJob{Name: s.cfg.ModelName, Days: opts.days, Status: registry.StatusActive, LoadHistory: opts.loadHistory}, s.logger)
	ch.Close()
	if err != nil {
		t.Fatalf("RegisterBootstrap: %v", err)
	}
	if e.Version != "v1" || e.Status != registry.StatusActive {
		t.Fatalf("registered %s %s, want v1 active", e.Version, e.Status)
	}

	s.a, err = newApp(context.Background(), s.cfg, s.logger)
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	if !opts.noFeatures {
		s.writeFeatures(t, demoRegions...)
	}
	runCtx, stop := context.WithCancel(context.Background())
	s.cancel, s.done = stop, make(chan error, 1)
	go func() { s.done <- s.a.run(runCtx) }()
	s.base = "http://" + s.a.server.Addr()
	s.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(func() {
		if took, err := s.stop(); err != nil {
			t.Errorf("app.run returned %v (after %s)", err, took)
		}
	})
	t.Logf("stack up in %s (api %s, redis %s, clickhouse %s/%s, kafka %s)",
		time.Since(begin).Round(time.Millisecond), s.base, s.cfg.RedisAddr, chAddr, chDB, s.cfg.KafkaBrokers)
	return s
}

// stop cancels the app's context and waits for run to return (at most 30 s).
func (s *stack) stop() (time.Duration, error) {
	s.stopOnce.Do(func() {
		start := time.Now()
		s.cancel()
		select {
		case s.stopErr = <-s.done:
		case <-time.After(30 * time.Second):
			s.stopErr = fmt.Errorf("run did not return within 30 s")
		}
		s.stopTook = time.Since(start)
		s.client.CloseIdleConnections()
	})
	return s.stopTook, s.stopErr
}

// history is the generated activity the online features are computed from,
// exactly as simulate.DemoFeatures does.
var history struct {
	once   sync.Once
	start  time.Time
	series map[string]historySeries
}

type historySeries struct {
	minutes []features.Minute
	season  [168]float64
}

// onlineFeatures returns the demo generator's online features of a region
// at now, as simulate.DemoFeatures computes them.
func onlineFeatures(region string, now time.Time) (features.Online, error) {
	history.once.Do(func() {
		history.start = now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -14)
		history.series = map[string]historySeries{}
		for _, h := range training.GenerateHistory(training.HistoryOptions{Days: 16, Start: history.start}) {
			history.series[h.Region.ID] = historySeries{h.Minutes, training.SeasonalityIndex(h.Minutes[:14*24*60])}
		}
	})
	s, ok := history.series[region]
	if !ok {
		return nil, fmt.Errorf("no generated history for region %q", region)
	}
	idx := int(now.Sub(history.start) / time.Minute)
	if idx < 15 || idx > len(s.minutes) {
		return nil, fmt.Errorf("%s is outside the generated history", now)
	}
	return features.FromMinutes(s.minutes[idx-15:idx], s.season[training.HourOfWeek(now)]), nil
}

// writeFeatures writes fresh online features of regions through the app's
// Redis client.
func (s *stack) writeFeatures(t *testing.T, regions ...string) {
	t.Helper()
	if err := s.tryWriteFeatures(regions...); err != nil {
		t.Fatal(err)
	}
}

func (s *stack) tryWriteFeatures(regions ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store := features.NewStore(s.a.rdb, 0)
	for _, r := range regions {
		now := time.Now().UTC()
		online, err := onlineFeatures(r, now)
		if err != nil {
			return err
		}
		if err := store.Write(ctx, r, online, now); err != nil {
			return err
		}
	}
	return nil
}

// ---- GraphQL over HTTP ----

type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

type gqlResponse struct {
	Status int
	Header http.Header
	Body   []byte
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
}

func (r gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

func (r gqlResponse) field() string {
	if len(r.Errors) == 0 {
		return ""
	}
	f, _ := r.Errors[0].Extensions["field"].(string)
	return f
}

// do sends a request to the API and decodes a GraphQL-shaped answer.
func (s *stack) do(t *testing.T, req *http.Request) gqlResponse {
	t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	out := gqlResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s answered %d (never 5xx for client input): %s", req.Method, req.URL, resp.StatusCode, body)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/") && len(body) > 0 {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("answer is not JSON: %v: %s", err, body)
		}
	}
	return out
}

// post sends raw bytes to /graphql.
func (s *stack) post(t *testing.T, body []byte, header map[string]string) gqlResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.base+"/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return s.do(t, req)
}

// gql sends one operation with variables.
func (s *stack) gql(t *testing.T, query string, vars map[string]any, header map[string]string) gqlResponse {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	return s.post(t, body, header)
}

// mustData runs an operation that must succeed and decodes its data.
func (s *stack) mustData(t *testing.T, query string, vars map[string]any, out any) {
	t.Helper()
	s.mustDataAs(t, nil, query, vars, out)
}

// ingestHeader carries the stack's ingest key.
var ingestHeader = map[string]string{"X-Api-Key": testIngestKey}

// mustDataAs is mustData with headers (a key).
func (s *stack) mustDataAs(t *testing.T, header map[string]string, query string, vars map[string]any, out any) {
	t.Helper()
	r := s.gql(t, query, vars, header)
	if r.Status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("operation failed (%d): %s\nquery: %s", r.Status, r.Body, query)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatalf("decode data: %v: %s", err, r.Data)
	}
}

// getPath GETs a non-GraphQL endpoint.
func (s *stack) getPath(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := s.client.Get(s.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

type readyAnswer struct {
	Status  string            `json:"status"`
	Checks  map[string]string `json:"checks"`
	Failing []string          `json:"failing"`
}

func (s *stack) ready(t *testing.T) (int, readyAnswer) {
	t.Helper()
	code, body := s.getPath(t, "/ready")
	var r readyAnswer
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/ready answered %d %q: %v", code, body, err)
	}
	return code, r
}

// waitReady polls /ready until it answers want (or fails the test).
func (s *stack) waitReady(t *testing.T, want int, within time.Duration) readyAnswer {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, r := s.ready(t)
		if code == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready still answers %d %+v after %s, want %d", code, r, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *stack) metrics(t *testing.T) string {
	t.Helper()
	code, body := s.getPath(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	return string(body)
}

// metricValue finds the sample "name{labels} value" (labels as printed, ""
// for none) in a Prometheus text exposition.
func metricValue(text, name, labels string) (float64, bool) {
	prefix := name
	if labels != "" {
		prefix += "{" + labels + "}"
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, prefix+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// ---- price quotes ----

type factorJSON struct {
	Name         string  `json:"name"`
	Contribution float64 `json:"contribution"`
	Description  string  `json:"description"`
}

type quoteJSON struct {
	QuoteID                string       `json:"quoteId"`
	RegionID               string       `json:"regionId"`
	ProductType            string       `json:"productType"`
	Price                  float64      `json:"price"`
	Currency               string       `json:"currency"`
	BasePrice              float64      `json:"basePrice"`
	SurgeMultiplier        float64      `json:"surgeMultiplier"`
	Factors                []factorJSON `json:"factors"`
	DemandForecast         float64      `json:"demandForecast"`
	ForecastHorizonMinutes int          `json:"forecastHorizonMinutes"`
	ForecastSource         string       `json:"forecastSource"`
	Supply                 *float64     `json:"supply"`
	ModelVersion           *string      `json:"modelVersion"`
	RuleVersion            int          `json:"ruleVersion"`
	Degraded               bool         `json:"degraded"`
	Warnings               []string     `json:"warnings"`
	TraceID                string       `json:"traceId"`
	CreatedAt              time.Time    `json:"createdAt"`
	ValidUntil             time.Time    `json:"validUntil"`
}

func (q quoteJSON) modelVersion() string {
	if q.ModelVersion == nil {
		return ""
	}
	return *q.ModelVersion
}

const quoteFields = `quoteId regionId productType price currency basePrice surgeMultiplier
	factors { name contribution description } demandForecast forecastHorizonMinutes forecastSource
	supply modelVersion ruleVersion degraded warnings traceId createdAt validUntil`

const priceQuery = `query($in: PriceInput!) { price(input: $in) { ` + quoteFields + ` } }`

// price asks for one price; it fails the test on any error.
func (s *stack) price(t *testing.T, region, product string) quoteJSON {
	t.Helper()
	var d struct {
		Price quoteJSON `json:"price"`
	}
	s.mustData(t, priceQuery, map[string]any{"in": map[string]any{"regionId": region, "productType": product}}, &d)
	return d.Price
}

// defaultRule returns the seeded rule of a region and product.
func defaultRule(t *testing.T, region, product string) pricing.Rule {
	t.Helper()
	for _, r := range rules.DefaultRules() {
		if r.RegionID == region && r.ProductType == product {
			return r
		}
	}
	t.Fatalf("no default rule for %s/%s", region, product)
	return pricing.Rule{}
}

func bps(x float64) int64 { return int64(math.Round(x * 1e4)) }

// wantPrice is base × multiplier rounded half up to a multiple of step,
// computed exactly in units of 0.0001 as the engine defines it.
func wantPrice(base, mult, step float64) float64 {
	prod := bps(base) * bps(mult)
	div := bps(step) * 10000
	q, rem := prod/div, prod%div
	if 2*rem >= div {
		q++
	}
	return float64(q*bps(step)) / 1e4
}

var factorOrder = []string{
	pricing.FactorBase, pricing.FactorDemandSupply, pricing.FactorRegulatoryCap,
	pricing.FactorSmoothing, pricing.FactorRounding,
}

// checkArithmetic asserts what every quote promises: the factors in order,
// adding up exactly (in basis points) to the multiplier, the multiplier
// within the caps, and the price equal to base × multiplier rounded by the
// rule's price step.
func checkArithmetic(t *testing.T, q quoteJSON, rule pricing.Rule) {
	t.Helper()
	names := make([]string, len(q.Factors))
	var sum int64
	for i, f := range q.Factors {
		names[i] = f.Name
		sum += bps(f.Contribution)
		if f.Description == "" {
			t.Errorf("factor %s has no description", f.Name)
		}
	}
	if !slices.Equal(names, factorOrder) {
		t.Errorf("factors %v, want %v", names, factorOrder)
	}
	if sum != bps(q.SurgeMultiplier) {
		t.Errorf("factor contributions add up to %d bps, multiplier is %d bps (%+v)", sum, bps(q.SurgeMultiplier), q.Factors)
	}
	if q.BasePrice != rule.BasePrice {
		t.Errorf("basePrice %v, want the rule's %v", q.BasePrice, rule.BasePrice)
	}
	if q.SurgeMultiplier < rule.MinMultiplier || q.SurgeMultiplier > rule.MaxMultiplier {
		t.Errorf("multiplier %v outside [%v, %v]", q.SurgeMultiplier, rule.MinMultiplier, rule.MaxMultiplier)
	}
	if want := wantPrice(q.BasePrice, q.SurgeMultiplier, rule.PriceStep); q.Price != want {
		t.Errorf("price %v, want round(%v × %v, step %v) = %v", q.Price, q.BasePrice, q.SurgeMultiplier, rule.PriceStep, want)
	}
	if q.Currency != rule.Currency {
		t.Errorf("currency %q, want %q", q.Currency, rule.Currency)
	}
}

// checkModelQuote asserts a healthy quote served by model v1.
func checkModelQuote(t *testing.T, q quoteJSON, region, product string) {
	t.Helper()
	if q.RegionID != region || q.ProductType != product {
		t.Errorf("quote for %s/%s, want %s/%s", q.RegionID, q.ProductType, region, product)
	}
	if q.ForecastSource != "MODEL" || q.Degraded || len(q.Warnings) != 0 || q.modelVersion() != "v1" {
		t.Errorf("quote %s/%s: source %s degraded %v warnings %q model %q; want MODEL, not degraded, no warnings, v1",
			region, product, q.ForecastSource, q.Degraded, q.Warnings, q.modelVersion())
	}
	if q.ForecastHorizonMinutes != 15 {
		t.Errorf("forecastHorizonMinutes %d, want 15", q.ForecastHorizonMinutes)
	}
	if !(q.DemandForecast > 0) {
		t.Errorf("demandForecast %v, want > 0", q.DemandForecast)
	}
	if q.Supply == nil || !(*q.Supply > 0) {
		t.Errorf("supply %v, want the online feature (> 0)", q.Supply)
	}
}

func containsAny(ss []string, sub string) bool {
	return slices.ContainsFunc(ss, func(s string) bool { return strings.Contains(s, sub) })
}

// ---- fakes ----

// hangingPredictor is a model runtime that never answers: Predict blocks
// until its context ends.
// hangingPredictor never answers by itself; it counts its calls.
type hangingPredictor struct{ calls atomic.Int64 }

func (h *hangingPredictor) Predict(ctx context.Context, _ [][]float32) ([]float32, error) {
	h.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func (*hangingPredictor) Close() error { return nil }

// pipelineCounter is a go-redis hook counting pipelines that read online
// features (HGETALL features:{…}), and the feature keys each one read.
type pipelineCounter struct {
	mu    sync.Mutex
	reads [][]string // per pipeline, the feature keys read
}

func (*pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (*pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var keys []string
		for _, cmd := range cmds {
			args := cmd.Args()
			if len(args) >= 2 && strings.EqualFold(fmt.Sprint(args[0]), "hgetall") {
				if k := fmt.Sprint(args[1]); strings.HasPrefix(k, "features:{") {
					keys = append(keys, k)
				}
			}
		}
		if len(keys) > 0 {
			c.mu.Lock()
			c.reads = append(c.reads, keys)
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (c *pipelineCounter) reset() {
	c.mu.Lock()
	c.reads = nil
	c.mu.Unlock()
}

func (c *pipelineCounter) snapshot() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.reads)
}

// dialRefused reports whether nothing listens on addr any more.
func dialRefused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// waitCond polls cond until it holds; it fails the test after two minutes
// (a generous deadline: the condition, not the clock, is what is tested).
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
