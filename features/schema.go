// Package features owns the feature-vector schema shared by training and
// serving (names, order, defaults, version hash), the windowed aggregation that
// turns per-minute demand counts into online features, and the Redis online
// store that serves them.
package features

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Feature is one column of the model input.
type Feature struct {
	Name        string
	Default     float32 // used when the value is missing or not finite
	Description string
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
	{Searches1m, 0, "searches in the last closed minute"},
	{Bookings1m, 0, "bookings in the last closed minute"},
	{Cancels1m, 0, "cancellations in the last closed minute"},
	{Searches5m, 0, "searches per minute, mean over the last 5 minutes"},
	{Bookings5m, 0, "bookings per minute, mean over the last 5 minutes"},
	{Searches15m, 0, "searches per minute, mean over the last 15 minutes"},
	{Bookings15m, 0, "bookings per minute, mean over the last 15 minutes"},
	{Supply, 0, "available supply units (drivers, couriers, vehicles), latest"},
	{DemandTrend, 1, "searches per minute over the last 5 minutes against the 10 before"},
	{Seasonality, 1, "hour-of-week demand index learned from history (1 = average)"},
	{SupplyDemand, 1, "supply against searches per minute over the last 5 minutes"},
	{WeatherSeverity, 0, "0 clear … 1 severe"},
	{TrafficIndex, 0, "0 free-flowing … 1 gridlock"},
	{LocalEvent, 0, "1 when a local event is under way"},
	{HourSin, 0, "sin of the hour of day (UTC)"},
	{HourCos, 1, "cos of the hour of day (UTC)"},
	{DowSin, 0, "sin of the day of week"},
	{DowCos, 1, "cos of the day of week"},
	{IsWeekend, 0, "1 on Saturday and Sunday (UTC)"},
	{HorizonMinutes, 15, "forecast horizon in minutes"},
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
// has the right length.
func (s Schema) Vector(dst []float32, online Online, at time.Time, horizonMinutes int) []float32 {
	if len(dst) != len(s) {
		dst = make([]float32, len(s))
	}
	at = at.UTC()
	hour := float64(at.Hour()) + float64(at.Minute())/60
	dow := float64(at.Weekday())
	for i, f := range s {
		v, ok := 0.0, true
		switch f.Name {
		case HourSin:
			v = math.Sin(2 * math.Pi * hour / 24)
		case HourCos:
			v = math.Cos(2 * math.Pi * hour / 24)
		case DowSin:
			v = math.Sin(2 * math.Pi * dow / 7)
		case DowCos:
			v = math.Cos(2 * math.Pi * dow / 7)
		case IsWeekend:
			if at.Weekday() == time.Saturday || at.Weekday() == time.Sunday {
				v = 1
			}
		case HorizonMinutes:
			v = float64(horizonMinutes)
		default:
			v, ok = online[f.Name]
		}
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			dst[i] = f.Default
			continue
		}
		dst[i] = float32(v)
	}
	return dst
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
