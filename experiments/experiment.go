package experiments

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/surgeworks/surge/pricing"
)

// Status is where an experiment is in its lifecycle:
// draft → running → stopped → rolled out (a stopped experiment may still be
// rolled out; a draft may be stopped, which abandons it).
type Status string

// The statuses.
const (
	StatusDraft     Status = "DRAFT"
	StatusRunning   Status = "RUNNING"
	StatusStopped   Status = "STOPPED"
	StatusRolledOut Status = "ROLLED_OUT"
)

// Metric names what an experiment measures, per exposed user.
type Metric string

// The metrics. The randomisation unit is the exposed user: conversion rate
// = users with a booking / exposed users, revenue per user = (winsorized)
// booking revenue / exposed users, cancellation rate = cancellations /
// bookings of the exposed users (a ratio metric, by the delta method over
// users: a variant that makes more users book is not charged with their
// cancellations as if it caused them).
const (
	MetricConversionRate   Metric = "CONVERSION_RATE"
	MetricRevenuePerUser   Metric = "REVENUE_PER_USER"
	MetricCancellationRate Metric = "CANCELLATION_RATE"
)

// HigherIsBetter says in which direction a metric improves.
func (m Metric) HigherIsBetter() bool { return m != MetricCancellationRate }

// Binomial says whether the metric is a 0/1 outcome per user.
func (m Metric) Binomial() bool { return m == MetricConversionRate }

func (m Metric) valid() bool {
	return m == MetricConversionRate || m == MetricRevenuePerUser || m == MetricCancellationRate
}

// Strategy is how a variant prices: overrides of the rule in force. Nil
// fields keep the rule's value; the zero Strategy prices like the default.
type Strategy struct {
	// MinMultiplier and MaxMultiplier replace the rule's multiplier caps.
	MinMultiplier *float64 `json:"minMultiplier,omitempty"`
	MaxMultiplier *float64 `json:"maxMultiplier,omitempty"`
	// Sensitivity replaces how much the multiplier rises per unit of
	// utilisation above the threshold; Threshold where surge starts.
	Sensitivity *float64 `json:"sensitivity,omitempty"`
	Threshold   *float64 `json:"threshold,omitempty"`
	// BasePriceAdjustmentPercent changes the base price: -5 is 5 % off,
	// 10 is 10 % more (-90 to 100). 0 keeps it.
	BasePriceAdjustmentPercent float64 `json:"basePriceAdjustmentPercent,omitempty"`
}

// IsDefault reports whether the strategy changes nothing.
func (s Strategy) IsDefault() bool {
	return s.MinMultiplier == nil && s.MaxMultiplier == nil && s.Sensitivity == nil && s.Threshold == nil &&
		s.BasePriceAdjustmentPercent == 0
}

// Apply returns the rule priced with the strategy, or an error naming the
// field when the result is not a valid rule. The version and the other
// fields stay: the audit record carries the rule as applied.
func (s Strategy) Apply(r pricing.Rule) (pricing.Rule, error) {
	if s.MinMultiplier != nil {
		r.MinMultiplier = *s.MinMultiplier
	}
	if s.MaxMultiplier != nil {
		r.MaxMultiplier = *s.MaxMultiplier
	}
	if s.Sensitivity != nil {
		r.Sensitivity = *s.Sensitivity
	}
	if s.Threshold != nil {
		r.Threshold = *s.Threshold
	}
	if s.BasePriceAdjustmentPercent != 0 {
		// Four decimals, the engine's unit.
		r.BasePrice = math.Round(r.BasePrice*(1+s.BasePriceAdjustmentPercent/100)*1e4) / 1e4
	}
	return r, r.Validate()
}

func (s Strategy) validate(field string, add func(field, msg string)) {
	check := func(name string, v *float64, lo, hi float64) {
		if v != nil && !(*v >= lo && *v <= hi) {
			add(field+"."+name, fmt.Sprintf("must be between %g and %g", lo, hi))
		}
	}
	check("minMultiplier", s.MinMultiplier, 0.0001, 1)
	check("maxMultiplier", s.MaxMultiplier, 1, 20)
	check("sensitivity", s.Sensitivity, 0, 100)
	check("threshold", s.Threshold, 0, 1000)
	if p := s.BasePriceAdjustmentPercent; !(p >= -90 && p <= 100) {
		add(field+".basePriceAdjustmentPercent", "must be between -90 and 100")
	}
}

