package pricing_test

import (
	"fmt"
	"time"

	"github.com/surgeworks/surge/pricing"
)

func ExampleCompute() {
	at := time.Date(2026, 3, 14, 18, 30, 0, 0, time.UTC)
	rule := pricing.Rule{
		RegionID: "ams-centre", ProductType: "ride", Currency: "EUR", Version: 3,
		BasePrice: 12.5, MinMultiplier: 0.8, MaxMultiplier: 3, MaxStepPerMinute: 0.5,
		Threshold: 0.2, Sensitivity: 2, MultiplierStep: 0.05, PriceStep: 0.01,
	}
	q, err := pricing.Compute(pricing.Input{
		Rule:           rule,
		DemandForecast: 84, HorizonMinutes: 15,
		Supply: 20, SupplyKnown: true,
		Previous: &pricing.State{Multiplier: 1, At: at.Add(-time.Minute)},
		At:       at,
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("×%v → %v %s (persist %v)\n", q.Multiplier, q.Price, q.Currency, q.State.Multiplier)
	for _, f := range q.Factors {
		fmt.Printf("%-14s %+.4f  %s\n", f.Name, f.Contribution, f.Description)
	}
	// Output:
	// ×1.15 → 14.38 EUR (persist 1.16)
	// base           +1.0000  base price 12.5 EUR; quoted 14.38 EUR at ×1.15, rounded half up to 0.01
	// demand_supply  +0.1600  forecast 84 requests over 15 min against 20 available: utilisation 0.28 vs threshold 0.2: raw 1 + 2 × 0.08 = 1.16
	// regulatory_cap +0.0000  raw 1.16 within caps [0.80, 3.00]
	// smoothing      +0.0000  previous 1.00, 1 min ago: allowance ±0.50 (0.50/min), not limiting
	// rounding       -0.0100  1.16 rounded half away from zero to step 0.05: 1.15
}
