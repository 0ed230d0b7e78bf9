package features

import "time"

// Minute is one closed minute of a region's activity: the unit of the offline
// features (ClickHouse demand_minute) and of the streaming windows.
type Minute struct {
	Start    time.Time
	Searches float64
	Bookings float64
	Cancels  float64
	Supply   float64 // latest available supply in the minute
	Weather  float64 // latest external signals in the minute
	Traffic  float64
	Event    float64
}

// FromMinutes computes the online features as of the end of the last minute
// of window, which holds up to 15 consecutive closed minutes, oldest first.
// seasonality is the region's hour-of-week index at that time (1 = average).
// The streaming consumer and the training pipeline both use it.
func FromMinutes(window []Minute, seasonality float64) Online {
	n := len(window)
	if n == 0 {
		return Online{Seasonality: seasonality}
	}
	last := window[n-1]
	mean := func(k int, get func(Minute) float64) float64 {
		if k > n {
			k = n
		}
		s := 0.0
		for _, m := range window[n-k:] {
			s += get(m)
		}
		return s / float64(k)
	}
	searches := func(m Minute) float64 { return m.Searches }
	bookings := func(m Minute) float64 { return m.Bookings }
	s5 := mean(5, searches)
	trend := 1.0
	if n > 5 {
		prev := 0.0
		for _, m := range window[max(0, n-15) : n-5] {
			prev += m.Searches
		}
		prev /= float64(min(10, n-5))
		if prev > 0 {
			trend = s5 / prev
		}
	}
	ratio := 1.0
	if s5 > 0 {
		ratio = last.Supply / s5
	}
	return Online{
		Searches1m:      last.Searches,
		Bookings1m:      last.Bookings,
		Cancels1m:       last.Cancels,
		Searches5m:      s5,
		Bookings5m:      mean(5, bookings),
		Searches15m:     mean(15, searches),
		Bookings15m:     mean(15, bookings),
		Supply:          last.Supply,
		DemandTrend:     trend,
		Seasonality:     seasonality,
		SupplyDemand:    ratio,
		WeatherSeverity: last.Weather,
		TrafficIndex:    last.Traffic,
		LocalEvent:      last.Event,
	}
}
