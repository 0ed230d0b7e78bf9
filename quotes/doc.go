// Package quotes owns the price quote: it gathers a region's online features,
// smoothing state and cached forecast in one Redis round trip, asks the
// forecaster, applies the pricing rules through the pricing engine, and then —
// in the background, never delaying the answer — caches the quote for its
// validity and publishes the decision to the audit log so that any price can
// be recomputed later.
package quotes