// Variant is one arm of an experiment.
type Variant struct {
	Name string `json:"name"`
	// Weight is the share of the experiment's users, in percent with at
	// most two decimals (the buckets are 0.01 % wide); weights add up to 100.
	Weight   float64  `json:"weight"`
	Strategy Strategy `json:"strategy"`
}

// Experiment is a pricing experiment: its definition and its lifecycle.
type Experiment struct {
	ID         string `json:"id"`
	Hypothesis string `json:"hypothesis"`
	// Layer groups experiments that must not share traffic: two running
	// experiments of one layer may not target the same region and product.
	// Experiments in different layers overlap freely (their assignments
	// are independent, by the salt). Default "default".
	Layer string `json:"layer"`
	// Salt keys the assignment hash (default: the id).
	Salt string `json:"salt"`
	// Variants, the control first: it is the one the others are compared with.
	Variants []Variant `json:"variants"`
	// Regions and Products target the experiment; empty means all.
	Regions  []string `json:"regions,omitempty"`
	Products []string `json:"products,omitempty"`
	// PrimaryMetric decides the verdict; Guardrails must not get worse.
	PrimaryMetric Metric   `json:"primaryMetric"`
	Guardrails    []Metric `json:"guardrails"`
	// MinDays is how many experiment days must pass before a verdict
	// (default 7); MaxDays ends it with "no difference" when nothing was
	// found by then (default 4 × MinDays).
	MinDays float64 `json:"minDays"`
	MaxDays float64 `json:"maxDays"`
	// MinSamplePerVariant is the number of exposed users each variant
	// needs before a verdict (default 1,000).
	MinSamplePerVariant int `json:"minSamplePerVariant"`
	// DayLength is the length of an experiment day (24 h; the local demo
	// compresses it), fixed at creation so the results stay reproducible.
	DayLength time.Duration `json:"dayLength"`
	// PrePeriodDays is the window before the start whose bookings are the
	// CUPED covariate (default 14 experiment days).
	PrePeriodDays float64 `json:"prePeriodDays"`

	Status    Status    `json:"status"`
	CreatedAt time.Time `json:"createdAt"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	StoppedAt time.Time `json:"stoppedAt,omitzero"`
	// Winner is the variant rolled out, when rolled out.
	Winner string `json:"winner,omitempty"`
	// RuleVersions are the pricing-rule versions the roll-out wrote, as
	// "region/product:version".
	RuleVersions []string `json:"ruleVersions,omitempty"`
	// Version counts the changes of the record (1 at creation).
	Version   uint32    `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
	UpdatedBy string    `json:"updatedBy"`
	Note      string    `json:"note,omitempty"`
}

// Control is the variant the others are compared with.
func (e *Experiment) Control() Variant { return e.Variants[0] }

// Variant returns a variant by name.
func (e *Experiment) Variant(name string) (Variant, bool) {
	i := slices.IndexFunc(e.Variants, func(v Variant) bool { return v.Name == name })
	if i < 0 {
		return Variant{}, false
	}
	return e.Variants[i], true
}

// Targets reports whether the experiment covers a region and product.
func (e *Experiment) Targets(region, product string) bool {
	return (len(e.Regions) == 0 || slices.Contains(e.Regions, region)) &&
		(len(e.Products) == 0 || slices.Contains(e.Products, product))
}

// overlaps reports whether two experiments can see the same request.
func (e *Experiment) overlaps(o *Experiment) bool {
	if e.Layer != o.Layer {
		return false
	}
	meet := func(a, b []string) bool {
		return len(a) == 0 || len(b) == 0 || slices.ContainsFunc(a, func(x string) bool { return slices.Contains(b, x) })
	}
	return meet(e.Regions, o.Regions) && meet(e.Products, o.Products)
}

// Defaults of an experiment definition.
const (
	DefaultLayer               = "default"
	DefaultMinDays             = 7
	DefaultMinSamplePerVariant = 1000
	DefaultPrePeriodDays       = 14
	DefaultDayLength           = 24 * time.Hour
)

