#!/usr/bin/env bash
# Experiment benchmarks: the cost of assignment per price computation, the
# experimentResults query (snapshot read and refresh) over 10 million exposures and 1 million bookings
# in ClickHouse, and the GraphQL price query at 1,000 requests/s with an
# experiment running (the user enrolled) against the same query without a
# user, on the whole local stack. Loopback only; stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "== assignment (go test -bench)"
go test -run '^$' -bench 'Assign' -benchmem ./experiments/ | grep -E '^Benchmark|ok|FAIL'
echo "== experimentResults over 10M exposures: read of the snapshot, and its refresh (go test -bench)"
go test -run '^$' -bench 'ExperimentResults' -benchtime 5x -timeout 20m ./experiments/ | grep -E '^Benchmark|ok|FAIL'

go build -o bin/surge ./cmd/surge
data=$(mktemp -d)
addr=${BENCH_LISTEN_ADDR:-127.0.0.1:18010}
kafka=${BENCH_KAFKA_ADDR:-127.0.0.1:18093}
LOG_LEVEL=warn ./bin/surge broker --data-dir "$data" --addr "$kafka" >"$data/broker.log" 2>&1 &
bpid=$!
for _ in $(seq 1 50); do
  if (exec 3<>"/dev/tcp/${kafka%:*}/${kafka#*:}") 2>/dev/null; then break; fi
  sleep 0.1
done
KAFKA_BROKERS=$kafka RATE_LIMIT_RPS=1000000 LOG_LEVEL=warn ./bin/surge dev --data-dir "$data" --listen "$addr" >>"$data/dev.log" 2>&1 &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  kill -TERM "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 240); do
  if curl -fsS "http://$addr/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$data/dev.log"; echo "surge dev exited" >&2; exit 1; fi
  sleep 0.5
done
key=$(cat "$data/admin-api-key")
gql() { curl -fsS "http://$addr/graphql" -H 'Content-Type: application/json' -H "X-Admin-Key: $key" -d "$1" >/dev/null; }
gql '{"query":"mutation { createExperiment(input: {id: \"bench\", hypothesis: \"bench\", regions: [\"berlin\"], variants: [{name: \"control\", weight: 50}, {name: \"cheaper\", weight: 50, strategy: {basePriceAdjustmentPercent: -5}}]}) { id } }"}'
gql '{"query":"mutation { startExperiment(id: \"bench\") { status } }"}'

plain='{ price(input: {regionId: "berlin", productType: "ride"}) { price surgeMultiplier } }'
enrolled='{ price(input: {regionId: "berlin", productType: "ride", userId: "bench-user"}) { price surgeMultiplier experiment { id variant } } }'
echo "== warm-up (500/s for 3 s)"
./bin/surge loadtest --url "http://$addr/graphql" --query "$plain" --rate 500 --duration 3s >/dev/null
for round in 1 2; do
  echo "== round $round: price without a user (not enrolled), 1,000/s for 10 s"
  ./bin/surge loadtest --url "http://$addr/graphql" --query "$plain" --rate 1000 --duration 10s
  echo "== round $round: price with a user enrolled in the running experiment, 1,000/s for 10 s"
  ./bin/surge loadtest --url "http://$addr/graphql" --query "$enrolled" --rate 1000 --duration 10s
done
