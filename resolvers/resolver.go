// Package resolvers implements the GraphQL schema: thin resolvers that check
// input, call the domain services (quotes, rules) and map their answers to
// the API types; per-request dataloaders batch price look-ups; the error
// presenter gives every error an extensions.code.
package resolvers

import (
	"context"
	"time"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/live"
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

// Ingester takes events in; ingest.Intake implements it.
type Ingester interface {
	Ingest(ctx context.Context, client ingest.ClientID, events []ingest.Event) (ingest.Response, error)
}

// DemandReader reads demand aggregates; analytics.History implements it.
type DemandReader interface {
	DemandHistory(ctx context.Context, regionID string, from, to time.Time, g analytics.Granularity) ([]analytics.DemandPoint, error)
}

// FeatureReader reads a region's online features; features.Store implements it.
type FeatureReader interface {
	Get(ctx context.Context, regionID string) (features.Values, error)
}

// IngestionStatus is what ingestionStatus shows: the consumers' positions
// and the sink's health, assembled by the process that runs them.
type IngestionStatus struct {
	Partitions       []PartitionLag
	LateEvents       uint64
	BackfillEvents   uint64
	LastSinkError    string
	LastSinkErrorAt  time.Time
	SinkRowsInserted uint64
}

// PartitionLag is one consumer group's position on one partition.
type PartitionLag struct {
	Group         string
	Topic         string
	Partition     int
	NextOffset    int64
	HighWatermark int64
	Lag           int64
}

// Resolver is the root resolver; it holds the domain services.
type Resolver struct {
	Quotes       *quotes.Service
	Rules        RuleAdmin
	RuleHistory  RuleHistory
	Intake       Ingester
	Demand       DemandReader
	FeatureStore FeatureReader
	// Ingestion reports the consumers' status; nil shows none.
	Ingestion func(ctx context.Context) (IngestionStatus, error)
	// MaxFeatureAge is the age past which online features are reported stale
	// (default 5 minutes, the forecaster's limit).
	MaxFeatureAge time.Duration
	// Rollouts lists model versions and runs canary rollouts; nil: the
	// models and rollout fields answer UNAVAILABLE and null.
	Rollouts RolloutAdmin
	// Accuracy answers forecastAccuracy; nil: it answers UNAVAILABLE.
	Accuracy AccuracyReader
	// Experiments manages pricing experiments; nil: their fields answer UNAVAILABLE.
	ExperimentService ExperimentAdmin
	// Bookings records bookings; nil: book answers UNAVAILABLE.
	Bookings Booker
	// Live serves the subscriptions; nil: they answer UNAVAILABLE.
	Live *live.Hub
	// MaxBatch bounds the inputs of prices (default 100).
	MaxBatch int
}
