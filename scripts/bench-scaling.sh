#!/usr/bin/env bash
# bench-scaling.sh: the inputs of the capacity model in docs/scaling.md.
# Runs the production layout on this machine, each part a process of its own:
# Redis (append-only file, fsync every second), ClickHouse, the broker, the
# API (`surge dev` with RUN_CONSUMERS=false, i.e. `surge serve
# --consumers=false`) and one `surge consume`. It then drives two loads from
# outside clients, each below saturation, and reads every process's CPU time
# (utime+stime of all its threads, /proc/<pid>/stat) before and after:
#   price:  `surge loadtest` at $BENCH_SCALING_PRICE_RATE/s (default 1000) for
#           $BENCH_SCALING_PRICE_DURATION (20s), until every audit record is
#           in ClickHouse;
#   events: `surge simulate` at $BENCH_SCALING_EVENT_RATE/s (default 15000)
#           for $BENCH_SCALING_EVENT_DURATION (30s), until the sink has
#           inserted every accepted event.
# It prints CPU µs per quote and per event for each process: cores needed =
# rate × µs / 1e6, and ClickHouse's bytes per row. It first prints
# pricing.BenchmarkCompute as the machine's speed. The broker is kfake (one event loop, everything in memory):
# its figure is printed but is not a production Kafka's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The machine's speed of the day: the same VM type has measured twice as
# slow on some days, so the figures below scale with this one.
echo "== calibration: $(go test -run '^$' -bench 'Compute$' -benchtime 1s ./pricing/ | grep -m1 '^BenchmarkCompute' | awk '{print $1, $3, $4}') (500 ns/op on 2026-11-25)"
source scripts/bench-stack.sh

price_rate=${BENCH_SCALING_PRICE_RATE:-1000}
price_duration=${BENCH_SCALING_PRICE_DURATION:-20s}
event_rate=${BENCH_SCALING_EVENT_RATE:-15000}
event_duration=${BENCH_SCALING_EVENT_DURATION:-30s}
redis=${BENCH_REDIS_ADDR:-127.0.0.1:18379}
consume=${BENCH_CONSUME_ADDR:-127.0.0.1:18001}
tck=$(getconf CLK_TCK)

mkdir -p "$data/redis"
background redis-server --bind 127.0.0.1 --port "${redis#*:}" --dir "$data/redis" --save '' \
  --appendonly yes --appendfsync everysec >"$data/redis.log" 2>&1
wait_port "$redis"
redis_pid=${stack_pids[-1]}
STACK_ENV="REDIS_ADDR=$redis DEMO_FEATURES=false RUN_CONSUMERS=false" start_stack
broker_pid=${stack_pids[1]} # after Redis: start_stack starts the broker first
ch_pid=$(pgrep -f -- "--config-file=$data/clickhouse" | head -1 || true)
[ -n "$ch_pid" ] || ch_pid=$(pgrep -f -- "$data/clickhouse" | head -1)
ch_port=$(sed -n 's:.*<tcp_port>\([0-9]*\)</tcp_port>.*:\1:p' "$data/clickhouse/config.xml")
background env REDIS_ADDR="$redis" KAFKA_BROKERS="$kafka" CLICKHOUSE_ADDR="127.0.0.1:$ch_port" LOG_LEVEL=warn \
  ./bin/surge consume --listen "$consume" >"$data/consume.log" 2>&1
consume_pid=${stack_pids[-1]}
wait_port "$consume"

names=(api consume redis clickhouse broker)
pids=("$pid" "$consume_pid" "$redis_pid" "$ch_pid" "$broker_pid")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
snapshot() { local out=(); for p in "${pids[@]}"; do out+=("$(ticks "$p")"); done; echo "${out[@]}"; }
sink_rows() { curl -fsS "http://$consume/metrics" | awk -v t="$1" '$0 ~ "^surge_sink_rows_total\\{table=\""t"\"\\}" {printf "%d", $2; f=1} END{if(!f) print 0}'; }
accepted() { curl -fsS "http://$addr/metrics" | awk '/^surge_intake_events_total\{status="accepted"\}/{printf "%d", $2; f=1} END{if(!f) print 0}'; }
# wait_rows TABLE N: waits (at most 120 s) until the sink inserted N rows of TABLE.
wait_rows() {
  for _ in $(seq 1 240); do
    [ "$(sink_rows "$1")" -ge "$2" ] && return
    sleep 0.5
  done
  echo "the sink inserted $(sink_rows "$1") of $2 rows into $1" >&2
}
# report WHAT UNITS BEFORE...: prints each process's CPU µs per unit since BEFORE.
report() {
  local what=$1 units=$2; shift 2
  local before=("$@") after
  read -r -a after <<<"$(snapshot)"
  printf '%-10s %10s %12s\n' "$what" "CPU s" "µs per unit"
  local total=0
  for i in "${!names[@]}"; do
    local d=$((after[i] - before[i]))
    awk -v n="${names[i]}" -v d="$d" -v t="$tck" -v u="$units" 'BEGIN{printf "%-10s %10.2f %12.1f\n", n, d/t, d/t*1e6/u}'
    [ "${names[i]}" = broker ] || total=$((total + d))
  done
  awk -v d="$total" -v t="$tck" -v u="$units" 'BEGIN{printf "%-10s %10.2f %12.1f   (without the broker)\n", "total", d/t, d/t*1e6/u}'
}

echo "== warm-up: price at 500/s for 3 s"
./bin/surge loadtest --url "http://$addr/graphql" --rate 500 --duration 3s >/dev/null
sleep 2
echo "== price: $price_rate/s for $price_duration (API without consumers; audit records landed by surge consume)"
d0=$(sink_rows pricing_decisions)
read -r -a before <<<"$(snapshot)"
out=$(./bin/surge loadtest --url "http://$addr/graphql" --rate "$price_rate" --duration "$price_duration" | tee /dev/stderr)
answered=$(echo "$out" | awk '{for (i = 1; i < NF; i++) { if ($i == "sent") s = $(i+1); if ($i == "errors") e = $(i+1) }} END {print s - e}')
wait_rows pricing_decisions $((d0 + answered))
report quotes "$answered" "${before[@]}"

echo "== events: $event_rate/s for $event_duration (8 senders, 50 regions, batches of 1,000)"
e0=$(sink_rows events_raw)
a0=$(accepted)
read -r -a before <<<"$(snapshot)"
./bin/surge simulate --url "http://$addr/v1/events" --api-key-file "$data/ingest-api-key" --rate "$event_rate" \
  --senders 8 --duration "$event_duration" --regions 50 --log-level warn | tail -n 3
n=$(($(accepted) - a0))
wait_rows events_raw $((e0 + n))
report events "$n" "${before[@]}"

echo "== ClickHouse storage per row (active parts, compressed, as merged so far)"
ch_http=$(sed -n 's:.*<http_port>\([0-9]*\)</http_port>.*:\1:p' "$data/clickhouse/config.xml")
curl -sS "http://127.0.0.1:$ch_http/" --data-binary "SELECT table, sum(rows) AS total_rows, round(sum(data_compressed_bytes) / sum(rows), 1) AS compressed_bytes_per_row,
  round(sum(data_uncompressed_bytes) / sum(rows), 1) AS uncompressed_bytes_per_row
  FROM system.parts WHERE active AND database = 'surge' AND rows > 0 GROUP BY table ORDER BY table FORMAT PrettyCompactNoEscapes"
