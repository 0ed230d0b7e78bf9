# bench-stack.sh: sourced by the benchmarks that run the whole local stack as
# separate processes (bench-load.sh, bench-live.sh, bench-ingest.sh). It builds bin/surge,
# makes a temporary data directory, starts the Kafka broker in a process of
# its own (so that the RSS measured is the server's alone: kfake keeps every
# record in memory) and, with start_stack, `surge dev` serving on $addr, started
# twice: the first start trains the bootstrap model, the second is the
# serving process the benchmark measures ($pid). Everything it started stops
# on exit. Extra environment for `surge dev`: STACK_ENV (e.g. REDIS_ADDR=…).

go build -o bin/surge ./cmd/surge
data=$(mktemp -d)
addr=${BENCH_LISTEN_ADDR:-127.0.0.1:18000}
kafka=${BENCH_KAFKA_ADDR:-127.0.0.1:18092}
pid=
stack_pids=()

# wait_port waits (at most 10 s) until something listens on host:port.
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}

# background runs a command in the background, stopped on exit.
background() {
  "$@" &
  stack_pids+=($!)
}

stop_stack() {
  for p in "$pid" "${stack_pids[@]}"; do
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$data"
}
trap stop_stack EXIT

start_dev() {
  env ${STACK_ENV:-} KAFKA_BROKERS="$kafka" RATE_LIMIT_RPS=1000000 LOG_LEVEL=warn \
    ./bin/surge dev --data-dir "$data" --listen "$addr" >>"$data/dev.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do
    if curl -fsS "http://$addr/ready" >/dev/null 2>&1; then return; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$data/dev.log"; echo "surge dev exited" >&2; exit 1; fi
    sleep 0.5
  done
  curl -fsS "http://$addr/ready" >/dev/null
}

start_stack() {
  background env LOG_LEVEL=warn ./bin/surge broker --data-dir "$data" --addr "$kafka" >"$data/broker.log" 2>&1
  wait_port "$kafka"
  start_dev
  kill -TERM "$pid"; wait "$pid" || true
  start_dev
  echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
}
