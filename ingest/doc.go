// Package ingest owns the way into Kafka: the topics and their creation, and
// the publisher that sends records (pricing decisions now; the event intake
// and the stream consumers build on it).
package ingest
