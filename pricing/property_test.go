package pricing

import (
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// checkQuote checks every invariant of a quote against its input, computing
// the expected values independently of the engine (math/big for amounts).
func checkQuote(t testing.TB, in Input, q Quote) {
	t.Helper()
	r := in.Rule
	bp := func(x float64) int64 { return int64(math.Round(x * 1e4)) }
	exact := func(what string, x float64) {
		if !finite(x) || float64(bp(x))/1e4 != x {
			t.Errorf("%s = %v is not an exact number of basis points", what, x)
		}
	}
	names := []string{FactorBase, FactorDemandSupply, FactorRegulatoryCap, FactorSmoothing, FactorRounding}
	if len(q.Factors) != len(names) {
		t.Fatalf("%d factors, want %d", len(q.Factors), len(names))
	}
	var f [5]int64
	var sum int64
	for i, fa := range q.Factors {
		if fa.Name != names[i] {
			t.Errorf("factor %d is %q, want %q", i, fa.Name, names[i])
		}
		if fa.Description == "" {
			t.Errorf("factor %s has no description", fa.Name)
		}
		exact(fa.Name, fa.Contribution)
		f[i] = bp(fa.Contribution)
		sum += f[i]
	}
	exact("multiplier", q.Multiplier)
	exact("state multiplier", q.State.Multiplier)
	final, state := bp(q.Multiplier), bp(q.State.Multiplier)
	if f[0] != 10000 {
		t.Errorf("base contribution %d bps, want 10000", f[0])
	}
	if sum != final {
		t.Errorf("factors add up to %d bps, multiplier is %d bps", sum, final)
	}

	minB, maxB, stepB, perMin := bp(r.MinMultiplier), bp(r.MaxMultiplier), bp(r.MultiplierStep), bp(r.MaxStepPerMinute)
	raw := 10000 + f[1]
	capped := raw + f[2]
	smoothed := capped + f[3]
	if raw < 10000 {
		t.Errorf("raw %d bps below 1.0 (no discount)", raw)
	}
	if (!in.SupplyKnown || !finite(in.Supply) || in.Supply < 0) && raw != 10000 {
		t.Errorf("raw %d bps with supply unknown, want 10000", raw)
	}
	if capped != min(max(raw, minB), maxB) {
		t.Errorf("capped %d bps is not raw %d within [%d, %d]", capped, raw, minB, maxB)
	}
	if smoothed != state {
		t.Errorf("smoothed %d bps, state %d bps", smoothed, state)
	}
	for what, v := range map[string]int64{"multiplier": final, "state": state} {
		if v < minB || v > maxB {
			t.Errorf("%s %d bps outside caps [%d, %d]", what, v, minB, maxB)
		}
	}

	// Smoothing: p is the previous multiplier within caps, a the allowance.
	p, elapsed := int64(10000), time.Minute
	if pv := in.Previous; pv != nil && pv.Multiplier > 0 && !math.IsInf(pv.Multiplier, 1) {
		p = min(max(int64(math.Round(min(pv.Multiplier, 1e6)*1e4)), minB), maxB)
		switch {
		case pv.At.IsZero():
		case in.At.Before(pv.At):
			elapsed = 0
		default:
			elapsed = in.At.Sub(pv.At)
		}
	}
	a := new(big.Int).Mul(big.NewInt(perMin), big.NewInt(int64(elapsed)))
	a.Quo(a, big.NewInt(int64(time.Minute)))
	dist := new(big.Int).Abs(big.NewInt(capped - p))
	want := capped
	if dist.Cmp(a) > 0 { // not reachable: moves by exactly a towards capped
		d := a.Int64()
		if capped < p {
			d = -d
		}
		want = p + d
	}
	if state != want {
		t.Errorf("state %d bps, want %d (previous %d, allowance %v, target %d)", state, want, p, a, capped)
	}
	// |final − p| ≤ a + step/2, and precisely |final − state| ≤ step/2.
	if d := final - state; 2*max(d, -d) > stepB {
		t.Errorf("final %d bps is more than half a step %d from smoothed %d", final, stepB, state)
	}
	if final != minB && final != maxB && final%stepB != 0 {
		t.Errorf("final %d bps is neither a multiple of the step %d nor a cap", final, stepB)
	}

	// Price, exactly.
	dec := func(x float64) *big.Rat {
		v, ok := new(big.Rat).SetString(strconv.FormatFloat(x, 'f', -1, 64))
		if !ok {
			t.Fatalf("bad decimal %v", x)
		}
		return v
	}
	step := dec(r.PriceStep)
	x := new(big.Rat).Mul(dec(r.BasePrice), big.NewRat(final, 10000))
	x.Quo(x, step)
	x.Add(x, big.NewRat(1, 2))
	n := new(big.Int).Quo(x.Num(), x.Denom()) // floor, x ≥ 0
	wantPrice, _ := new(big.Rat).Mul(new(big.Rat).SetInt(n), step).Float64()
	if q.Price != wantPrice {
		t.Errorf("price %v, want %v (base %v × %v at step %v)", q.Price, wantPrice, r.BasePrice, q.Multiplier, r.PriceStep)
	}

	if !finite(q.Utilisation) || q.Utilisation < 0 {
		t.Errorf("utilisation %v", q.Utilisation)
	}
	if !q.State.At.Equal(in.At) {
		t.Errorf("state at %v, want %v", q.State.At, in.At)
	}
	if q.BasePrice != r.BasePrice || q.Currency != r.Currency {
		t.Errorf("base %v %q", q.BasePrice, q.Currency)
	}
}

func quotesEqual(a, b Quote) bool {
	return reflect.DeepEqual(a, b) // no NaN can occur in a Quote
}

// randomRule draws a valid rule; amounts are whole units of 0.0001 written
// as decimals, as an operator would.
func randomRule(rng *rand.Rand) Rule {
	u4 := func(lo, hi int64) float64 { return float64(lo+rng.Int64N(hi-lo+1)) / 1e4 }
	r := testRule()
	r.BasePrice = u4(1, 1e10)
	if rng.IntN(2) == 0 {
		r.BasePrice = u4(1, 100_0000) // up to 100, more typical
	}
	r.MinMultiplier = u4(1, 10000)
	r.MaxMultiplier = u4(10000, 200000)
	if rng.IntN(4) == 0 {
		r.MaxMultiplier = u4(10000, 30000)
	}
	r.MaxStepPerMinute = u4(1, 200000)
	if rng.IntN(2) == 0 {
		r.MaxStepPerMinute = u4(1, 10000)
	}
	r.Threshold = rng.Float64() * 2
	r.Sensitivity = rng.Float64() * 10
	if rng.IntN(8) == 0 {
		r.Sensitivity = rng.Float64() * 100
	}
	r.MultiplierStep = u4(1, 10000)
	if rng.IntN(2) == 0 {
		r.MultiplierStep = float64([]int64{1, 100, 500, 1000, 2500}[rng.IntN(5)]) / 1e4
	}
	r.PriceStep = u4(100, 1000000)
	if rng.IntN(2) == 0 {
		r.PriceStep = []float64{0.01, 0.05, 0.1, 0.5, 1}[rng.IntN(5)]
	}
	return r
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

func randomInput(rng *rand.Rand) Input {
	in := Input{
		Rule:           randomRule(rng),
		DemandForecast: rng.Float64() * 1000,
		HorizonMinutes: 1 + rng.IntN(120),
		Supply:         float64(rng.IntN(200)),
		SupplyKnown:    rng.IntN(8) != 0,
		At:             t0.Add(time.Duration(rng.Int64N(int64(24 * time.Hour)))),
	}
	if rng.IntN(10) == 0 {
		in.DemandForecast = pick(rng, math.NaN(), math.Inf(1), math.Inf(-1), -5, 0, 1e300, math.MaxFloat64, 5e-324)
	}
	if rng.IntN(10) == 0 {
		in.HorizonMinutes = pick(rng, 0, -15, math.MaxInt)
	}
	if rng.IntN(10) == 0 {
		in.Supply = pick(rng, math.NaN(), math.Inf(1), -1, 0.5, 1e300)
	}
	if rng.IntN(6) != 0 {
		pv := State{
			Multiplier: float64(rng.Int64N(250000)) / 1e4,
			At:         in.At.Add(-time.Duration(rng.Int64N(int64(10*time.Minute))) + time.Duration(rng.Int64N(int64(time.Minute/2)))),
		}
		if rng.IntN(10) == 0 {
			pv.Multiplier = pick(rng, math.NaN(), math.Inf(1), math.Inf(-1), 0, -1, 1e300, rng.Float64()*5)
		}
		if rng.IntN(20) == 0 {
			pv.At = pick(rng, time.Time{}, in.At.Add(-100*365*24*time.Hour), in.At.Add(time.Hour))
		}
		in.Previous = &pv
	}
	return in
}

func TestComputeProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(20260314, 1))
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	for i := range n {
		in := randomInput(rng)
		if err := in.Rule.Validate(); err != nil {
			t.Fatalf("case %d: generated rule invalid: %v", i, err)
		}
		q, err := Compute(in)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		checkQuote(t, in, q)
		// Deterministic: the same input gives the same quote.
		if q2, _ := Compute(in); !quotesEqual(q, q2) {
			t.Fatalf("case %d: not deterministic:\n%+v\n%+v", i, q, q2)
		}
		// Monotonic in demand: more demand never lowers the multiplier.
		if finite(in.DemandForecast) && in.DemandForecast >= 0 {
			more := in
			more.DemandForecast = in.DemandForecast*(1+rng.Float64()) + rng.Float64()*100
			if q2, _ := Compute(more); finite(more.DemandForecast) && (q2.Multiplier < q.Multiplier || q2.State.Multiplier < q.State.Multiplier) {
				t.Fatalf("case %d: demand %v → %v lowered the multiplier %v → %v", i, in.DemandForecast, more.DemandForecast, q.Multiplier, q2.Multiplier)
			}
		}
		if t.Failed() {
			t.Fatalf("case %d: input %+v (previous %+v)\nquote %+v", i, in, in.Previous, q)
		}
	}
}

