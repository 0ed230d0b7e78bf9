package pricing

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 14, 18, 30, 0, 0, time.UTC)

// testRule: base 12.5 EUR, caps [0.8, 3], 0.5/min, surge above utilisation
// 0.2 at 2 per unit, multiplier step 0.05, price step 0.01.
func testRule() Rule {
	return Rule{
		RegionID: "ams-centre", RegionName: "Amsterdam Centre", ProductType: "ride",
		Currency: "EUR", Version: 3, EffectiveFrom: t0.Add(-24 * time.Hour),
		BasePrice: 12.5, MinMultiplier: 0.8, MaxMultiplier: 3, MaxStepPerMinute: 0.5,
		Threshold: 0.2, Sensitivity: 2, MultiplierStep: 0.05, PriceStep: 0.01,
	}
}

func prev(m float64, ago time.Duration) *State { return &State{Multiplier: m, At: t0.Add(-ago)} }

func TestCompute(t *testing.T) {
	type tc struct {
		name    string
		edit    func(*Input)
		mult    float64
		price   float64
		state   float64
		util    float64    // checked when not NaN
		contrib [5]float64 // base, demand_supply, regulatory_cap, smoothing, rounding
		desc    []string   // substrings of the joined descriptions
	}
	nan := math.NaN()
	cases := []tc{
		{
			name: "no surge below threshold",
			edit: func(in *Input) { in.DemandForecast = 30 }, // 2/min over 20: 0.1
			mult: 1, price: 12.5, state: 1, util: 0.1,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"forecast 30 requests over 15 min against 20 available: utilisation 0.1 ≤ threshold 0.2, no surge"},
		},
		{
			// 84/15 = 5.6/min over 20 = 0.28; 1 + 2×0.08 = 1.16 → 1.15;
			// 12.5 × 1.15 = 14.375 → 14.38.
			name: "surge above threshold, rounded down",
			edit: func(in *Input) {},
			mult: 1.15, price: 14.38, state: 1.16, util: 0.28,
			contrib: [5]float64{1, 0.16, 0, 0, -0.01},
			desc: []string{
				"forecast 84 requests over 15 min against 20 available: utilisation 0.28 vs threshold 0.2: raw 1 + 2 × 0.08 = 1.16",
				"1.16 rounded half away from zero to step 0.05: 1.15",
				"base price 12.5 EUR; quoted 14.38 EUR at ×1.15",
			},
		},
		{
			// 87/15 = 5.8/min: 0.29 → 1.18 → 1.20.
			name: "rounded up",
			edit: func(in *Input) { in.DemandForecast = 87 },
			mult: 1.2, price: 15, state: 1.18, util: nan,
			contrib: [5]float64{1, 0.18, 0, 0, 0.02},
		},
		{
			// 86.25/15 = 5.75/min: 0.2875 → 1.175, exactly half a step → 1.20.
			name: "rounded half away from zero",
			edit: func(in *Input) { in.DemandForecast = 86.25 },
			mult: 1.2, price: 15, state: 1.175, util: nan,
			contrib: [5]float64{1, 0.175, 0, 0, 0.025},
		},
		{
			// 300/15 = 20/min over 5 = 4; 1 + 2×3.8 = 8.6 → cap 3.
			name: "regulatory cap",
			edit: func(in *Input) {
				in.DemandForecast, in.Supply, in.Previous = 300, 5, prev(2.8, time.Minute)
			},
			mult: 3, price: 37.5, state: 3, util: 4,
			contrib: [5]float64{1, 7.6, -5.6, 0, 0},
			desc:    []string{"raw 8.60 capped at max 3.00", "previous 2.80, 1 min ago: allowance ±0.50 (0.50/min), not limiting"},
		},
		{
			// 435/15 = 29/min over 20 = 1.45; 1 + 2×1.25 = 3.5 (max 4);
			// 2 minutes at 0.5/min: 1.0 → 2.0.
			name: "smoothing limits a jump 1.0 → 3.5",
			edit: func(in *Input) {
				in.Rule.MaxMultiplier, in.DemandForecast, in.Previous = 4, 435, prev(1, 2*time.Minute)
			},
			mult: 2, price: 25, state: 2, util: 1.45,
			contrib: [5]float64{1, 2.5, 0, -1.5, 0},
			desc:    []string{"previous 1.00, 2 min ago: allowance ±1.00 (0.50/min), limited to 2.00"},
		},
		{
			name: "smoothing limits a jump over 30 seconds",
			edit: func(in *Input) {
				in.Rule.MaxMultiplier, in.DemandForecast, in.Previous = 4, 435, prev(1, 30*time.Second)
			},
			mult: 1.25, price: 15.63, state: 1.25, util: nan, // 15.625 → 15.63
			contrib: [5]float64{1, 2.5, 0, -2.25, 0},
		},
		{
			name: "smoothing down",
			edit: func(in *Input) { in.DemandForecast, in.Previous = 30, prev(2.5, time.Minute) },
			mult: 2, price: 25, state: 2, util: nan,
			contrib: [5]float64{1, 0, 0, 1, 0},
			desc:    []string{"limited to 2.00"},
		},
		{
			name: "smoothing down over 90 seconds",
			edit: func(in *Input) { in.DemandForecast, in.Previous = 30, prev(2.5, 90*time.Second) },
			mult: 1.75, price: 21.88, state: 1.75, util: nan, // 21.875 → 21.88
			contrib: [5]float64{1, 0, 0, 0.75, 0},
			desc:    []string{"previous 2.50, 1.5 min ago: allowance ±0.75"},
		},
		{
			name: "first quote starts from 1.0 with one minute of allowance",
			edit: func(in *Input) { in.Rule.MaxMultiplier, in.DemandForecast, in.Previous = 4, 435, nil },
			mult: 1.5, price: 18.75, state: 1.5, util: nan,
			contrib: [5]float64{1, 2.5, 0, -2, 0},
			desc:    []string{"first quote: from 1.00 with one minute of allowance: allowance ±0.50 (0.50/min), limited to 1.50"},
		},
		{
			name: "previous with NaN multiplier is ignored",
			edit: func(in *Input) {
				in.Rule.MaxMultiplier, in.DemandForecast, in.Previous = 4, 435, prev(nan, time.Hour)
			},
			mult: 1.5, price: 18.75, state: 1.5, util: nan,
			contrib: [5]float64{1, 2.5, 0, -2, 0},
			desc:    []string{"previous multiplier invalid, ignored"},
		},
		{
			name: "previous with no time gets one minute",
			edit: func(in *Input) {
				in.Rule.MaxMultiplier, in.DemandForecast, in.Previous = 4, 435, &State{Multiplier: 2}
			},
			mult: 2.5, price: 31.25, state: 2.5, util: nan,
			contrib: [5]float64{1, 2.5, 0, -1, 0},
			desc:    []string{"previous 2.00 with no time: one minute of allowance: allowance ±0.50"},
		},
		{
			name: "clock skew: no allowance",
			edit: func(in *Input) {
				in.Rule.MaxMultiplier, in.DemandForecast, in.Previous = 4, 435, prev(1.5, -10*time.Second)
			},
			mult: 1.5, price: 18.75, state: 1.5, util: nan,
			contrib: [5]float64{1, 2.5, 0, -2, 0},
			desc:    []string{"previous 1.50 is later than the quote time (clock skew): no allowance (0.50/min), limited to 1.50"},
		},
		{
			// The previous 5.0 is above the (new) cap: it is taken as 3.0,
			// and one second allows floor(5000/60) = 83 bps: 2.9917, which
			// is quoted as 3.00 but persisted unrounded.
			name: "previous outside caps, and the state keeps the unrounded multiplier",
			edit: func(in *Input) { in.DemandForecast, in.Previous = 30, prev(5, time.Second) },
			mult: 3, price: 37.5, state: 2.9917, util: nan,
			contrib: [5]float64{1, 0, 0, 1.9917, 0.0083},
			desc:    []string{"previous 5.00 (outside caps, taken as 3.00), 0.0167 min ago: allowance ±0.0083 (0.50/min), limited to 2.9917"},
		},
		{
			name: "rounding never breaks the max cap",
			edit: func(in *Input) {
				in.Rule.MaxMultiplier, in.DemandForecast, in.Supply, in.Previous = 2.99, 300, 5, prev(2.99, time.Minute)
			},
			mult: 2.99, price: 37.38, state: 2.99, util: nan, // 37.375 → 37.38
			contrib: [5]float64{1, 7.6, -5.61, 0, 0},
			desc:    []string{"2.99 rounded half away from zero to step 0.05: 3.00, brought back within caps to 2.99"},
		},
		{
			name: "rounding never breaks the min cap",
			edit: func(in *Input) {
				in.Rule.MinMultiplier, in.DemandForecast, in.Previous = 0.81, 30, prev(0.81, -time.Second)
			},
			mult: 0.81, price: 10.13, state: 0.81, util: nan, // 10.125 → 10.13
			contrib: [5]float64{1, 0, 0, -0.19, 0},
			desc:    []string{"0.81 rounded half away from zero to step 0.05: 0.80, brought back within caps to 0.81"},
		},
		{
			// 112.5/15 = 7.5/min: 0.375 → 1.35; 12.5 × 1.35 = 16.875.
			name: "price rounded half up at step 0.01",
			edit: func(in *Input) { in.DemandForecast = 112.5 },
			mult: 1.35, price: 16.88, state: 1.35, util: nan,
			contrib: [5]float64{1, 0.35, 0, 0, 0},
		},
		{
			name: "price rounded at step 0.5",
			edit: func(in *Input) { in.DemandForecast, in.Rule.PriceStep = 112.5, 0.5 },
			mult: 1.35, price: 17, state: 1.35, util: nan, // 33.75 steps → 34
			contrib: [5]float64{1, 0.35, 0, 0, 0},
			desc:    []string{"quoted 17.0 EUR at ×1.35, rounded half up to 0.5"},
		},
		{
			// 75/15 = 5/min: 0.25 → 1.10; 12.5 × 1.1 = 13.75 = 27.5 steps → 28.
			name: "price exactly half a step at 0.5 rounds up",
			edit: func(in *Input) { in.DemandForecast, in.Rule.PriceStep = 75, 0.5 },
			mult: 1.1, price: 14, state: 1.1, util: nan,
			contrib: [5]float64{1, 0.1, 0, 0, 0},
		},
		{
			// 1.15 is 1.149999… in binary; the exact decimal rounds up.
			name: "price rounding is decimal-exact",
			edit: func(in *Input) { in.DemandForecast, in.Rule.BasePrice, in.Rule.PriceStep = 30, 1.15, 0.1 },
			mult: 1, price: 1.2, state: 1, util: nan,
			contrib: [5]float64{1, 0, 0, 0, 0},
		},
		{
			name: "supply unknown",
			edit: func(in *Input) { in.DemandForecast, in.Supply, in.SupplyKnown = 5000, 0, false },
			mult: 1, price: 12.5, state: 1, util: 0.2,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"supply unknown: utilisation taken as threshold 0.2, no surge from the missing signal (forecast 5000 requests over 15 min)"},
		},
		{
			name: "supply NaN is unknown",
			edit: func(in *Input) { in.DemandForecast, in.Supply = 5000, nan },
			mult: 1, price: 12.5, state: 1, util: 0.2,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"supply reading invalid (NaN), treated as unknown"},
		},
		{
			name: "negative supply is unknown",
			edit: func(in *Input) { in.DemandForecast, in.Supply = 5000, -3 },
			mult: 1, price: 12.5, state: 1, util: 0.2,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"supply reading invalid (-3), treated as unknown"},
		},
		{
			// 15/15 = 1/min over max(0, 1) = 1; 1 + 2×0.8 = 2.6.
			name: "zero supply counts as one",
			edit: func(in *Input) { in.DemandForecast, in.Supply, in.Previous = 15, 0, prev(2, 5*time.Minute) },
			mult: 2.6, price: 32.5, state: 2.6, util: 1,
			contrib: [5]float64{1, 1.6, 0, 0, 0},
			desc:    []string{"against 0 available (counted as 1): utilisation 1 vs threshold 0.2"},
		},
		{
			name: "NaN demand is 0",
			edit: func(in *Input) { in.DemandForecast = nan },
			mult: 1, price: 12.5, state: 1, util: 0,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"forecast invalid (NaN, taken as 0) requests over 15 min"},
		},
		{
			name: "+Inf demand is 0",
			edit: func(in *Input) { in.DemandForecast = math.Inf(1) },
			mult: 1, price: 12.5, state: 1, util: 0,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"invalid (+Inf, taken as 0)"},
		},
		{
			name: "-Inf demand is 0",
			edit: func(in *Input) { in.DemandForecast = math.Inf(-1) },
			mult: 1, price: 12.5, state: 1, util: 0,
			contrib: [5]float64{1, 0, 0, 0, 0},
		},
		{
			name: "negative demand is 0",
			edit: func(in *Input) { in.DemandForecast = -40 },
			mult: 1, price: 12.5, state: 1, util: 0,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"invalid (-40, taken as 0)"},
		},
		{
			name: "zero horizon gives a demand rate of 0",
			edit: func(in *Input) { in.DemandForecast, in.HorizonMinutes = 5000, 0 },
			mult: 1, price: 12.5, state: 1, util: 0,
			contrib: [5]float64{1, 0, 0, 0, 0},
			desc:    []string{"over 0 min (invalid horizon, demand rate taken as 0)"},
		},
		{
			name: "absurd demand saturates the raw multiplier",
			edit: func(in *Input) {
				in.DemandForecast, in.Previous = 1e300, prev(3, time.Minute)
			},
			mult: 3, price: 37.5, state: 3, util: nan,
			contrib: [5]float64{1, 999, -997, 0, 0},
			desc:    []string{"= 1000.00 (saturated)"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := Input{
				Rule: testRule(), DemandForecast: 84, HorizonMinutes: 15,
				Supply: 20, SupplyKnown: true, Previous: prev(1, time.Minute), At: t0,
			}
			c.edit(&in)
			q, err := Compute(in)
			if err != nil {
				t.Fatal(err)
			}
			if q.Multiplier != c.mult || q.Price != c.price || q.State.Multiplier != c.state {
				t.Errorf("multiplier %v price %v state %v, want %v %v %v", q.Multiplier, q.Price, q.State.Multiplier, c.mult, c.price, c.state)
			}
			if !q.State.At.Equal(t0) {
				t.Errorf("state at %v, want %v", q.State.At, t0)
			}
			if !math.IsNaN(c.util) && math.Abs(q.Utilisation-c.util) > 1e-12 {
				t.Errorf("utilisation %v, want %v", q.Utilisation, c.util)
			}
			if q.BasePrice != in.Rule.BasePrice || q.Currency != "EUR" {
				t.Errorf("base %v %q", q.BasePrice, q.Currency)
			}
			var all []string
			for i, f := range q.Factors {
				if f.Contribution != c.contrib[i] {
					t.Errorf("%s contribution %v, want %v", f.Name, f.Contribution, c.contrib[i])
				}
				all = append(all, f.Name+": "+f.Description)
			}
			joined := strings.Join(all, "\n")
			for _, d := range c.desc {
				if !strings.Contains(joined, d) {
					t.Errorf("descriptions lack %q:\n%s", d, joined)
				}
			}
			checkQuote(t, in, q)
		})
	}
}

