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

redis=${BENCH_REDIS_ADDR:-127.0.0.1:18379}
. scripts/bench-stack.sh
background redis-server --bind 127.0.0.1 --port "${redis#*:}" --save '' --appendonly no >"$data/redis.log" 2>&1
wait_port "$redis"
STACK_ENV="REDIS_ADDR=$redis" start_stack

url="http://$addr/graphql"
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
