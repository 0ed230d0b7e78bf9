// Package features owns the feature-vector schema shared by training and
// serving (names, order, defaults, version hash), the windowed aggregation that
// turns per-minute demand counts into online features, and the Redis online
// store that serves them.
package features

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Feature is one column of the model input.
type Feature struct {
	Name        string
	Default     float32 // used when the value is missing or not finite
	Description string
	// PerHorizon features have one value per horizon H, stored in Online
	// under HorizonKey(Name, H) (the long-memory features of V2).
	PerHorizon bool
}

// Schema is the ordered list of model inputs. The order is the column order of
// the model's input tensor.
type Schema []Feature

// Names of the online features (kept in Redis under features:{region}).
const (
	Searches1m      = "searches_1m"
	Bookings1m      = "bookings_1m"
	Cancels1m       = "cancels_1m"
	Searches5m      = "searches_5m"
	Bookings5m      = "bookings_5m"
	Searches15m     = "searches_15m"
	Bookings15m     = "bookings_15m"
	Supply          = "supply"
	DemandTrend     = "demand_trend"
	Seasonality     = "seasonality_index"
	SupplyDemand    = "supply_demand_ratio"
	WeatherSeverity = "weather_severity"
	TrafficIndex    = "traffic_index"
	LocalEvent      = "local_event"
)

// Names of the features derived from the request itself.
const (
	HourSin        = "hour_sin"
	HourCos        = "hour_cos"
	DowSin         = "dow_sin"
	DowCos         = "dow_cos"
	IsWeekend      = "is_weekend"
	HorizonMinutes = "horizon_minutes"
)

// V1 is the current schema. Changing names, order or defaults changes its
// Hash, and models trained on another hash are refused at load.
var V1 = Schema{
	{Name: Searches1m, Default: 0, Description: "searches in the last closed minute"},
	{Name: Bookings1m, Default: 0, Description: "bookings in the last closed minute"},
	{Name: Cancels1m, Default: 0, Description: "cancellations in the last closed minute"},
	{Name: Searches5m, Default: 0, Description: "searches per minute, mean over the last 5 minutes"},
	{Name: Bookings5m, Default: 0, Description: "bookings per minute, mean over the last 5 minutes"},
	{Name: Searches15m, Default: 0, Description: "searches per minute, mean over the last 15 minutes"},
	{Name: Bookings15m, Default: 0, Description: "bookings per minute, mean over the last 15 minutes"},
	{Name: Supply, Default: 0, Description: "available supply units (drivers, couriers, vehicles), latest"},
	{Name: DemandTrend, Default: 1, Description: "searches per minute over the last 5 minutes against the 10 before"},
	{Name: Seasonality, Default: 1, Description: "hour-of-week demand index learned from history (1 = average)"},
	{Name: SupplyDemand, Default: 1, Description: "supply against searches per minute over the last 5 minutes"},
	{Name: WeatherSeverity, Default: 0, Description: "0 clear … 1 severe"},
	{Name: TrafficIndex, Default: 0, Description: "0 free-flowing … 1 gridlock"},
	{Name: LocalEvent, Default: 0, Description: "1 when a local event is under way"},
	{Name: HourSin, Default: 0, Description: "sin of the hour of day (UTC)"},
	{Name: HourCos, Default: 1, Description: "cos of the hour of day (UTC)"},
	{Name: DowSin, Default: 0, Description: "sin of the day of week"},
	{Name: DowCos, Default: 1, Description: "cos of the day of week"},
	{Name: IsWeekend, Default: 0, Description: "1 on Saturday and Sunday (UTC)"},
	{Name: HorizonMinutes, Default: 15, Description: "forecast horizon in minutes"},
}

// Len is the number of columns.
func (s Schema) Len() int { return len(s) }

// Names lists the feature names in column order.
func (s Schema) Names() []string {
	out := make([]string, len(s))
	for i, f := range s {
		out[i] = f.Name
	}
	return out
}

// Index returns the column of a feature, or -1.
func (s Schema) Index(name string) int {
	for i, f := range s {
		if f.Name == name {
			return i
		}
	}
	return -1
}

// Hash identifies the schema: names, order and defaults. It is stored with
// every model and checked when a model is loaded.
func (s Schema) Hash() string {
	var b strings.Builder
	for _, f := range s {
		b.WriteString(f.Name)
		b.WriteByte('=')
		b.WriteString(strconv.FormatFloat(float64(f.Default), 'g', -1, 32))
		if f.PerHorizon {
			b.WriteString("/h")
		}
		b.WriteByte(';')
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}

// Online holds the online feature values of one region, by name.
type Online map[string]float64

// Vector builds the model input row for a region at time at and a forecast
// horizon. Serving and training both call it, so they cannot disagree.
// Missing or non-finite values take the schema default. dst is reused when it
// has the right length. It is VectorFor without a region or encoding.
func (s Schema) Vector(dst []float32, online Online, at time.Time, horizonMinutes int) []float32 {
	dst, _ = s.VectorFor(dst, Input{Online: online, At: at, Horizon: horizonMinutes})
	return dst
}

// clock is the time of a row, split once per row.
type clock struct {
	hour    float64 // hour of day with minutes as a fraction
	weekday time.Weekday
}

func clockOf(at time.Time) clock {
	return clock{hour: float64(at.Hour()) + float64(at.Minute())/60, weekday: at.Weekday()}
}

// derived computes the V1 features that come from the request itself.
func derived(name string, c clock, horizonMinutes int) (float64, bool) {
	hour, dow := c.hour, float64(c.weekday)
	switch name {
	case HourSin:
		return math.Sin(2 * math.Pi * hour / 24), true
	case HourCos:
		return math.Cos(2 * math.Pi * hour / 24), true
	case DowSin:
		return math.Sin(2 * math.Pi * dow / 7), true
	case DowCos:
		return math.Cos(2 * math.Pi * dow / 7), true
	case IsWeekend:
		if c.weekday == time.Saturday || c.weekday == time.Sunday {
			return 1, true
		}
		return 0, true
	case HorizonMinutes:
		return float64(horizonMinutes), true
	}
	return 0, false
}

// Schemas are the schemas this build can build vectors for, by version name.
var Schemas = map[string]Schema{"v1": V1, "v2": V2, "v3": V3}

// Version names a schema known to this build ("v1", "v2", "v3") by hash, ""
// for any other.
func Version(hash string) string {
	for v, s := range Schemas {
		if s.Hash() == hash {
			return v
		}
	}
	return ""
}

// ByHash returns the schema with the given hash among those this build can
// build vectors for.
func ByHash(hash string) (Schema, error) {
	if v := Version(hash); v != "" {
		return Schemas[v], nil
	}
	var known []string
	for _, v := range slices.Sorted(maps.Keys(Schemas)) {
		known = append(known, fmt.Sprintf("%q (%s)", Schemas[v].Hash(), v))
	}
	return nil, fmt.Errorf("%w: model has %q; this server builds %s", ErrSchemaMismatch, hash, strings.Join(known, ", "))
}

// CheckHash returns an error when a model's schema hash is not this schema's.
func (s Schema) CheckHash(modelHash string) error {
	if h := s.Hash(); modelHash != h {
		return fmt.Errorf("%w: model has %q, serving has %q", ErrSchemaMismatch, modelHash, h)
	}
	return nil
}

// ErrSchemaMismatch is returned when a model was trained on another schema.
var ErrSchemaMismatch = fmt.Errorf("feature schema mismatch")