func TestComputeInvalidRule(t *testing.T) {
	in := Input{Rule: testRule(), DemandForecast: 84, HorizonMinutes: 15, At: t0}
	in.Rule.MultiplierStep = 0
	in.Rule.BasePrice = 12.34567
	_, err := Compute(in)
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a FieldError", err)
	}
	for _, want := range []string{"multiplierStep: must be between", "basePrice: must have at most 4 decimal places"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %q", err, want)
		}
	}
}

func TestValidateExactUnits(t *testing.T) {
	if err := testRule().Validate(); err != nil {
		t.Fatal(err)
	}
	edits := map[string]func(*Rule){
		"basePrice":        func(r *Rule) { r.BasePrice = 0.00001 + 12 },
		"minMultiplier":    func(r *Rule) { r.MinMultiplier = 0.12345 },
		"maxMultiplier":    func(r *Rule) { r.MaxMultiplier = 2.00005 },
		"maxStepPerMinute": func(r *Rule) { r.MaxStepPerMinute = math.Inf(1) },
		"threshold":        func(r *Rule) { r.Threshold = math.Inf(1) },
		"multiplierStep":   func(r *Rule) { r.MultiplierStep = 0.00015 },
		"priceStep":        func(r *Rule) { r.PriceStep = 0.015001 },
	}
	for field, edit := range edits {
		r := testRule()
		edit(&r)
		err := r.Validate()
		if err == nil || !strings.Contains(err.Error(), field+":") {
			t.Errorf("%s: err = %v", field, err)
		}
	}
	// Large but exact values are accepted.
	r := testRule()
	r.BasePrice, r.PriceStep, r.MaxMultiplier, r.MaxStepPerMinute = 999999.9999, 0.0125, 19.9999, 20
	if err := r.Validate(); err != nil {
		t.Error(err)
	}
}

