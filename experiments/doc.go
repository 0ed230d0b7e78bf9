// Package experiments owns pricing experiments: their definition and
// lifecycle (draft → running → stopped → rolled out, stored as versions in
// ClickHouse table experiments and cached in process), the deterministic
// assignment of users to variants, the exposure log (Kafka topic
// experiments, at most once per user, experiment and experiment day), the
// results read back from ClickHouse and judged with package stats, and the
// roll-out of a winning strategy as a new pricing-rule version.
package experiments
