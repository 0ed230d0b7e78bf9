// Package resolvers implements the GraphQL schema: thin resolvers that check
// input, call the domain services (quotes, rules) and map their answers to
// the API types; per-request dataloaders batch price look-ups; the error
// presenter gives every error an extensions.code.
package resolvers

import (
	"context"
	"time"

	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/rules"
)

// RuleAdmin reads and writes versioned pricing rules; rules.Cache implements it.
type RuleAdmin interface {
	Put(ctx context.Context, r pricing.Rule, actor string) (pricing.Rule, error)
	Get(regionID, productType string, at time.Time) (pricing.Rule, bool)
	Region(regionID string) (rules.Region, bool)
	Regions() []rules.Region
}

// RuleHistory lists every version of a region's rules; rules.Store implements it.
type RuleHistory interface {
	History(ctx context.Context, regionID string) ([]pricing.Rule, error)
}

// Resolver is the root resolver; it holds the domain services.
type Resolver struct {
	Quotes  *quotes.Service
	Rules   RuleAdmin
	History RuleHistory
	// MaxBatch bounds the inputs of prices (default 100).
	MaxBatch int
}
