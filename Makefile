# Entry points for humans and CI. CI runs `make test`, `make compat`, `make test-chcluster`,
# `make test-faults` and `make fuzz` (.ci/run);
# every target that needs servers or the ONNX Runtime library depends on
# `deps`, which installs what is missing and is a fast no-op otherwise.

GO        ?= go
ORT_VERSION := 1.24.1
# The ONNX Runtime shared library loaded by inference/ (cgo). Override to
# use another copy; `make deps` always fills the default location.
ORT_LIB_PATH ?= $(CURDIR)/.cache/onnxruntime/libonnxruntime.so.$(ORT_VERSION)
export ORT_LIB_PATH
export CGO_ENABLED := 1

TEST_FLAGS  ?= -count=1 -timeout 20m -p 2
TEST_PKGS   ?= ./...
BENCH_FLAGS ?= -run '^$$' -bench . -skip Cold -benchmem -timeout 30m
# Packages scanned for Go benchmarks; ./... picks up new ones by itself.
BENCH_PKGS  ?= ./...
# Steps of `make bench`: append a target (e.g. BENCH_STEPS += bench-load
# with its own rule below) to extend it.
BENCH_STEPS := bench-go bench-load bench-cost

.PHONY: deps build run test fuzz bench bench-ingest $(BENCH_STEPS) generate lint

deps:
	@ORT_LIB_TARGET="$(CURDIR)/.cache/onnxruntime/libonnxruntime.so.$(ORT_VERSION)" ./scripts/install-deps.sh

build:
	$(GO) build -o bin/surge ./cmd/surge

run: deps
	$(GO) run ./cmd/surge dev

test: deps test-deploy
	$(GO) test $(TEST_FLAGS) $(TEST_PKGS)

# The deployment artifacts (deploy/, a module of its own): the kustomize
# overlays rendered and strictly decoded, the Dockerfile, the alert rules
# parsed, evaluated and compared with the metrics the code defines (see
# docs/kubernetes.md). Needs no server.
.PHONY: test-deploy
test-deploy:
	cd deploy && $(GO) test -count=1 -timeout 5m .

# Every Go fuzz target (each `func Fuzz…` of a _test.go, found by
# scripts/fuzz.sh), one after the other for FUZZTIME each; CI runs it after
# make test-faults. It fails when a target finds a failing input, which go
# test writes to the package's testdata/fuzz/ (commit it with the fix: make
# test replays it). `make fuzz FUZZ=FuzzReadCSV` runs the matching targets.
FUZZTIME         ?= 20s
FUZZMINIMIZETIME ?= 500x
FUZZ             ?=
fuzz: deps
	FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) GO=$(GO) ./scripts/fuzz.sh $(FUZZ)

# The fault-injection suite (faults/, CI runs it after make test): the
# stack as separate processes under price and event load, each part killed
# with SIGKILL, lost produce acknowledgements; figures to docs/reliability.md.
.PHONY: test-faults
test-faults: deps
	$(GO) test -tags faults -count=1 -timeout 30m -v -run TestFaults ./faults/ -args -report $(CURDIR)/docs/reliability.md

# The ClickHouse cluster tests (build tag chcluster: migrations/cluster_replicas_test.go,
# sink/cluster_test.go): a ZooKeeper (apt zookeeper, on Java) and two ClickHouse 18.16
# servers, as 1 shard x 2 replicas and as 2 shards x 1; the migrations ON CLUSTER,
# inserts through Distributed tables, the sink exactly once across a failover and a
# lagging replica. About 75 s. Not part of make test (nothing else needs ZooKeeper);
# CI runs it after make compat
# (docs/clickhouse-cluster.md).
.PHONY: test-chcluster
test-chcluster:
	@DEPS_ZOOKEEPER=1 ORT_LIB_TARGET="$(CURDIR)/.cache/onnxruntime/libonnxruntime.so.$(ORT_VERSION)" ./scripts/install-deps.sh
	$(GO) test -tags chcluster -count=1 -timeout 10m -v -run TestCluster ./migrations/ ./sink/

bench: deps $(BENCH_STEPS)

bench-go: deps
	$(GO) test $(BENCH_FLAGS) $(BENCH_PKGS)

# Events over HTTP → Kafka → features in Redis and rows in ClickHouse.
bench-ingest: deps
	./scripts/bench-ingest.sh

# GraphQL price query over HTTP against the whole local stack.
bench-load: deps
	./scripts/bench-load.sh

# Cost of the price path: server CPU per quote, throughput against
# { __typename }, p99 at 1,000/s, RSS, audit records counted (README).
bench-cost: deps
	./scripts/bench-cost.sh

# The capacity model's inputs (docs/scaling.md): CPU µs per quote and per
# event of each process of the production layout (API without consumers,
# surge consume, Redis, ClickHouse), each a process of its own.
.PHONY: bench-scaling
bench-scaling: deps
	./scripts/bench-scaling.sh

# Experiments: assignment cost, experimentResults over 10 M exposures, and
# the price query with an experiment running (see README).
.PHONY: bench-experiments
bench-experiments: deps
	./scripts/bench-experiments.sh

# Live updates: surge change delivery to 1,000 subscribers, the price query
# with them connected, and the memory of 10,000 idle subscriptions (README).
.PHONY: bench-live
bench-live: deps
	./scripts/bench-live.sh

# Real-data forecast accuracy: departures-dev replayed into a fresh stack,
# trained with the last 14 days held out (see docs/forecasting.md).
.PHONY: bench-forecast
bench-forecast: deps
	./scripts/bench-forecast.sh

# Trainer speed: 1,000,000 rows × 20 features, 300 trees of depth 6 (L2),
# printing seconds per fit and rows/s (target ≤ 60 s on 2 cores).
.PHONY: bench-train
bench-train:
	$(GO) test -run '^$$' -bench 'TrainLarge|Accuracy' -benchtime 1x -timeout 30m ./training/

# Every migration and analytics query of the project on a current ClickHouse
# (chDB 26.7 embedded, libchdb.so from npm into .cache/chdb): the compat/
# module, its own Go module so the main one does not depend on chdb-go
# (docs/compat.md). CI runs it after make test.
CHDB_LIB_PATH ?= $(CURDIR)/.cache/chdb/libchdb.so
.PHONY: compat chdb
chdb:
	@CHDB_LIB_TARGET="$(CURDIR)/.cache/chdb/libchdb.so" ./scripts/install-chdb.sh

compat: chdb
	cd compat && CHDB_LIB_PATH="$(CHDB_LIB_PATH)" $(GO) test -count=1 -timeout 10m ./...

generate:
	$(GO) generate ./...

# Rebuilds the dashboard and playground bundles in web/dist (committed; a
# test in `make test` fails when they are older than web/src).
.PHONY: web
web: deps
	cd web && npm run typecheck && npm run build

lint:
	$(GO) vet ./...
