package features

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Horizons are the forecast horizons (minutes) V2 models are trained for and
// the streaming consumer writes long-memory features for. A request for
// another horizon is served at ServingHorizon's and scaled (see
// ServingHorizon).
var Horizons = []int{5, 15, 60, 1440}

// MemoryMinutes is how far back the long-memory features of any schema
// read from an origin: V3's same window three weeks earlier (V2 reads a week
// plus the longest horizon; see Schema.MemoryMinutes).
const MemoryMinutes = 21 * 24 * 60

// ServingHorizon is the V2 horizon that serves a request for h minutes: the
// nearest of Horizons on a log scale (h ≤ 8 → 5, ≤ 30 → 15, ≤ 300 → 60,
// else 1440). The forecast for h is the one for the serving horizon H scaled
// by h/H.
func ServingHorizon(h int) int {
	best, bestD := Horizons[0], math.Inf(1)
	for _, H := range Horizons {
		if d := math.Abs(math.Log(float64(h) / float64(H))); d < bestD {
			best, bestD = H, d
		}
	}
	return best
}

// Names of the long-memory features. They are per horizon: the value for
// horizon H is stored in Online under HorizonKey(name, H). Window features
// count the searches in a window relative to the origin t (the end of the
// last closed minute); the means are searches per minute times H, so every
// long-memory feature is on the target's scale.
const (
	DemandLast     = "demand_last"      // [t−H, t)
	DemandPrev     = "demand_prev"      // [t−2H, t−H)
	DemandPrev2    = "demand_prev2"     // [t−3H, t−2H) (V3)
	DemandDayNext  = "demand_day_next"  // [t−1d, t−1d+H): what followed the same time yesterday
	DemandDayPrev  = "demand_day_prev"  // [t−1d−H, t−1d)
	DemandWeekNext = "demand_week_next" // [t−7d, t−7d+H): what followed a week ago (seasonal naive)
	DemandWeekPrev = "demand_week_prev" // [t−7d−H, t−7d)
	DemandWeek2    = "demand_week2"     // [t−14d, t−14d+H): what followed two weeks ago (V3)
	DemandWeek3    = "demand_week3"     // [t−21d, t−21d+H): what followed three weeks ago (V3)
	DemandMean1h   = "demand_mean_1h"   // mean per minute over [t−1h, t), × H
	DemandMean24h  = "demand_mean_24h"  // mean per minute over [t−24h, t), × H
	DemandMean168h = "demand_mean_168h" // mean per minute over [t−168h, t), × H
)

// Names of the V2 features that come from the model (learned on its training
// window) and from the calendar.
const (
	// RegionLevel is the region's mean searches per minute over the
	// model's training window, × H (Encoding.RegionLevels); unknown
	// regions get the mean over all regions.
	RegionLevel = "region_level"
	HourOfDay   = "hour_of_day" // 0 … 23.98, the origin's clock (hour + minute/60)
	DayOfWeek   = "day_of_week" // 0 (Sunday) … 6
	HourOfWeekF = "hour_of_week"
	Holiday     = "holiday" // 1 when the target window starts on a calendar holiday
)

// memoryWindows lists the window features: name, start and end relative to
// the origin in units of H (h) and of minutes (m): [h0·H+m0, h1·H+m1).
var memoryWindows = []struct {
	name           string
	h0, m0, h1, m1 int
}{
	{DemandLast, -1, 0, 0, 0},
	{DemandPrev, -2, 0, -1, 0},
	{DemandPrev2, -3, 0, -2, 0},
	{DemandDayNext, 0, -1440, 1, -1440},
	{DemandDayPrev, -1, -1440, 0, -1440},
	{DemandWeekNext, 0, -10080, 1, -10080},
	{DemandWeekPrev, -1, -10080, 0, -10080},
	{DemandWeek2, 0, -20160, 1, -20160},
	{DemandWeek3, 0, -30240, 1, -30240},
}

var memoryMeans = []struct {
	name    string
	minutes int
}{
	{DemandMean1h, 60}, {DemandMean24h, 1440}, {DemandMean168h, 10080},
}

// HorizonKey is the Online key of a per-horizon feature.
func HorizonKey(name string, h int) string { return name + "_h" + strconv.Itoa(h) }

// horizonKeys caches HorizonKey for Horizons, so serving does not build
// strings per request.
var horizonKeys = func() map[string]map[int]string {
	m := map[string]map[int]string{}
	add := func(name string) {
		m[name] = map[int]string{}
		for _, h := range Horizons {
			m[name][h] = HorizonKey(name, h)
		}
	}
	for _, w := range memoryWindows {
		add(w.name)
	}
	for _, w := range memoryMeans {
		add(w.name)
	}
	return m
}()

func horizonKey(name string, h int) string {
	if k, ok := horizonKeys[name][h]; ok {
		return k
	}
	return HorizonKey(name, h)
}

// WindowSum returns the searches in the minutes [from, to) relative to an
// origin (from < to ≤ 0 for the past), and false when part of the window is
// outside the known history.
type WindowSum func(from, to int) (float64, bool)