// TestComputeChains follows the persisted state over sequences of quotes:
// over any stretch the smoothed multiplier moves by at most the allowance
// of the elapsed time, and the quoted one by that plus half a step.
func TestComputeChains(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for range 2000 {
		in := randomInput(rng)
		in.Previous = nil
		in.SupplyKnown = true
		in.HorizonMinutes = 15
		in.Supply = float64(1 + rng.IntN(50))
		start := in.At
		var first Quote
		for j := range 50 {
			in.DemandForecast = rng.Float64() * 2000
			q, err := Compute(in)
			if err != nil {
				t.Fatal(err)
			}
			checkQuote(t, in, q)
			if j == 0 {
				first = q
			} else {
				per := int64(math.Round(in.Rule.MaxStepPerMinute * 1e4))
				a := new(big.Int).Mul(big.NewInt(per), big.NewInt(int64(in.At.Sub(start))))
				a.Quo(a, big.NewInt(int64(time.Minute)))
				d := int64(math.Round((q.State.Multiplier - first.State.Multiplier) * 1e4))
				if big.NewInt(max(d, -d)).Cmp(a) > 0 {
					t.Fatalf("state moved %d bps over %v, allowance %v", d, in.At.Sub(start), a)
				}
			}
			in.Previous = &q.State
			in.At = in.At.Add(time.Duration(rng.Int64N(int64(90 * time.Second))))
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}

func FuzzCompute(f *testing.F) {
	f.Add(84.0, 15, 20.0, true, 1.0, int64(time.Minute), 2.0, 0.2)
	f.Add(math.NaN(), 0, math.Inf(1), true, math.NaN(), int64(-time.Second), 100.0, 0.0)
	f.Add(1e300, -1, 0.0, false, 25.0, int64(math.MaxInt64), 0.0, 1000.0)
	f.Fuzz(func(t *testing.T, demand float64, horizon int, supply float64, known bool, prevMult float64, ago int64, sens, thr float64) {
		in := Input{
			Rule: testRule(), DemandForecast: demand, HorizonMinutes: horizon,
			Supply: supply, SupplyKnown: known, Previous: &State{prevMult, t0.Add(-time.Duration(ago))}, At: t0,
		}
		if finite(sens) && sens >= 0 && sens <= 100 {
			in.Rule.Sensitivity = sens
		}
		if finite(thr) && thr >= 0 && thr <= 1000 {
			in.Rule.Threshold = thr
		}
		q, err := Compute(in)
		if err != nil {
			t.Fatal(err)
		}
		checkQuote(t, in, q)
	})
}
