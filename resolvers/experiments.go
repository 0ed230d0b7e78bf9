package resolvers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/graph-gophers/dataloader/v7"

	"github.com/surgeworks/surge/bookings"
	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/graph/model"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/quotes"
)

// ExperimentAdmin manages experiments and reads their results;
// experiments.Service implements it.
type ExperimentAdmin interface {
	List() []experiments.Experiment
	Get(id string) (experiments.Experiment, bool)
	History(ctx context.Context, id string) ([]experiments.Experiment, error)
	Create(ctx context.Context, e experiments.Experiment, actor string) (experiments.Experiment, error)
	Start(ctx context.Context, id, actor string) (experiments.Experiment, error)
	Stop(ctx context.Context, id, reason, actor string) (experiments.Experiment, error)
	RollOut(ctx context.Context, id, variant, actor string) (experiments.Experiment, error)
	Results(ctx context.Context, ids []string) ([]experiments.Results, error)
	RefreshResults(ctx context.Context, id string) error
}

// Booker records bookings; bookings.Service implements it.
type Booker interface {
	Book(ctx context.Context, client ingest.ClientID, in bookings.Input) (bookings.Booking, error)
}

var (
	errNoExperiments = errors.New("experiments are not available on this server")
	errNoBookings    = errors.New("bookings are not available on this server")
)

// resultsLoader batches the results of the experiments of one request into
// one ClickHouse query.
func resultsLoader(svc ExperimentAdmin) *dataloader.Loader[string, experiments.Results] {
	batch := func(ctx context.Context, ids []string) []*dataloader.Result[experiments.Results] {
		out := make([]*dataloader.Result[experiments.Results], len(ids))
		res, err := svc.Results(ctx, ids)
		for i := range ids {
			if err != nil {
				out[i] = &dataloader.Result[experiments.Results]{Error: err}
			} else {
				out[i] = &dataloader.Result[experiments.Results]{Data: res[i]}
			}
		}
		return out
	}
	return dataloader.NewBatchedLoader(batch,
		dataloader.WithWait[string, experiments.Results](LoaderWait),
		dataloader.WithBatchCapacity[string, experiments.Results](100),
		dataloader.WithCache[string, experiments.Results](&dataloader.NoCache[string, experiments.Results]{}))
}

// loadResults reads an experiment's results through the request's loader.
func (r *Resolver) loadResults(ctx context.Context, id string) (*model.ExperimentResults, error) {
	if r.ExperimentService == nil {
		return nil, errNoExperiments
	}
	if _, ok := r.ExperimentService.Get(id); !ok {
		return nil, experimentNotFound(id)
	}
	var res experiments.Results
	var err error
	if l := loadersFrom(ctx); l != nil && l.results != nil {
		res, err = l.results.Load(ctx, id)()
	} else {
		var rs []experiments.Results
		if rs, err = r.ExperimentService.Results(ctx, []string{id}); err == nil {
			res = rs[0]
		}
	}
	if err != nil {
		return nil, err
	}
	return toResults(res), nil
}

// refreshResults computes a new results snapshot of one experiment.
func (r *Resolver) refreshResults(ctx context.Context, id string) error {
	if r.ExperimentService == nil {
		return errNoExperiments
	}
	return r.ExperimentService.RefreshResults(ctx, id)
}

func experimentNotFound(id string) error {
	return fmt.Errorf("%w: %q", experiments.ErrNotFound, id)
}

func fromExperimentInput(in model.CreateExperimentInput) experiments.Experiment {
	e := experiments.Experiment{
		ID: in.ID, Hypothesis: in.Hypothesis, Layer: deref(in.Layer), Salt: deref(in.Salt),
		Regions: in.Regions, Products: in.Products,
	}
	for _, v := range in.Variants {
		ev := experiments.Variant{Name: v.Name, Weight: v.Weight}
		if s := v.Strategy; s != nil {
			ev.Strategy = experiments.Strategy{MinMultiplier: s.MinMultiplier, MaxMultiplier: s.MaxMultiplier,
				Sensitivity: s.Sensitivity, Threshold: s.Threshold}
			if s.BasePriceAdjustmentPercent != nil {
				ev.Strategy.BasePriceAdjustmentPercent = *s.BasePriceAdjustmentPercent
			}
		}
		e.Variants = append(e.Variants, ev)
	}
	if in.PrimaryMetric != nil {
		e.PrimaryMetric = experiments.Metric(*in.PrimaryMetric)
	}
	if in.Guardrails != nil {
		e.Guardrails = make([]experiments.Metric, 0, len(in.Guardrails))
		for _, g := range in.Guardrails {
			e.Guardrails = append(e.Guardrails, experiments.Metric(g))
		}
	}
	e.MinDays, e.MaxDays, e.PrePeriodDays = derefF(in.MinDays), derefF(in.MaxDays), derefF(in.PrePeriodDays)
	if in.MinSamplePerVariant != nil {
		e.MinSamplePerVariant = *in.MinSamplePerVariant
	}
	return e
}

func derefF(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}

