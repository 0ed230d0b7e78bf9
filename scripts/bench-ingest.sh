#!/usr/bin/env bash
# End-to-end ingestion benchmark: starts the whole local stack (the Kafka
# broker in a process of its own, Redis with its append-only file as `surge
# dev` runs it, on a known port) with the stream consumers, sends synthetic
# traffic over HTTP with `surge simulate` (batches of 1,000, 8 senders, one
# trusted API key) and measures with `surge watch-ingest`: events accepted/s,
# consumer lag, ClickHouse rows/s and freshness (accepted → Redis features);
# at the end of the send, the service's RSS and Redis's memory.
# BENCH_INGEST_RATE (default 50000) and BENCH_INGEST_DURATION (default 30s);
# BENCH_PPROF_ADDR serves pprof from the service. Loopback only; stops
# everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-stack.sh

rate=${BENCH_INGEST_RATE:-50000}
duration=${BENCH_INGEST_DURATION:-30s}
redis=${BENCH_REDIS_ADDR:-127.0.0.1:18379}
mkdir -p "$data/redis"
background redis-server --bind 127.0.0.1 --port "${redis#*:}" --dir "$data/redis" --save '' \
  --appendonly yes --appendfsync everysec >"$data/redis.log" 2>&1
wait_port "$redis"
STACK_ENV="REDIS_ADDR=$redis DEMO_FEATURES=false PPROF_ADDR=${BENCH_PPROF_ADDR:-}" start_stack

echo "== simulate --rate $rate for $duration, measured by watch-ingest"
./bin/surge watch-ingest --url "http://$addr" --duration "$duration" --drain 60s &
wpid=$!
./bin/surge simulate --url "http://$addr/v1/events" --api-key-file "$data/ingest-api-key" --rate "$rate" --senders 8 --duration "$duration" --regions 50 --log-level warn | tail -n 6 || echo "simulate did not deliver everything (see above)"
echo "== memory after $duration at $rate events/s"
echo "service RSS: $(( $(ps -o rss= -p "$pid") / 1024 )) MiB"
echo "Redis: $(redis-cli -h "${redis%:*}" -p "${redis#*:}" info memory | grep -E '^used_memory_human' | tr -d '\r'), $(redis-cli -h "${redis%:*}" -p "${redis#*:}" dbsize | tr -d '\r') keys"
wait "$wpid"
