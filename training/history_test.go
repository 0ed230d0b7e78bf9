package training

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
)

func TestGenerateHistoryShape(t *testing.T) {
	start := time.Date(2026, 2, 2, 10, 30, 45, 0, time.FixedZone("x", 3600))
	hist := GenerateHistory(HistoryOptions{Days: 2, Start: start, Seed: 1})
	if len(hist) != len(DefaultRegions) {
		t.Fatalf("%d regions, want %d", len(hist), len(DefaultRegions))
	}
	first := start.UTC().Truncate(time.Minute)
	for _, h := range hist {
		if len(h.Minutes) != 2*24*60 {
			t.Fatalf("%s: %d minutes", h.Region.ID, len(h.Minutes))
		}
		for i, m := range h.Minutes {
			if want := first.Add(time.Duration(i) * time.Minute); !m.Start.Equal(want) || m.Start.Location() != time.UTC {
				t.Fatalf("%s minute %d starts %v, want %v UTC", h.Region.ID, i, m.Start, want)
			}
			if m.Searches < 0 || m.Bookings > m.Searches || m.Cancels > m.Bookings || m.Supply < 0 ||
				m.Weather < 0 || m.Weather > 1 || m.Traffic < 0 || m.Traffic > 1 || (m.Event != 0 && m.Event != 1) {
				t.Fatalf("%s minute %d out of range: %+v", h.Region.ID, i, m)
			}
			if m.Searches != math.Trunc(m.Searches) {
				t.Fatalf("searches are counts, got %v", m.Searches)
			}
		}
	}
}

func TestGenerateHistoryDeterministic(t *testing.T) {
	a := GenerateHistory(HistoryOptions{Days: 3, Seed: 5})
	b := GenerateHistory(HistoryOptions{Days: 3, Seed: 5})
	c := GenerateHistory(HistoryOptions{Days: 3, Seed: 6})
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different histories")
	}
	if reflect.DeepEqual(a[0].Minutes, c[0].Minutes) {
		t.Fatalf("different seeds, same history")
	}
	// Each region has its own stream: the set of regions does not change it.
	only := GenerateHistory(HistoryOptions{Days: 3, Seed: 5, Regions: []RegionSpec{DefaultRegions[3]}})
	if !reflect.DeepEqual(only[0], a[3]) {
		t.Fatalf("a region's history depends on the other regions")
	}
}

// meanWhere averages searches over the minutes where keep is true.
func meanWhere(ms []features.Minute, keep func(i int, m features.Minute) bool) float64 {
	s, n := 0.0, 0
	for i, m := range ms {
		if keep(i, m) {
			s += m.Searches
			n++
		}
	}
	return s / float64(max(n, 1))
}

func TestGenerateHistoryPatterns(t *testing.T) {
	hist := GenerateHistory(HistoryOptions{Days: 28, Seed: 2, Regions: []RegionSpec{
		{ID: "big", BaseRate: 80, UTCShift: 0},
		{ID: "small", BaseRate: 20, UTCShift: 0},
	}})
	big, small := hist[0].Minutes, hist[1].Minutes
	all := func(int, features.Minute) bool { return true }
	weekday := func(m features.Minute) bool { d := m.Start.Weekday(); return d != time.Saturday && d != time.Sunday }

	t.Run("regional base rates", func(t *testing.T) {
		if b, s := meanWhere(big, all), meanWhere(small, all); b < 3*s {
			t.Errorf("big region mean %.1f, small %.1f: want about 4×", b, s)
		}
	})
	t.Run("daily seasonality", func(t *testing.T) {
		peak := meanWhere(big, func(_ int, m features.Minute) bool { return weekday(m) && m.Start.Hour() == 18 })
		night := meanWhere(big, func(_ int, m features.Minute) bool { return weekday(m) && m.Start.Hour() == 3 })
		if peak < 3*night {
			t.Errorf("weekday 18h mean %.1f, 3h mean %.1f: want a strong daily cycle", peak, night)
		}
	})
	t.Run("weekly seasonality", func(t *testing.T) {
		fri := meanWhere(big, func(_ int, m features.Minute) bool { return m.Start.Weekday() == time.Friday })
		sun := meanWhere(big, func(_ int, m features.Minute) bool { return m.Start.Weekday() == time.Sunday })
		if fri < 1.2*sun {
			t.Errorf("Friday mean %.1f, Sunday %.1f: want Friday clearly busier", fri, sun)
		}
	})
	t.Run("signals raise demand", func(t *testing.T) {
		for _, h := range hist {
			season := SeasonalityIndex(h.Minutes)
			mean := meanWhere(h.Minutes, all)
			// Demand relative to the usual level at that hour of week.
			rel := func(keep func(m features.Minute) bool) float64 {
				s, n := 0.0, 0
				for _, m := range h.Minutes {
					if keep(m) {
						s += m.Searches / (season[HourOfWeek(m.Start)] * mean)
						n++
					}
				}
				return s / float64(max(n, 1))
			}
			calm := rel(func(m features.Minute) bool { return m.Event == 0 && m.Weather == 0 })
			event := rel(func(m features.Minute) bool { return m.Event == 1 })
			storm := rel(func(m features.Minute) bool { return m.Weather > 0.5 })
			if event < 1.1*calm || storm < 1.1*calm {
				t.Errorf("%s: relative demand calm %.2f, events %.2f, bad weather %.2f", h.Region.ID, calm, event, storm)
			}
		}
	})
	t.Run("supply follows demand with a lag", func(t *testing.T) {
		// Supply correlates better with past searches than with future ones.
		const lag = 15
		corr := func(shift int) float64 {
			var xs, ys []float64
			for i := lag; i < len(big)-lag; i++ {
				xs = append(xs, big[i+shift].Searches)
				ys = append(ys, big[i].Supply)
			}
			return pearson(xs, ys)
		}
		past, future := corr(-lag), corr(lag)
		if past <= future || past < 0.8 {
			t.Errorf("corr(supply, searches 15 min before) %.3f, after %.3f", past, future)
		}
	})
}

