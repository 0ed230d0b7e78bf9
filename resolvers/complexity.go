package resolvers

import (
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/surgeworks/surge/graph"
	"github.com/surgeworks/surge/graph/model"
)

// NewSchema is the executable schema over res, with its directives
// (@hasRole) and the costs of its list fields.
func NewSchema(res *Resolver) graphql.ExecutableSchema {
	return graph.NewExecutableSchema(graph.Config{Resolvers: res, Directives: graph.DirectiveRoot{HasRole: HasRole}, Complexity: complexity()})
}

// Expected sizes of the lists whose length no argument gives.
const (
	listRegions     = 10 // regions priced
	listProducts    = 3  // products per region (currentPrices)
	listVersions    = 10 // models, experiments, accuracy rows
	historyPerPoint = 10 // demandHistory: a point costs a tenth of its fields (rows are cheap)
)

// complexity prices list fields by their length (the query complexity
// limit then bounds work, not only fields): a prices call costs its
// selection once per input, a region list once per region, history by the
// number of buckets asked.
func complexity() graph.ComplexityRoot {
	var c graph.ComplexityRoot
	c.Query.Prices = func(child int, inputs []*model.PriceInput) int { return 1 + child*max(1, len(inputs)) }
	c.Query.Regions = func(child int) int { return 1 + child*listRegions }
	c.Region.CurrentPrices = func(child int) int { return 1 + child*listProducts }
	c.Query.Models = func(child int) int { return 1 + child*listVersions }
	c.Query.Experiments = func(child int, _ *model.ExperimentStatus) int { return 1 + child*listVersions }
	c.Query.ForecastAccuracy = func(child int, _, _ *string, _ *int) int { return 1 + child*listVersions }
	c.Query.DemandHistory = func(child int, _ string, from, to time.Time, g *model.Granularity) int {
		step := time.Minute
		if g != nil && *g == model.GranularityHour {
			step = time.Hour
		}
		points := int(min(to.Sub(from)/step, 100_000))
		return 1 + child*max(1, points/historyPerPoint)
	}
	return c
}