// Memory adds the long-memory features for every horizon in horizons to dst
// (keys HorizonKey(name, H)). Windows the history does not cover are left
// out, so Schema.VectorFor falls back for them. The streaming consumer and
// the training pipeline both call it.
func Memory(dst Online, sum WindowSum, horizons []int) {
	means := make([]float64, len(memoryMeans))
	meanOK := make([]bool, len(memoryMeans))
	for i, m := range memoryMeans {
		if s, ok := sum(-m.minutes, 0); ok {
			means[i], meanOK[i] = s/float64(m.minutes), true
		}
	}
	for _, h := range horizons {
		for _, w := range memoryWindows {
			if s, ok := sum(w.h0*h+w.m0, w.h1*h+w.m1); ok {
				dst[horizonKey(w.name, h)] = s
			}
		}
		for i, m := range memoryMeans {
			if meanOK[i] {
				dst[horizonKey(m.name, h)] = means[i] * float64(h)
			}
		}
	}
}

// PrefixSum turns counts into their prefix sums p (p[i] = Σ counts[:i]), so
// a window sum is p[b]−p[a].
func PrefixSum(counts []float64) []float64 {
	p := make([]float64, len(counts)+1)
	for i, c := range counts {
		p[i+1] = p[i] + c
	}
	return p
}

// PrefixWindow is the WindowSum at origin index t (the minutes before t are
// closed) over prefix sums p.
func PrefixWindow(p []float64, t int) WindowSum {
	return func(from, to int) (float64, bool) {
		a, b := t+from, t+to
		if a < 0 || b > len(p)-1 || a > b {
			return 0, false
		}
		return p[b] - p[a], true
	}
}

// Encoding is what a V2 model learned about regions and the calendar; it is
// stored with the model (Params) so serving builds exactly its rows.
type Encoding struct {
	// RegionLevels is each region's mean searches per minute over the
	// training window.
	RegionLevels map[string]float64 `json:"regionLevels"`
	// Holidays are the calendar's holidays (dates, the region's clock).
	Holidays Calendar `json:"holidays"`
}

// Level returns a region's level, the mean over regions for one the model
// has not seen, and NaN without levels.
func (e *Encoding) Level(region string) float64 {
	if e == nil || len(e.RegionLevels) == 0 {
		return math.NaN()
	}
	if l, ok := e.RegionLevels[region]; ok {
		return l
	}
	s := 0.0
	for _, l := range e.RegionLevels {
		s += l
	}
	return s / float64(len(e.RegionLevels))
}

// EncodingParam is the model Params key holding the JSON Encoding.
const EncodingParam = "encoding"

// ParseEncoding decodes an EncodingParam value.
func ParseEncoding(s string) (*Encoding, error) {
	var e Encoding
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		return nil, fmt.Errorf("model encoding: %w", err)
	}
	return &e, nil
}

// String encodes the encoding for EncodingParam.
func (e *Encoding) String() string {
	b, _ := json.Marshal(e) // maps of strings and floats always encode
	return string(b)
}

// Calendar is a set of holidays, dates written YYYY-MM-DD.
type Calendar []string

// ParseCalendar reads a comma-separated list of dates (YYYY-MM-DD); it
// refuses anything else, naming the entry.
func ParseCalendar(s string) (Calendar, error) {
	var c Calendar
	for _, d := range strings.Split(s, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			return nil, fmt.Errorf("holiday %q: want a date YYYY-MM-DD", d)
		}
		c = append(c, d)
	}
	sort.Strings(c)
	return slices.Compact(c), nil
}

// Has reports whether t's date (its own clock) is a holiday. It does not
// allocate: it runs on the price path.
func (c Calendar) Has(t time.Time) bool {
	var buf [len(time.DateOnly)]byte
	day := t.AppendFormat(buf[:0], time.DateOnly)
	i := sort.Search(len(c), func(i int) bool { return c[i] >= string(day) })
	return i < len(c) && c[i] == string(day)
}

