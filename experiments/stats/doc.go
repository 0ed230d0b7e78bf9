// Package stats is the statistics engine of pricing A/B experiments. It owns
// the inference made from the sufficient statistics (counts, sums, sums of
// squares and cross products per variant) that the experiments package reads
// from ClickHouse: per-variant means and variances, the CUPED covariate
// adjustment, fixed-horizon tests (pooled two-proportion z-test, Welch's
// t-test) and confidence intervals for the absolute and relative lift, the
// always-valid mSPRT p-value and confidence sequence that make daily peeking
// safe, a Bayesian chance to beat control and expected loss, multiple
// comparison adjustments (Holm, Benjamini–Hochberg), the sample-ratio
// mismatch check, the minimum detectable effect and winsorization.
//
// The randomisation unit is the user; a metric is either binomial (y ∈ {0,1}
// per user, e.g. conversion) or continuous (e.g. revenue per exposed user,
// already winsorized by the caller). Everything here is a pure function of
// its arguments: no I/O, no clock, no global state.
//
// No function returns NaN or ±Inf (GraphQL cannot serialise them):
// degenerate inputs (no units, fewer than two units, zero variance, a control
// mean of 0) give the documented finite fallbacks, and a p-value of 1 when
// there is no evidence.
package stats
