#!/usr/bin/env bash
# End-to-end ingestion benchmark: starts the whole local stack (the Kafka
# broker in a process of its own) with the stream consumers, sends synthetic
# traffic over HTTP with `surge simulate` (batches of 1,000, 8 senders, one
# trusted API key) and measures with `surge watch-ingest`: events accepted/s,
# consumer lag, ClickHouse rows/s and freshness (accepted → Redis features).
# Loopback only; bounded (about 1.5 minutes); stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rate=${BENCH_INGEST_RATE:-50000}
duration=${BENCH_INGEST_DURATION:-30s}
go build -o bin/surge ./cmd/surge
data=$(mktemp -d)
addr=${BENCH_LISTEN_ADDR:-127.0.0.1:18000}
kafka=${BENCH_KAFKA_ADDR:-127.0.0.1:18092}
LOG_LEVEL=warn ./bin/surge broker --data-dir "$data" --addr "$kafka" >"$data/broker.log" 2>&1 &
bpid=$!
for _ in $(seq 1 50); do
  if (exec 3<>"/dev/tcp/${kafka%:*}/${kafka#*:}") 2>/dev/null; then break; fi
  sleep 0.1
done
KAFKA_BROKERS=$kafka DEMO_FEATURES=false LOG_LEVEL=info PPROF_ADDR=${BENCH_PPROF_ADDR:-} ./bin/surge dev --data-dir "$data" --listen "$addr" >"$data/dev.log" 2>&1 &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  kill -TERM "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  if curl -fsS "http://$addr/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$data/dev.log"; echo "surge dev exited" >&2; exit 1; fi
  sleep 0.5
done
curl -fsS "http://$addr/ready" >/dev/null

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "== simulate --rate $rate for $duration, measured by watch-ingest"
./bin/surge watch-ingest --url "http://$addr" --duration "$duration" --drain 60s &
wpid=$!
./bin/surge simulate --url "http://$addr/v1/events" --api-key bench --rate "$rate" --senders 8 --duration "$duration" --regions 50 --log-level warn | tail -n 6 || echo "simulate did not deliver everything (see above)"
# Memory at the end of the send: the service and Redis (the dedup keys of
# the last INGEST_DEDUP_TTL, the features, the rate limits).
redis=$(grep -o 'msg="Redis started" addr=[0-9.:]*' "$data/dev.log" | head -1 | sed 's/.*addr=//')
echo "== memory after $duration at $rate events/s"
echo "service RSS: $(( $(ps -o rss= -p "$pid") / 1024 )) MiB"
if [ -n "$redis" ]; then
  echo "Redis: $(redis-cli -h "${redis%:*}" -p "${redis#*:}" info memory | grep -E '^used_memory_human' | tr -d '\r'), $(redis-cli -h "${redis%:*}" -p "${redis#*:}" dbsize | tr -d '\r') keys"
fi
wait "$wpid"