func toExperiment(e experiments.Experiment) *model.Experiment {
	out := &model.Experiment{
		ID: e.ID, Hypothesis: e.Hypothesis, Layer: e.Layer,
		Regions: nonNil(e.Regions), Products: nonNil(e.Products),
		PrimaryMetric: model.ExperimentMetric(e.PrimaryMetric),
		MinDays:       e.MinDays, MaxDays: e.MaxDays, MinSamplePerVariant: e.MinSamplePerVariant,
		PrePeriodDays: e.PrePeriodDays, DayLengthSeconds: int(e.DayLength / time.Second),
		Status: model.ExperimentStatus(e.Status), CreatedAt: e.CreatedAt,
		StartedAt: timePtr(e.StartedAt), StoppedAt: timePtr(e.StoppedAt),
		RuleVersions: nonNil(e.RuleVersions), Version: int(e.Version), UpdatedAt: e.UpdatedAt, UpdatedBy: e.UpdatedBy,
	}
	for i, v := range e.Variants {
		out.Variants = append(out.Variants, &model.ExperimentVariant{Name: v.Name, Weight: v.Weight, Control: i == 0,
			Strategy: &model.PricingStrategy{MinMultiplier: v.Strategy.MinMultiplier, MaxMultiplier: v.Strategy.MaxMultiplier,
				Sensitivity: v.Strategy.Sensitivity, Threshold: v.Strategy.Threshold,
				BasePriceAdjustmentPercent: v.Strategy.BasePriceAdjustmentPercent}})
	}
	out.Guardrails = []model.ExperimentMetric{}
	for _, g := range e.Guardrails {
		out.Guardrails = append(out.Guardrails, model.ExperimentMetric(g))
	}
	if e.Winner != "" {
		out.Winner = &e.Winner
	}
	if e.Note != "" {
		out.Note = &e.Note
	}
	return out
}

// num keeps NaN and ±Inf out of the answer (JSON cannot carry them).
func num(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

func toInterval(i [2]float64) *model.Interval {
	return &model.Interval{Lower: num(i[0]), Upper: num(i[1])}
}

func toEstimate(e experiments.Estimate) *model.Estimate {
	return &model.Estimate{Value: num(e.Value), StandardError: num(e.StdErr)}
}

func toResults(r experiments.Results) *model.ExperimentResults {
	out := &model.ExperimentResults{
		ExperimentID: r.ExperimentID, Status: model.ExperimentStatus(r.Status), Verdict: model.Verdict(r.Verdict),
		VerdictReason: r.VerdictReason, DaysElapsed: r.DaysElapsed, MinDays: r.MinDays, MaxDays: r.MaxDays, Alpha: r.Alpha,
		SampleRatio: &model.SampleRatioCheck{ChiSquare: num(r.SRM.ChiSquare), PValue: num(r.SRM.PValue), Mismatch: r.SRM.Mismatch},
		Variants:    []*model.VariantResult{}, Metrics: []*model.MetricResult{}, Daily: []*model.ExperimentDay{},
		ComputedAt: r.ComputedAt,
	}
	if r.Winner != "" {
		out.Winner = &r.Winner
	}
	if r.RevenueCap > 0 {
		c := r.RevenueCap
		out.RevenueCap = &c
	}
	for _, v := range r.Variants {
		out.Variants = append(out.Variants, &model.VariantResult{
			Name: v.Name, Weight: v.Weight, Control: v.Control, Users: int(v.Users), ObservedShare: num(v.ObservedShare),
			ConvertedUsers: int(v.ConvertedUsers), Conversions: int(v.Conversions), CancelledUsers: int(v.CancelledUsers),
			Cancellations: int(v.Cancellations),
			Revenue:       num(v.Revenue), CappedRevenue: num(v.CappedRevenue),
			ConversionRate: toEstimate(v.ConversionRate), RevenuePerUser: toEstimate(v.RevenuePerUser),
			CancellationRate: toEstimate(v.CancellationRate), PrePeriodUsers: int(v.PrePeriodUsers),
		})
	}
	for _, m := range r.Metrics {
		mr := &model.MetricResult{Metric: model.ExperimentMetric(m.Metric), Guardrail: m.Guardrail, Comparisons: []*model.VariantComparison{}}
		for _, c := range m.Comparisons {
			mr.Comparisons = append(mr.Comparisons, &model.VariantComparison{
				Variant: c.Variant, ControlValue: num(c.ControlMean), TreatmentValue: num(c.TreatmentMean),
				AbsoluteLift: num(c.AbsLift), AbsoluteInterval: toInterval([2]float64{c.AbsCI.Lower, c.AbsCI.Upper}),
				RelativeLift: num(c.RelLift), RelativeInterval: toInterval([2]float64{c.RelCI.Lower, c.RelCI.Upper}),
				PValue: num(c.PValue), SequentialPValue: num(c.SequentialPValue),
				SequentialInterval: toInterval([2]float64{c.SequentialCI.Lower, c.SequentialCI.Upper}),
				AdjustedPValue:     num(c.AdjustedPValue), Significant: c.Significant, Better: c.Better,
				ChanceToBeatControl: num(c.ChanceToBeat), ExpectedLoss: num(c.ExpectedLoss),
				Cuped: c.CUPED, VarianceReduction: num(c.VarianceReduction), MinimumDetectableEffect: num(c.MDE),
			})
		}
		out.Metrics = append(out.Metrics, mr)
	}
	for _, d := range r.Daily {
		out.Daily = append(out.Daily, &model.ExperimentDay{Day: d.Day, Start: d.Start, Variant: d.Variant,
			Exposures: int(d.Exposures), Conversions: int(d.Conversions), Cancels: int(d.Cancels), Revenue: num(d.Revenue)})
	}
	return out
}

func toAssignments(refs []quotes.ExperimentRef) []*model.ExperimentAssignment {
	out := make([]*model.ExperimentAssignment, 0, len(refs))
	for _, x := range refs {
		out = append(out, &model.ExperimentAssignment{ID: x.ID, Variant: x.Variant})
	}
	return out
}

func toBooking(b bookings.Booking) *model.Booking {
	return &model.Booking{BookingID: b.BookingID, QuoteID: b.QuoteID, Amount: b.Amount, Currency: b.Currency,
		RegionID: b.RegionID, ProductType: b.ProductType, Experiments: toAssignments(b.Experiments),
		BookedAt: b.BookedAt, Duplicate: b.Duplicate}
}