// applyDefaults fills the zero fields of a new definition.
func (e *Experiment) applyDefaults(dayLength time.Duration) {
	if e.Layer == "" {
		e.Layer = DefaultLayer
	}
	if e.Salt == "" {
		e.Salt = e.ID
	}
	if e.PrimaryMetric == "" {
		e.PrimaryMetric = MetricConversionRate
	}
	if e.Guardrails == nil {
		e.Guardrails = []Metric{MetricCancellationRate}
	}
	if e.MinDays == 0 {
		e.MinDays = DefaultMinDays
	}
	if e.MaxDays == 0 {
		e.MaxDays = 4 * e.MinDays
	}
	if e.MinSamplePerVariant == 0 {
		e.MinSamplePerVariant = DefaultMinSamplePerVariant
	}
	if e.PrePeriodDays == 0 {
		e.PrePeriodDays = DefaultPrePeriodDays
	}
	if dayLength <= 0 {
		dayLength = DefaultDayLength
	}
	e.DayLength = dayLength
}

// FieldError is a problem with one field of an experiment definition.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate reports every problem of a definition, each naming its field.
func (e *Experiment) Validate() error {
	var errs []error
	add := func(field, msg string) { errs = append(errs, &FieldError{Field: field, Msg: msg}) }
	ident := func(field, v string) {
		if !validIdent(v) {
			add(field, "must be 1 to 64 letters, digits, '-', '_' or '.'")
		}
	}
	ident("id", e.ID)
	ident("layer", e.Layer)
	if len(e.Hypothesis) > 2000 {
		add("hypothesis", "must be at most 2,000 characters")
	}
	if len(e.Salt) > 128 {
		add("salt", "must be at most 128 characters")
	}
	if len(e.Variants) < 2 || len(e.Variants) > 10 {
		add("variants", "must be 2 to 10 variants (the first is the control)")
	}
	var total int64
	seen := map[string]bool{}
	for i, v := range e.Variants {
		f := fmt.Sprintf("variants[%d]", i)
		ident(f+".name", v.Name)
		if seen[v.Name] {
			add(f+".name", fmt.Sprintf("variant %q appears twice", v.Name))
		}
		seen[v.Name] = true
		bp := math.Round(v.Weight * 100)
		if !(v.Weight > 0 && v.Weight <= 100) || bp/100 != v.Weight {
			add(f+".weight", "must be a percentage > 0 and ≤ 100 with at most two decimals")
		}
		total += int64(bp)
		v.Strategy.validate(f+".strategy", add)
	}
	if len(e.Variants) >= 2 && total != 10000 {
		add("variants", fmt.Sprintf("weights must add up to 100 %%, not %g %%", float64(total)/100))
	}
	for i, r := range e.Regions {
		ident(fmt.Sprintf("regions[%d]", i), r)
	}
	for i, p := range e.Products {
		ident(fmt.Sprintf("products[%d]", i), p)
	}
	if len(e.Regions) > 1000 || len(e.Products) > 100 {
		add("regions", "at most 1,000 regions and 100 products")
	}
	if !e.PrimaryMetric.valid() || e.PrimaryMetric == MetricCancellationRate {
		add("primaryMetric", "must be CONVERSION_RATE or REVENUE_PER_USER")
	}
	for i, g := range e.Guardrails {
		if !g.valid() {
			add(fmt.Sprintf("guardrails[%d]", i), "unknown metric")
		}
	}
	if !(e.MinDays >= 0 && e.MinDays <= 365) {
		add("minDays", "must be between 0 and 365")
	}
	if !(e.MaxDays >= e.MinDays && e.MaxDays <= 730) {
		add("maxDays", "must be ≥ minDays and ≤ 730")
	}
	if e.MinSamplePerVariant < 1 || e.MinSamplePerVariant > 100_000_000 {
		add("minSamplePerVariant", "must be between 1 and 100,000,000")
	}
	if !(e.PrePeriodDays >= 0 && e.PrePeriodDays <= 90) {
		add("prePeriodDays", "must be between 0 and 90")
	}
	return errors.Join(errs...)
}

func validIdent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Elapsed is the number of experiment days the experiment has run at now.
func (e *Experiment) Elapsed(now time.Time) float64 {
	if e.StartedAt.IsZero() {
		return 0
	}
	end := now
	if !e.StoppedAt.IsZero() && e.StoppedAt.Before(now) {
		end = e.StoppedAt
	}
	return max(0, float64(end.Sub(e.StartedAt))/float64(e.DayLength))
}
