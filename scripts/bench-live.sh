#!/usr/bin/env bash
# Live updates benchmark: starts the whole local stack (`surge dev`, with its
# Redis on a known port) in a temporary data directory, then
#   1. the price query at 1,000/s for 10 s, nothing subscribed (the reference);
#   2. 1,000 surgeUpdated subscribers (100 websockets) while 20 surge
#      changes/s are published on Redis for 15 s: publication → subscriber;
#   3. the price query at 1,000/s with 1,000 subscribers connected;
#   4. 10,000 idle subscriptions (200 websockets): the server's RSS before
#      and after.
# Loopback only; about a minute; stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

go build -o bin/surge ./cmd/surge
data=$(mktemp -d)
addr=${BENCH_LISTEN_ADDR:-127.0.0.1:18000}
kafka=${BENCH_KAFKA_ADDR:-127.0.0.1:18092}
redis=${BENCH_REDIS_ADDR:-127.0.0.1:18379}
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}
redis-server --bind 127.0.0.1 --port "${redis#*:}" --save '' --appendonly no >"$data/redis.log" 2>&1 &
rpid=$!
LOG_LEVEL=warn ./bin/surge broker --data-dir "$data" --addr "$kafka" >"$data/broker.log" 2>&1 &
bpid=$!
wait_port "$redis"
wait_port "$kafka"
pid=
start_dev() {
  REDIS_ADDR=$redis KAFKA_BROKERS=$kafka RATE_LIMIT_RPS=1000000 LOG_LEVEL=warn ./bin/surge dev --data-dir "$data" --listen "$addr" >>"$data/dev.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do
    if curl -fsS "http://$addr/ready" >/dev/null 2>&1; then return; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$data/dev.log"; echo "surge dev exited" >&2; exit 1; fi
    sleep 0.5
  done
  curl -fsS "http://$addr/ready" >/dev/null
}
cleanup() {
  for p in "$pid" "$bpid" "$rpid"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  rm -rf "$data"
}
trap cleanup EXIT

# The first start trains the bootstrap model; restart so that the memory
# measured is the serving process's, not the trainer's.
start_dev
kill -TERM "$pid"; wait "$pid" || true
start_dev

url="http://$addr/graphql"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
./bin/surge loadtest --url "$url" --rate 500 --duration 3s >/dev/null
echo "== price query at 1,000/s for 10 s, no subscribers"
./bin/surge loadtest --url "$url" --rate 1000 --duration 10s --pid "$pid"
echo "== 1,000 subscribers, 20 surge changes/s for 15 s: publication on Redis → subscriber"
./bin/surge loadtest --url "$url" --live 1000 --live-rate 20 --duration 15s --redis-addr "$redis" --pid "$pid"
echo "== price query at 1,000/s for 10 s with 1,000 subscribers connected"
./bin/surge loadtest --url "$url" --hold-subscriptions 1000 --rate 1000 --duration 10s --pid "$pid"
echo "== 10,000 idle subscriptions"
./bin/surge loadtest --url "$url" --hold-subscriptions 10000 --rate 0 --duration 5s --pid "$pid"
curl -fsS "http://$addr/metrics" | grep -E '^surge_live_(subscriptions|slow|updates_sent|changes_received)' || true
