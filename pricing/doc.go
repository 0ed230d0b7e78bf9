// Package pricing owns turning a pricing rule, a demand forecast and the
// available supply into a surge multiplier, a price and the breakdown of
// factors that explains them.
//
// The engine is pure: no I/O, no clock, no randomness. Everything it depends
// on — the rule version, the forecast, the supply, the quote time and the
// previous smoothing state — is part of its Input, so Compute on a logged
// Input reproduces the logged Quote exactly. Persisting the returned State
// and passing it back as the next Input.Previous is the caller's job.
//
// Pipeline (all multiplier arithmetic in integer basis points, 1/10000):
//
//	base            1.0
//	demand_supply   raw − 1        raw = 1 + Sensitivity × max(0, utilisation − Threshold)
//	regulatory_cap  capped − raw   capped = clamp(raw, MinMultiplier, MaxMultiplier)
//	smoothing       smoothed − capped
//	rounding        final − smoothed
//
// The factor contributions add up exactly to the final multiplier, in basis
// points. See Compute for the treatment of missing or invalid signals.
package pricing

// EngineVersion names the semantics of Compute. Every audit record carries
// it: a record is recomputed bit for bit by an engine of the same version.
// Bump it with any change that gives some Input another Quote.
const EngineVersion = "2026.12.1"
