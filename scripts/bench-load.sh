#!/usr/bin/env bash
# Load benchmark of the GraphQL price query over HTTP: starts the whole local
# stack (`surge dev`) in a temporary data directory, warms it, offers
# 1,000 requests/s, then steps up the rate to find the highest one with
# p99 ≤ 20 ms, and prints the server's peak RSS. Loopback only; bounded in
# time (about a minute); stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. scripts/bench-stack.sh
start_stack

echo "== warm-up (500/s for 3 s)"
./bin/surge loadtest --url "http://$addr/graphql" --rate 500 --duration 3s >/dev/null
echo "== price query at 1,000 requests/s for 10 s"
./bin/surge loadtest --url "http://$addr/graphql" --rate 1000 --duration 10s
echo "== highest rate with p99 ≤ 20 ms (5 s per step)"
./bin/surge loadtest --url "http://$addr/graphql" --find-max --duration 5s --pid "$pid"