// TestFrequentQuotesStillMove quotes every second: each quote's allowance
// (83 bps) is below half a multiplier step (250 bps), so the multiplier must
// still climb because the state keeps the unrounded value.
func TestFrequentQuotesStillMove(t *testing.T) {
	in := Input{Rule: testRule(), DemandForecast: 3000, HorizonMinutes: 15, Supply: 20, SupplyKnown: true, At: t0}
	var last Quote
	for i := range 300 {
		q, err := Compute(in)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && q.Multiplier < last.Multiplier {
			t.Fatalf("quote %d went down: %v → %v", i, last.Multiplier, q.Multiplier)
		}
		last = q
		in.Previous = &q.State
		in.At = in.At.Add(time.Second)
	}
	// From 1.5 (first quote) to 3.0 at 0.5/min takes 3 minutes.
	if last.Multiplier != 3 {
		t.Fatalf("after 5 minutes of 1-second quotes the multiplier is %v, want 3", last.Multiplier)
	}
}

func TestComputeDeterministic(t *testing.T) {
	in := Input{Rule: testRule(), DemandForecast: 84, HorizonMinutes: 15, Supply: 20, SupplyKnown: true, Previous: prev(1, 40*time.Second), At: t0}
	a, _ := Compute(in)
	for range 100 {
		b, _ := Compute(in)
		if !quotesEqual(a, b) {
			t.Fatalf("%+v\n!=\n%+v", a, b)
		}
	}
}

