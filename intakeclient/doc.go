// Package intakeclient is the Go client of the event intake (POST
// /v1/events): it batches events (Client.Send, or a Stream with several
// requests in flight), resends what the intake did not take — the whole
// request on 429 and 503 without per-event results, a failed connection or
// another 5xx; only the events rejected rate_limited or in_flight when the
// answer carries per-event results, after Retry-After — and counts every
// outcome, with the request latency. It is how surge replay and surge
// simulate send, and what a producer in Go should use: eventIds make its
// resends safe, so it never gives up on an event while the intake may
// still take it.
package intakeclient
