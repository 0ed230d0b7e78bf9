#!/usr/bin/env bash
# Cost of the price path (issue targets: ≤ 100 µs of server CPU per quote,
# price throughput ≥ 0.6 × { __typename }'s, p99 ≤ 5 ms at 1,000/s, RSS ≤
# 300 MB, every answered quote audited): starts the whole local stack
# (`surge dev`, broker in a process of its own), warms it, runs
# `surge loadtest --cost` (closed loop against { __typename }, then three
# open-loop runs at 1,000/s reading the server's CPU time from /proc), and
# counts the audit records the sink inserted into ClickHouse
# (surge_sink_rows_total{table="pricing_decisions"}) against the quotes answered.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. scripts/bench-stack.sh
start_stack

decisions() { curl -fsS "http://$addr/metrics" | awk '/^surge_sink_rows_total\{table="pricing_decisions"\}/{printf "%d", $2; f=1} END{if(!f) print 0}'; }
echo "== warm-up (500/s for 3 s)"
./bin/surge loadtest --url "http://$addr/graphql" --rate 500 --duration 3s >/dev/null
sleep 2
before=$(decisions)
out=$(./bin/surge loadtest --url "http://$addr/graphql" --cost --rate 1000 --duration 10s --pid "$pid" | tee /dev/stderr)
answered=$(echo "$out" | awk '/answered without error/{print $4}')
for _ in $(seq 1 60); do
  now=$(decisions)
  [ $((now - before)) -ge "$answered" ] && break
  sleep 1
done
echo "audit records in ClickHouse: $((now - before)) for $answered quotes answered (target: at least one per quote answered)"