func TestAllowance(t *testing.T) {
	for _, c := range []struct {
		per     int64
		elapsed time.Duration
		want    int64
	}{
		{5000, time.Minute, 5000},
		{5000, 80 * time.Second, 6666}, // floor
		{2900, time.Minute, 2900},
		{1, time.Nanosecond, 0},
		{5000, -time.Second, 0},
		{1, math.MaxInt64, int64(math.MaxInt64) / int64(time.Minute)},
		{200000, math.MaxInt64, 200000*(int64(math.MaxInt64)/int64(time.Minute)) + 200000*(int64(math.MaxInt64)%int64(time.Minute))/int64(time.Minute)},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64}, // saturates
	} {
		if got := allowance(c.per, c.elapsed); got != c.want {
			t.Errorf("allowance(%d, %v) = %d, want %d", c.per, c.elapsed, got, c.want)
		}
	}
}

func TestAppendNum(t *testing.T) {
	for x, want := range map[float64]string{
		0: "0", 84: "84", 0.28: "0.28", 0.27999999999999997: "0.28", 83.7421875: "83.7422",
		-0.00001: "0", -3: "-3", 1e300: "1e+300", 2.5e9: "2.5e+09",
	} {
		if got := string(appendNum(nil, x)); got != want {
			t.Errorf("appendNum(%v) = %q, want %q", x, got, want)
		}
	}
	for _, c := range []struct {
		n    int64
		min  int
		want string
	}{{11600, 2, "1.16"}, {10000, 2, "1.00"}, {12345, 2, "1.2345"}, {-100, 2, "-0.01"}, {125000, 0, "12.5"}, {10000, 0, "1"}, {5, 0, "0.0005"}} {
		if got := string(appendDec(nil, c.n, c.min)); got != c.want {
			t.Errorf("appendDec(%d, %d) = %q, want %q", c.n, c.min, got, c.want)
		}
	}
}