func pearson(x, y []float64) float64 {
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(len(x))
	my /= float64(len(y))
	var sxy, sxx, syy float64
	for i := range x {
		sxy += (x[i] - mx) * (y[i] - my)
		sxx += (x[i] - mx) * (x[i] - mx)
		syy += (y[i] - my) * (y[i] - my)
	}
	return sxy / math.Sqrt(sxx*syy)
}

func TestSamplers(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 40000
	tests := []struct {
		name           string
		draw           func() int
		mean, variance float64
	}{
		{"poisson small", func() int { return poisson(rng, 3.5) }, 3.5, 3.5},
		{"poisson large", func() int { return poisson(rng, 80) }, 80, 80},
		{"poisson zero", func() int { return poisson(rng, 0) }, 0, 0},
		{"binomial small", func() int { return binomial(rng, 40, 0.1) }, 4, 3.6},
		{"binomial large", func() int { return binomial(rng, 300, 0.35) }, 105, 68.25},
		{"binomial certain", func() int { return binomial(rng, 7, 1) }, 7, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s, ss float64
			for range n {
				v := float64(tt.draw())
				s += v
				ss += v * v
			}
			mean := s / n
			variance := ss/n - mean*mean
			if math.Abs(mean-tt.mean) > 0.02*tt.mean+1e-9 || math.Abs(variance-tt.variance) > 0.06*tt.variance+1e-9 {
				t.Errorf("mean %.3f variance %.3f, want %.3f and %.3f", mean, variance, tt.mean, tt.variance)
			}
		})
	}
}

func TestHourOfWeek(t *testing.T) {
	tests := []struct {
		t    time.Time
		want int
	}{
		{time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC), 0},                    // Sunday
		{time.Date(2026, 1, 5, 13, 59, 0, 0, time.UTC), 37},                 // Monday 13h
		{time.Date(2026, 1, 10, 23, 30, 0, 0, time.UTC), 167},               // Saturday 23h
		{time.Date(2026, 1, 5, 1, 0, 0, 0, time.FixedZone("+2", 7200)), 23}, // Sunday 23h UTC
	}
	for _, tt := range tests {
		if got := HourOfWeek(tt.t); got != tt.want {
			t.Errorf("HourOfWeek(%v) = %d, want %d", tt.t, got, tt.want)
		}
	}
}

func TestSeasonalityIndex(t *testing.T) {
	sun := time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC)
	var ms []features.Minute
	for i := range 120 { // Sunday 00h: 1 search a minute, 01h: 3
		s := 1.0
		if i >= 60 {
			s = 3
		}
		ms = append(ms, features.Minute{Start: sun.Add(time.Duration(i) * time.Minute), Searches: s})
	}
	idx := SeasonalityIndex(ms)
	if idx[0] != 0.5 || idx[1] != 1.5 || idx[2] != 1 || idx[100] != 1 {
		t.Fatalf("index = %v %v %v %v, want 0.5 1.5 1 1", idx[0], idx[1], idx[2], idx[100])
	}
	if got := SeasonalityIndex(nil); got[5] != 1 {
		t.Fatalf("empty history index = %v, want 1", got[5])
	}
}
