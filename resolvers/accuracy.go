package resolvers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/surgeworks/surge/graph/model"
	"github.com/surgeworks/surge/monitoring"
	"github.com/surgeworks/surge/quotes"
)

// AccuracyReader computes forecast accuracy; monitoring.Accuracy implements it.
type AccuracyReader interface {
	Compute(ctx context.Context, q monitoring.Query) ([]monitoring.Result, error)
}

// Bounds of forecastAccuracy's windowHours (the default is in the schema).
const (
	minAccuracyWindowHours = 1
	maxAccuracyWindowHours = 720
)

// errNoAccuracy is returned when the process monitors no forecast accuracy.
var errNoAccuracy = errors.New("forecast accuracy is not monitored in this process")

// forecastAccuracy checks the arguments of the forecastAccuracy query and
// maps the monitor's results.
func (r *Resolver) forecastAccuracy(ctx context.Context, regionID, modelVersion *string, windowHours *int) ([]*model.ForecastAccuracy, error) {
	var q monitoring.Query
	if regionID != nil {
		if err := quotes.ValidateID("regionId", *regionID); err != nil {
			return nil, err
		}
		q.RegionID = *regionID
	}
	if modelVersion != nil {
		if err := quotes.ValidateID("modelVersion", *modelVersion); err != nil {
			return nil, err
		}
		q.ModelVersion = *modelVersion
	}
	hours := 24
	if windowHours != nil {
		hours = *windowHours
	}
	if hours < minAccuracyWindowHours || hours > maxAccuracyWindowHours {
		return nil, &quotes.InputError{Field: "windowHours",
			Msg: fmt.Sprintf("must be between %d and %d, got %d", minAccuracyWindowHours, maxAccuracyWindowHours, hours),
			Err: quotes.ErrInvalidInput}
	}
	if r.Accuracy == nil {
		return nil, errNoAccuracy
	}
	q.Since = time.Now().Add(-time.Duration(hours) * time.Hour)
	results, err := r.Accuracy.Compute(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]*model.ForecastAccuracy, len(results))
	for i, res := range results {
		out[i] = &model.ForecastAccuracy{
			Region: res.RegionID, ModelVersion: res.ModelVersion,
			Points: res.N, MapePoints: res.NMAPE,
			Mape: finite(res.MAPE), Wape: finite(res.WAPE), Bias: finite(res.Bias),
			Alert: res.Alert, Threshold: res.Threshold,
		}
	}
	return out, nil
}

// finite returns a pointer to v, or nil when v is NaN or infinite.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}