// V2 is the long-memory schema: per-horizon windows of the past (the last H,
// the same time yesterday and a week ago, and what followed them), rolling
// means, the region's learned level, the clock and the calendar, supply and
// the external signals. Missing windows (history Redis lost, or a region too
// new) fall back to the region level; other features take their default.
var V2 = Schema{
	{Name: HorizonMinutes, Default: 15, Description: "forecast horizon in minutes (the serving horizon, one of 5, 15, 60, 1440)"},
	{Name: DemandLast, PerHorizon: true, Description: "searches over the last H minutes"},
	{Name: DemandPrev, PerHorizon: true, Description: "searches over the H minutes before those"},
	{Name: DemandDayNext, PerHorizon: true, Description: "searches over the H minutes that followed the origin one day earlier"},
	{Name: DemandDayPrev, PerHorizon: true, Description: "searches over the H minutes before the origin one day earlier"},
	{Name: DemandWeekNext, PerHorizon: true, Description: "searches over the H minutes that followed the origin one week earlier (seasonal naive)"},
	{Name: DemandWeekPrev, PerHorizon: true, Description: "searches over the H minutes before the origin one week earlier"},
	{Name: DemandMean1h, PerHorizon: true, Description: "searches per minute over the last hour, × H"},
	{Name: DemandMean24h, PerHorizon: true, Description: "searches per minute over the last 24 hours, × H"},
	{Name: DemandMean168h, PerHorizon: true, Description: "searches per minute over the last 168 hours, × H"},
	{Name: RegionLevel, Description: "the region's searches per minute over the training window, × H"},
	{Name: HourOfDay, Description: "hour of day of the origin, with minutes as a fraction"},
	{Name: DayOfWeek, Description: "day of week of the origin, 0 = Sunday"},
	{Name: HourOfWeekF, Description: "hour of week of the origin, 0 = Sunday 00h"},
	{Name: Holiday, Description: "1 when the target window starts on a holiday of the model's calendar"},
	{Name: Searches1m, Description: "searches in the last closed minute"},
	{Name: Supply, Description: "available supply units, latest"},
	{Name: SupplyDemand, Default: 1, Description: "supply against searches per minute over the last 5 minutes"},
	{Name: WeatherSeverity, Description: "0 clear … 1 severe"},
	{Name: TrafficIndex, Description: "0 free-flowing … 1 gridlock"},
	{Name: LocalEvent, Description: "1 when a local event is under way"},
}

// V3 is V2 with three more windows, chosen on the validation days of the
// real departures (docs/forecasting.md): the H minutes before demand_prev,
// and what followed the origin two and three weeks earlier, so a model sees
// the same window in three past weeks instead of one.
var V3 = func() Schema {
	s := slices.Clone(V2)
	at := func(after string, f Feature) {
		i := s.Index(after) + 1
		s = slices.Insert(s, i, f)
	}
	at(DemandPrev, Feature{Name: DemandPrev2, PerHorizon: true, Description: "searches over the H minutes before demand_prev"})
	at(DemandWeekPrev, Feature{Name: DemandWeek2, PerHorizon: true, Description: "searches over the H minutes that followed the origin two weeks earlier"})
	at(DemandWeek2, Feature{Name: DemandWeek3, PerHorizon: true, Description: "searches over the H minutes that followed the origin three weeks earlier"})
	return s
}()

// LongMemory reports whether the schema has per-horizon long-memory
// features (V2, V3): its rows are built at a serving horizon, with a
// model's Encoding, from history of MemoryMinutes.
func (s Schema) LongMemory() bool {
	for _, f := range s {
		if f.PerHorizon {
			return true
		}
	}
	return false
}

// MemoryMinutes is how far back from an origin the schema's rows read at
// the longest of Horizons: the history a row needs (0 for V1).
func (s Schema) MemoryMinutes() int {
	need := 0
	for _, f := range s {
		if !f.PerHorizon {
			continue
		}
		for _, w := range memoryWindows {
			if w.name == f.Name {
				need = max(need, -(w.h0*Horizons[len(Horizons)-1] + w.m0))
			}
		}
		for _, m := range memoryMeans {
			if m.name == f.Name {
				need = max(need, m.minutes)
			}
		}
	}
	return need
}

// Input is everything a model row is built from.
type Input struct {
	Online Online
	At     time.Time // the origin: end of the last closed minute
	// Horizon is the horizon of the row (for V2 a serving horizon, see
	// ServingHorizon).
	Horizon  int
	Region   string
	Encoding *Encoding // V2 models' learned encoding; nil for V1
}

// VectorFor builds the model input row for in, like Vector, and also returns
// the per-horizon features that were missing (and fell back to the region
// level, or to the default without one). dst is reused when it has the right
// length.
func (s Schema) VectorFor(dst []float32, in Input) ([]float32, []string) {
	if len(dst) != len(s) {
		dst = make([]float32, len(s))
	}
	at := in.At.UTC()
	c := clockOf(at)
	level := math.NaN()
	if in.Encoding != nil {
		level = in.Encoding.Level(in.Region) * float64(in.Horizon)
	}
	var missing []string
	for i, f := range s {
		v, ok := 0.0, true
		switch {
		case f.PerHorizon:
			v, ok = in.Online[horizonKey(f.Name, in.Horizon)]
			if !ok {
				missing = append(missing, f.Name)
				if !math.IsNaN(level) {
					v, ok = level, true
				}
			}
		case f.Name == RegionLevel:
			v = level
		case f.Name == HourOfDay:
			v = c.hour
		case f.Name == DayOfWeek:
			v = float64(c.weekday)
		case f.Name == HourOfWeekF:
			v = float64(int(c.weekday)*24 + int(c.hour))
		case f.Name == Holiday:
			v = 0
			if in.Encoding != nil && in.Encoding.Holidays.Has(at) {
				v = 1
			}
		default:
			v, ok = derived(f.Name, c, in.Horizon)
			if !ok {
				v, ok = in.Online[f.Name]
			}
		}
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			dst[i] = f.Default
			continue
		}
		dst[i] = float32(v)
	}
	return dst, missing
}
