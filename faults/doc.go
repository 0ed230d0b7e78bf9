// Package faults holds the fault-injection suite of the whole system (make
// test-faults; go test -tags faults ./faults/). It runs Redis, ClickHouse,
// the broker and the service as separate processes, puts them under price
// and event load from outside clients (a GraphQL client that retries a
// failed request, and intakeclient.Client, the careful event client), kills them
// with SIGKILL one at a time and then all at once, holds produce requests
// past their client's timeout (lost acknowledgements), and checks that
// every acknowledged event is counted exactly once in events_raw and in
// each materialized view. The figures go to docs/reliability.md.
package faults
