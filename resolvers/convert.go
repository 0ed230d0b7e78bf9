package resolvers

import (
	"github.com/surgeworks/surge/graph/model"
	"github.com/surgeworks/surge/inference"
	ensemble "github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/quotes"
)

func toQuote(q quotes.Quote) *model.PriceQuote {
	out := &model.PriceQuote{
		QuoteID:                q.ID,
		RegionID:               q.RegionID,
		ProductType:            q.ProductType,
		Price:                  q.Price,
		Currency:               q.Currency,
		BasePrice:              q.BasePrice,
		SurgeMultiplier:        q.Multiplier,
		Factors:                toFactors(q.Factors),
		DemandForecast:         q.Forecast.Demand,
		ForecastHorizonMinutes: q.Forecast.HorizonMinutes,
		ForecastSource:         model.ForecastSource(q.Forecast.Source),
		ColdStart:              q.Forecast.ColdStart,
		RuleVersion:            int(q.RuleVersion),
		Degraded:               q.Degraded,
		Warnings:               nonNil(q.Warnings),
		TraceID:                q.TraceID,
		CreatedAt:              q.CreatedAt,
		ValidUntil:             q.ValidUntil,
	}
	if q.SupplyKnown {
		s := q.Supply
		out.Supply = &s
	}
	if v := q.Forecast.ModelVersion; v != "" {
		out.ModelVersion = &v
	}
	out.Experiments = toAssignments(q.Experiments)
	if len(out.Experiments) > 0 {
		out.Experiment = out.Experiments[0]
	}
	return out
}

func toFactors(fs []pricing.Factor) []*model.Factor {
	out := make([]*model.Factor, len(fs))
	for i, f := range fs {
		out[i] = &model.Factor{Name: f.Name, Contribution: f.Contribution, Description: f.Description}
	}
	return out
}

func toForecast(f inference.Forecast) *model.Forecast {
	out := &model.Forecast{
		RegionID:       f.RegionID,
		Demand:         f.Demand,
		Lower:          f.Lower,
		Upper:          f.Upper,
		HorizonMinutes: f.HorizonMinutes,
		Source:         model.ForecastSource(f.Source),
		ColdStart:      f.ColdStart,
		Degraded:       f.Degraded(),
		Warnings:       nonNil(f.Warnings),
		GeneratedAt:    f.GeneratedAt,
	}
	if f.ModelVersion != "" {
		v := f.ModelVersion
		out.ModelVersion = &v
	}
	out.TrainingData = trainingData(f.TrainingData)
	return out
}

// trainingData maps the model's data source (ensemble.DataGenerated,
// DataReal) to the enum.
func trainingData(s string) *model.TrainingData {
	var v model.TrainingData
	switch s {
	case ensemble.DataGenerated:
		v = model.TrainingDataGenerated
	case ensemble.DataReal:
		v = model.TrainingDataReal
	default:
		return nil
	}
	return &v
}

func toRule(r pricing.Rule) *model.PricingRule {
	return &model.PricingRule{
		RegionID:         r.RegionID,
		RegionName:       r.RegionName,
		ProductType:      r.ProductType,
		Currency:         r.Currency,
		Version:          int(r.Version),
		EffectiveFrom:    r.EffectiveFrom,
		BasePrice:        r.BasePrice,
		MinMultiplier:    r.MinMultiplier,
		MaxMultiplier:    r.MaxMultiplier,
		MaxStepPerMinute: r.MaxStepPerMinute,
		Threshold:        r.Threshold,
		Sensitivity:      r.Sensitivity,
		MultiplierStep:   r.MultiplierStep,
		PriceStep:        r.PriceStep,
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func toQuoteAudit(a quotes.Audit) (*model.QuoteAudit, error) {
	record, err := a.RecordJSON()
	if err != nil {
		return nil, err
	}
	out := &model.QuoteAudit{
		QuoteID: a.QuoteID, At: a.At, RegionID: a.RegionID, ProductType: a.ProductType, Currency: a.Currency,
		SurgeMultiplier: a.Multiplier, Price: a.Price, RuleVersion: int(a.RuleVersion),
		EngineVersion: a.EngineVersion, CurrentEngineVersion: pricing.EngineVersion, Degraded: a.Degraded,
		Source: model.AuditSourceCache, Record: string(record), RecordFormat: string(a.Format),
		RecomputedMultiplier: a.Recomputed.Multiplier, RecomputedPrice: a.Recomputed.Price, Identical: a.Identical,
	}
	if a.Source == quotes.AuditFromClickHouse {
		out.Source = model.AuditSourceClickhouse
	}
	if a.ModelVersion != "" {
		out.ModelVersion = &a.ModelVersion
	}
	return out, nil
}
