package training

import (
	"time"

	"github.com/surgeworks/surge/features"
)

// windowMinutes is the length of the window behind online features.
const windowMinutes = 15

// BuildDataset turns histories into training rows the way serving builds
// them. For each region and every stride-th minute t (from the first minute
// with a full 15-minute window), the row is schema.Vector of
// features.FromMinutes(the 15 minutes ending with t, seasonality at the end
// of t) at the end of minute t, once per horizon; the target is the total
// searches over the horizon minutes after t. Samples whose horizon runs past
// the history are skipped. The seasonality index is computed per region
// from its whole history (SeasonalityIndex). Rows are ordered by region,
// time, then horizon.
func BuildDataset(hist []RegionHistory, schema features.Schema, horizons []int, stride int) (X [][]float32, y []float32) {
	for _, h := range hist {
		season := SeasonalityIndex(h.Minutes)
		X, y = appendSamples(X, y, h.Minutes, &season, schema, horizons, stride, 0, len(h.Minutes))
	}
	return X, y
}

// appendSamples adds the samples of minutes[from:to] (windows may reach
// before from; targets stay before to).
func appendSamples(X [][]float32, y []float32, minutes []features.Minute, season *[168]float64,
	schema features.Schema, horizons []int, stride, from, to int) ([][]float32, []float32) {
	stride = max(1, stride)
	for t := max(from, windowMinutes-1); t < to; t += stride {
		window := minutes[t-windowMinutes+1 : t+1]
		end := minutes[t].Start.Add(time.Minute)
		online := features.FromMinutes(window, season[HourOfWeek(end)])
		for _, hz := range horizons {
			if hz <= 0 || t+hz >= to {
				continue
			}
			target := 0.0
			for _, m := range minutes[t+1 : t+hz+1] {
				target += m.Searches
			}
			X = append(X, schema.Vector(nil, online, end, hz))
			y = append(y, float32(target))
		}
	}
	return X, y
}
