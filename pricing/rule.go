package pricing

import (
	"errors"
	"fmt"
	"time"
)

// Rule is one version of the pricing rule for a product in a region. Rules are
// versioned: a new version supersedes the previous one from EffectiveFrom on,
// and old versions stay so that any logged price can be recomputed.
type Rule struct {
	RegionID    string
	RegionName  string
	ProductType string
	Currency    string // ISO 4217, e.g. "EUR"

	Version       uint32
	EffectiveFrom time.Time

	// BasePrice is the price at multiplier 1.0, in currency units.
	BasePrice float64
	// MinMultiplier and MaxMultiplier are the regulatory caps on the surge
	// multiplier (MinMultiplier may be below 1 to allow discounts).
	MinMultiplier float64
	MaxMultiplier float64
	// MaxStepPerMinute bounds how far the multiplier may move per minute of
	// wall time (smoothing): 0.5 means 1.0 → 3.0 takes at least 4 minutes.
	MaxStepPerMinute float64
	// Threshold is the demand/supply utilisation at which surge starts, and
	// Sensitivity how much the multiplier rises per unit of utilisation above it.
	Threshold   float64
	Sensitivity float64
	// MultiplierStep rounds the multiplier (e.g. 0.05); PriceStep rounds the
	// final price (e.g. 0.01 or 0.5).
	MultiplierStep float64
	PriceStep      float64
}

// Validate reports every problem of a rule, naming the field.
func (r Rule) Validate() error {
	var errs []error
	add := func(field, msg string) { errs = append(errs, &FieldError{Field: field, Msg: msg}) }
	if r.RegionID == "" || len(r.RegionID) > 64 {
		add("regionId", "must be 1 to 64 characters")
	}
	if r.ProductType == "" || len(r.ProductType) > 64 {
		add("productType", "must be 1 to 64 characters")
	}
	if len(r.Currency) != 3 {
		add("currency", "must be a 3-letter ISO 4217 code")
	}
	// The engine works in exact units of 0.0001 (basis points for
	// multipliers), so every amount and multiplier must be a whole number of
	// them; the check is exact for values written with at most 4 decimals.
	const fourDecimals = "must have at most 4 decimal places"
	if !(r.BasePrice > 0) || r.BasePrice > 1e6 {
		add("basePrice", "must be > 0 and ≤ 1,000,000")
	} else if _, ok := toUnits4(r.BasePrice); !ok {
		add("basePrice", fourDecimals)
	}
	if !(r.MinMultiplier > 0) {
		add("minMultiplier", "must be > 0")
	} else if _, ok := toUnits4(r.MinMultiplier); !ok {
		add("minMultiplier", fourDecimals)
	}
	if !(r.MaxMultiplier >= r.MinMultiplier) || r.MaxMultiplier > 20 {
		add("maxMultiplier", "must be ≥ minMultiplier and ≤ 20")
	} else if _, ok := toUnits4(r.MaxMultiplier); !ok {
		add("maxMultiplier", fourDecimals)
	}
	if !(r.MinMultiplier <= 1 && r.MaxMultiplier >= 1) {
		add("minMultiplier", "the range [minMultiplier, maxMultiplier] must contain 1.0")
	}
	if !(r.MaxStepPerMinute >= 0.0001) || r.MaxStepPerMinute > 20 {
		add("maxStepPerMinute", "must be between 0.0001 and 20")
	} else if _, ok := toUnits4(r.MaxStepPerMinute); !ok {
		add("maxStepPerMinute", fourDecimals)
	}
	if !(r.Threshold >= 0) || r.Threshold > 1000 {
		add("threshold", "must be between 0 and 1000")
	}
	if !(r.Sensitivity >= 0) || r.Sensitivity > 100 {
		add("sensitivity", "must be between 0 and 100")
	}
	if !(r.MultiplierStep >= 0.0001) || r.MultiplierStep > 1 {
		add("multiplierStep", "must be between 0.0001 and 1")
	} else if _, ok := toUnits4(r.MultiplierStep); !ok {
		add("multiplierStep", fourDecimals)
	}
	if !(r.PriceStep >= 0.01) || r.PriceStep > 100 {
		add("priceStep", "must be between 0.01 and 100")
	} else if _, ok := toUnits4(r.PriceStep); !ok {
		add("priceStep", fourDecimals)
	}
	return errors.Join(errs...)
}

// FieldError names the input field a validation problem belongs to.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Msg) }
