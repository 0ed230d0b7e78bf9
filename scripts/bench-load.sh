#!/usr/bin/env bash
# Load benchmark of the GraphQL price query over HTTP: starts the whole local
# stack (`surge dev`) in a temporary data directory, warms it, offers
# 1,000 requests/s, then steps up the rate to find the highest one with
# p99 ≤ 20 ms, and prints the server's peak RSS. Loopback only; bounded in
# time (about a minute); stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

go build -o bin/surge ./cmd/surge
data=$(mktemp -d)
addr=${BENCH_LISTEN_ADDR:-127.0.0.1:18000}
kafka=${BENCH_KAFKA_ADDR:-127.0.0.1:18092}
# The broker runs as a process of its own, so that the RSS measured below is
# the server's alone (kfake keeps every record in memory).
LOG_LEVEL=warn ./bin/surge broker --data-dir "$data" --addr "$kafka" >"$data/broker.log" 2>&1 &
bpid=$!
for _ in $(seq 1 50); do
  if (exec 3<>"/dev/tcp/${kafka%:*}/${kafka#*:}") 2>/dev/null; then break; fi
  sleep 0.1
done
start_dev() {
  KAFKA_BROKERS=$kafka RATE_LIMIT_RPS=1000000 LOG_LEVEL=warn ./bin/surge dev --data-dir "$data" --listen "$addr" >>"$data/dev.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do
    if curl -fsS "http://$addr/ready" >/dev/null 2>&1; then return; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$data/dev.log"; echo "surge dev exited" >&2; exit 1; fi
    sleep 0.5
  done
  curl -fsS "http://$addr/ready" >/dev/null
}
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  kill -TERM "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

# The first start trains the bootstrap model; restart so that the memory
# measured is the serving process's, not the trainer's.
pid=
start_dev
kill -TERM "$pid"; wait "$pid" || true
start_dev

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "== warm-up (500/s for 3 s)"
./bin/surge loadtest --url "http://$addr/graphql" --rate 500 --duration 3s >/dev/null
echo "== price query at 1,000 requests/s for 10 s"
./bin/surge loadtest --url "http://$addr/graphql" --rate 1000 --duration 10s
echo "== highest rate with p99 ≤ 20 ms (5 s per step)"
./bin/surge loadtest --url "http://$addr/graphql" --find-max --duration 5s --pid "$pid"
