// Package ingest owns the way into Kafka: the event schema and its
// validation (event.go, validate.go), the intake behind POST /v1/events and
// ingestEvents (intake.go, http.go: validation, rate limits, two-phase dedup,
// synchronous produce with acks=all), the plausibility limits on supply
// (plausibility.go), the topics and their creation (topics.go), and the
// producers' configuration (writer.go). Its Go client is package
// intakeclient; the background publisher of the audit and exposure records
// is package publish.
package ingest
