package rules

import (
	"context"
	"fmt"
	"math"

	"github.com/surgeworks/surge/pricing"
)

// SeedActor is the created_by of the rules SeedDefaults puts.
const SeedActor = "seed"

// DefaultRules are the demo rules SeedDefaults installs: five regions and
// three products each (ride, xl, delivery). Version and EffectiveFrom are
// assigned by Put.
func DefaultRules() []pricing.Rule {
	regions := []struct {
		id, name, currency string
		scale              float64 // price level against Berlin
	}{
		{"berlin", "Berlin", "EUR", 1.0},
		{"paris", "Paris", "EUR", 1.15},
		{"london", "London", "GBP", 1.1},
		{"nyc", "New York City", "USD", 1.6},
		{"sf", "San Francisco", "USD", 1.7},
	}
	products := []struct {
		name                    string
		base, maxMult, priceStp float64
	}{
		{"ride", 8.00, 3.0, 0.10},
		{"xl", 12.00, 2.5, 0.10},
		{"delivery", 3.50, 2.0, 0.05},
	}
	var out []pricing.Rule
	for _, r := range regions {
		for _, p := range products {
			out = append(out, pricing.Rule{
				RegionID:         r.id,
				RegionName:       r.name,
				ProductType:      p.name,
				Currency:         r.currency,
				BasePrice:        roundTo(p.base*r.scale, p.priceStp),
				MinMultiplier:    0.9,
				MaxMultiplier:    p.maxMult,
				MaxStepPerMinute: 0.25,
				Threshold:        0.8,
				Sensitivity:      1.5,
				MultiplierStep:   0.05,
				PriceStep:        p.priceStp,
			})
		}
	}
	return out
}

// roundTo rounds v to a multiple of step, then to cents so that the stored
// value prints cleanly.
func roundTo(v, step float64) float64 {
	return math.Round(math.Round(v/step)*step*100) / 100
}

// SeedDefaults puts each of DefaultRules whose (region, product) has no
// version yet, and returns the rules it stored. Running it again stores
// nothing.
func SeedDefaults(ctx context.Context, store *Store) ([]pricing.Rule, error) {
	var out []pricing.Rule
	have := map[string]map[string]bool{}
	for _, r := range DefaultRules() {
		if have[r.RegionID] == nil {
			hist, err := store.History(ctx, r.RegionID)
			if err != nil {
				return out, fmt.Errorf("rules: seed: %w", err)
			}
			have[r.RegionID] = map[string]bool{}
			for _, h := range hist {
				have[r.RegionID][h.ProductType] = true
			}
		}
		if have[r.RegionID][r.ProductType] {
			continue
		}
		stored, err := store.Put(ctx, r, SeedActor)
		if err != nil {
			return out, fmt.Errorf("rules: seed %s/%s: %w", r.RegionID, r.ProductType, err)
		}
		out = append(out, stored)
	}
	return out, nil
}