func BenchmarkCompute(b *testing.B) {
	in := Input{Rule: testRule(), DemandForecast: 84, HorizonMinutes: 15, Supply: 20, SupplyKnown: true, Previous: prev(1, 40*time.Second), At: t0}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compute(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkComputeNumbersOnly measures the arithmetic without validation
// and descriptions, to show what the descriptions cost.
func BenchmarkComputeNumbersOnly(b *testing.B) {
	in := Input{Rule: testRule(), DemandForecast: 84, HorizonMinutes: 15, Supply: 20, SupplyKnown: true, Previous: prev(1, 40*time.Second), At: t0}
	b.ReportAllocs()
	for b.Loop() {
		var c calc
		c.run(&in)
		if c.final == 0 {
			b.Fatal("zero")
		}
	}
}

func TestDemandUnknownGivesNoSurge(t *testing.T) {
	r := testRule()
	q, err := Compute(Input{Rule: r, DemandForecast: 1e6, DemandUnknown: true, HorizonMinutes: 15, Supply: 1, SupplyKnown: true, At: time.Unix(1_700_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if q.Multiplier != 1 || q.Factors[1].Contribution != 0 {
		t.Fatalf("multiplier %v, demand_supply %v: want 1 and 0", q.Multiplier, q.Factors[1].Contribution)
	}
	if !strings.Contains(q.Factors[1].Description, "no demand forecast") {
		t.Fatalf("description %q does not say the forecast is missing", q.Factors[1].Description)
	}
}
