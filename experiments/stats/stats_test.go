package stats

import (
	"math"
	"slices"
	"testing"
)

// close reports whether got is within tol of want (absolute, or relative
// for large values).
func close(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// moments builds the sufficient statistics of raw per-unit values.
func moments(xs ...float64) Moments {
	var m Moments
	for _, x := range xs {
		m.N++
		m.Sum += x
		m.SumSq += x * x
	}
	return m
}

// fromSummary builds Moments from n, mean and sample standard deviation:
// Sum = n·mean, SumSq = (n−1)s² + n·mean².
func fromSummary(n, mean, sd float64) Moments {
	return Moments{N: n, Sum: n * mean, SumSq: (n-1)*sd*sd + n*mean*mean}
}

func TestMoments(t *testing.T) {
	tests := []struct {
		name     string
		m        Moments
		mean, vr float64
	}{
		// SOURCE: by hand, {2,4,4,4,5,5,7,9}: mean 40/8 = 5, Σ(x−5)² = 32,
		// sample variance 32/7 (the classic population-sd-2 example).
		{"classic", moments(2, 4, 4, 4, 5, 5, 7, 9), 5, 32.0 / 7},
		{"empty", Moments{}, 0, 0},
		{"one unit", moments(3), 3, 0},
		// SOURCE: constant values have variance 0; 0.1 is not exact in
		// binary, so the one-pass formula may round below 0 and is clamped.
		{"constant 0.1", moments(0.1, 0.1, 0.1), 0.1, 0},
		{"rounding negative", Moments{N: 3, Sum: 0.3, SumSq: 0.03 - 1e-18}, 0.1, 0},
		{"NaN sum", Moments{N: 3, Sum: math.NaN(), SumSq: 1}, 0, 0},
		{"negative N", Moments{N: -1, Sum: 2, SumSq: 4}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.Mean(); !close(got, tt.mean, 1e-12) {
				t.Errorf("Mean = %v, want %v", got, tt.mean)
			}
			got := tt.m.Variance()
			if !close(got, tt.vr, 1e-12) || got < 0 {
				t.Errorf("Variance = %v, want %v", got, tt.vr)
			}
		})
	}
	if (Paired{Y: moments(1, 2), X: moments(1, 1)}).HasCovariate() {
		t.Error("constant covariate reported usable")
	}
	if !(Paired{Y: moments(1, 2), X: moments(1, 2)}).HasCovariate() {
		t.Error("varying covariate reported unusable")
	}
}

func TestTwoProportionZ(t *testing.T) {
	tests := []struct {
		name string
		c, t Moments
		z, p float64
	}{
		// SOURCE: by hand. Control 200/1000, treatment 250/1000. Pooled
		// p̂ = 450/2000 = 0.225, se = sqrt(0.225·0.775·(1/1000+1/1000)) =
		// sqrt(0.00034875) = 0.0186748; z = 0.05/0.0186748 = 2.677398;
		// p = 2(1−Φ(2.677398)) = 0.0074196. Equivalently R
		// prop.test(c(250, 200), c(1000, 1000), correct = FALSE):
		// X-squared = z² = 7.1685, p-value = 0.00742.
		{"textbook 20% vs 25%", Moments{1000, 200, 200}, Moments{1000, 250, 250}, 2.6773977630083294, 0.007419649261025679},
		// SOURCE: by hand, a negative difference is antisymmetric.
		{"reversed", Moments{1000, 250, 250}, Moments{1000, 200, 200}, -2.6773977630083294, 0.007419649261025679},
		// SOURCE: identical proportions: z = 0, p = 1.
		{"equal", Moments{500, 50, 50}, Moments{800, 80, 80}, 0, 1},
		// Degenerate: no units, all successes (pooled p̂ = 1, se = 0).
		{"no units", Moments{}, Moments{100, 10, 10}, 0, 1},
		{"all successes", Moments{10, 10, 10}, Moments{10, 10, 10}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, p := TwoProportionZ(tt.c, tt.t)
			if !close(z, tt.z, 1e-9) || !close(p, tt.p, 1e-9) {
				t.Errorf("TwoProportionZ = (%v, %v), want (%v, %v)", z, p, tt.z, tt.p)
			}
		})
	}
}

// tTwoSided is 2·P(T_ν > |t|) by Simpson integration of the Student t
// density f(x) = Γ((ν+1)/2)/(sqrt(νπ)Γ(ν/2))·(1+x²/ν)^(−(ν+1)/2) over
// [0, |t|]: an independent check of the library's incomplete beta.
func tTwoSided(tstat, nu float64) float64 {
	lg1, _ := math.Lgamma((nu + 1) / 2)
	lg2, _ := math.Lgamma(nu / 2)
	k := math.Exp(lg1-lg2) / math.Sqrt(nu*math.Pi)
	f := func(x float64) float64 { return k * math.Pow(1+x*x/nu, -(nu+1)/2) }
	const n = 20000
	a, b := 0.0, math.Abs(tstat)
	h := (b - a) / n
	s := f(a) + f(b)
	for i := 1; i < n; i++ {
		w := 2.0
		if i%2 == 1 {
			w = 4
		}
		s += w * f(a+float64(i)*h)
	}
	return 1 - 2*s*h/3
}

func TestWelchT(t *testing.T) {
	tests := []struct {
		name      string
		c, t      Moments
		tstat, df float64
		p         float64
		tolP      float64
	}{
		// SOURCE: by hand. Control {1,3}, treatment {4,6}: means 2 and 5,
		// variances 2 and 2, se = sqrt(2/2+2/2) = √2, t = 3/√2 = 2.12132;
		// df = (1+1)²/(1²/1+1²/1) = 2. For ν = 2 the t CDF is closed form,
		// F(t) = ½ + t/(2·sqrt(2+t²)), so p = 1 − t/sqrt(2+t²) =
		// 1 − sqrt(4.5/6.5) = 1 − 3/√13 = 0.1679497.
		{"df 2 closed form", moments(1, 3), moments(4, 6), 3 / math.Sqrt2, 2, 1 - 3/math.Sqrt(13), 1e-9},
		// SOURCE: by hand. Control {5,5,5} (variance 0), treatment {1,3}:
		// t = (2−5)/sqrt(2/2) = −3, df = nt−1 = 1 (Cauchy):
		// p = 1 − (2/π)·atan(3) = 0.2048328.
		{"df 1 Cauchy", moments(5, 5, 5), moments(1, 3), -3, 1, 1 - 2/math.Pi*math.Atan(3), 1e-9},
		// SOURCE: by hand. Control {5,5,5}, treatment {1,2,3,4,5}: mean 3,
		// variance 2.5, t = −2/sqrt(0.5) = −2.828427, df = 4. For ν = 4,
		// F(t) = ½ + (3/8)·(t/sqrt(1+t²/4))·(1 − t²/(12(1+t²/4))), so
		// p = 1 − (3/4)·(2.828427/√3)·(1 − 8/36) = 0.0474207.
		{"df 4 closed form", moments(5, 5, 5), moments(1, 2, 3, 4, 5), -2 * math.Sqrt2, 4, 0.04742065558431974, 1e-9},
		// SOURCE: textbook exercise (n = 20, x̄ = 100, s = 15 vs n = 20,
		// x̄ = 95, s = 20; senseofstudy.com two-sample tests, example 4):
		// se = sqrt(225/20 + 400/20) = sqrt(31.25) = 5.5902, t = 0.894427
		// (treatment 100 minus control 95), df = 31.25²/((11.25² + 20²)/19)
		// = 976.5625/27.7138 = 35.2374; p by Simpson integration of the t
		// density (tTwoSided) ≈ 0.377.
		{"textbook unequal variances", fromSummary(20, 95, 20), fromSummary(20, 100, 15), 0.8944271909999159, 35.23738872403561, tTwoSided(0.8944271909999159, 35.23738872403561), 1e-8},
		// Degenerate: constant values (se = 0), one unit each, no units.
		{"constant", moments(2, 2, 2), moments(3, 3, 3), 0, 0, 1, 0},
		{"one unit each", moments(2), moments(3), 0, 0, 1, 0},
		{"no units", Moments{}, moments(1, 2, 3), 0, 0, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, df, p := WelchT(tt.c, tt.t)
			if !close(ts, tt.tstat, 1e-9) || !close(df, tt.df, 1e-9) || !close(p, tt.p, tt.tolP) {
				t.Errorf("WelchT = (%v, %v, %v), want (%v, %v, %v)", ts, df, p, tt.tstat, tt.df, tt.p)
			}
		})
	}
}

func TestHolmBH(t *testing.T) {
	tests := []struct {
		name     string
		p        []float64
		holm, bh []float64
	}{
		// SOURCE: by hand (= R p.adjust). Sorted: 0.005, 0.01, 0.03, 0.04
		// (m = 4). Holm: 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06,
		// 1·0.04 = 0.04 → cummax 0.06. BH: 0.04·4/4 = 0.04, 0.03·4/3 = 0.04,
		// 0.01·4/2 = 0.02, 0.005·4/1 = 0.02, cummin from the top.
		{"four", []float64{0.01, 0.04, 0.03, 0.005}, []float64{0.03, 0.06, 0.06, 0.02}, []float64{0.02, 0.04, 0.04, 0.02}},
		// SOURCE: by hand. Sorted 0.01, 0.02, 0.3, 0.5, 0.9 (m = 5).
		// Holm: 0.05, 0.08, 0.9, min(1, 2·0.5) = 1, 0.9 → cummax 1.
		// BH: 0.01·5 = 0.05, 0.02·5/2 = 0.05, 0.3·5/3 = 0.5,
		// 0.5·5/4 = 0.625, 0.9·5/5 = 0.9 (already monotone).
		{"five", []float64{0.5, 0.9, 0.01, 0.02, 0.3}, []float64{1, 1, 0.05, 0.08, 0.9}, []float64{0.625, 0.9, 0.05, 0.05, 0.5}},
		// SOURCE: by hand, capping: Holm 2·0.6 = 1.2 → 1, then cummax 1.
		// BH: 0.7·2/2 = 0.7, 0.6·2/1 = 1.2 → min(1, 0.7) = 0.7.
		{"cap", []float64{0.6, 0.7}, []float64{1, 1}, []float64{0.7, 0.7}},
		// SOURCE: ties: BH of {0.02, 0.02}: 0.02·2/2 = 0.02 both; Holm
		// 2·0.02 = 0.04 then max(0.04, 0.02) = 0.04.
		{"ties", []float64{0.02, 0.02}, []float64{0.04, 0.04}, []float64{0.02, 0.02}},
		{"single", []float64{0.03}, []float64{0.03}, []float64{0.03}},
		// NaN is read as 1 (no evidence).
		{"NaN", []float64{math.NaN(), 0.01}, []float64{1, 0.02}, []float64{1, 0.02}},
		{"empty", []float64{}, []float64{}, []float64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.p)
			holm, bh := Holm(tt.p), BenjaminiHochberg(tt.p)
			for i := range tt.holm {
				if !close(holm[i], tt.holm[i], 1e-12) || !close(bh[i], tt.bh[i], 1e-12) {
					t.Fatalf("Holm = %v, BH = %v, want %v, %v", holm, bh, tt.holm, tt.bh)
				}
			}
			if len(holm) != len(tt.p) || len(bh) != len(tt.p) {
				t.Fatalf("lengths %d, %d, want %d", len(holm), len(bh), len(tt.p))
			}
			for i := range in {
				if !(in[i] == tt.p[i] || math.IsNaN(in[i])) {
					t.Fatal("input modified")
				}
			}
		})
	}
}

func TestSampleRatioMismatch(t *testing.T) {
	tests := []struct {
		name           string
		counts, weight []float64
		chi2, p        float64
	}{
		// SOURCE: by hand. 50,000 vs 51,000 at 50/50: expected 50,500 each,
		// chi2 = 2·500²/50500 = 9.90099; with 1 df, p = 2·(1−Φ(sqrt(9.90099)))
		// = 2·(1−Φ(3.146584)) = erfc(3.146584/√2) = 0.0016519.
		{"50k vs 51k", []float64{50000, 51000}, []float64{50, 50}, 9.900990099009901, 0.0016518987323573646},
		// SOURCE: by hand. Weights need not sum to 1: 1:1 is 50/50.
		{"unnormalised", []float64{50000, 51000}, []float64{1, 1}, 9.900990099009901, 0.0016518987323573646},
		// SOURCE: by hand. 100, 100, 130 at equal weights: expected 110,
		// chi2 = (100+100+400)/110 = 5.454545; with 2 df the survival is
		// exp(−chi2/2) = exp(−2.727273) = 0.0653974.
		{"three variants", []float64{100, 100, 130}, []float64{1, 1, 1}, 600.0 / 110, math.Exp(-600.0 / 220)},
		// SOURCE: by hand. 90/10 split observed exactly: chi2 = 0, p = 1.
		{"exact 90/10", []float64{900, 100}, []float64{90, 10}, 0, 1},
		{"no units", []float64{0, 0}, []float64{50, 50}, 0, 1},
		{"one variant", []float64{10}, []float64{1}, 0, 1},
		{"length mismatch", []float64{10, 20}, []float64{1}, 0, 1},
		{"zero weight with units", []float64{10, 20}, []float64{1, 0}, math.MaxFloat64, 0},
		// SOURCE: a zero-weight variant without units is ignored; 1:1 on the
		// other two, exact → chi2 0.
		{"zero weight no units", []float64{10, 10, 0}, []float64{1, 1, 0}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chi2, p := SampleRatioMismatch(tt.counts, tt.weight)
			if !close(chi2, tt.chi2, 1e-9) || !close(p, tt.p, 1e-9) {
				t.Errorf("SRM = (%v, %v), want (%v, %v)", chi2, p, tt.chi2, tt.p)
			}
		})
	}
}

func TestMinimumDetectableEffect(t *testing.T) {
	z975 := math.Sqrt2 * math.Erfinv(0.95) // Φ⁻¹(0.975) = 1.959964
	z80 := math.Sqrt2 * math.Erfinv(0.6)   // Φ⁻¹(0.8) = 0.841621
	tests := []struct {
		name                       string
		varC, varT, nC, nT, al, pw float64
		want                       float64
	}{
		// SOURCE: by hand. A 10% conversion rate (variance 0.1·0.9 = 0.09)
		// with 10,000 users per variant: (1.959964 + 0.841621)·
		// sqrt(0.09/10000·2) = 2.801585·0.0042426 = 0.0118861 (1.19
		// points, the classic "≈ 2.8 standard errors").
		{"conversion", 0.09, 0.09, 10000, 10000, 0.05, 0.8, 0.011886119434798033},
		// SOURCE: defaults (0 → α 0.05, power 0.8) give the same.
		{"defaults", 0.09, 0.09, 10000, 10000, 0, 0, 0.011886119434798033},
		// SOURCE: by hand, unequal: (z975+z80)·sqrt(4/100 + 9/400).
		{"unequal", 4, 9, 100, 400, 0.05, 0.8, (z975 + z80) * math.Sqrt(4.0/100+9.0/400)},
		// SOURCE: α = 0.01, power 0.9: Φ⁻¹(0.995) + Φ⁻¹(0.9) =
		// 2.5758293 + 1.2815516 = 3.8573809 (standard normal table),
		// times sqrt(1/50+1/50) = 0.2.
		{"alpha 1% power 90%", 1, 1, 50, 50, 0.01, 0.9, (2.5758293035489 + 1.2815515655446) * 0.2},
		{"no units", 1, 1, 0, 10, 0.05, 0.8, 0},
		{"zero variance", 0, 0, 10, 10, 0.05, 0.8, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MinimumDetectableEffect(tt.varC, tt.varT, tt.nC, tt.nT, tt.al, tt.pw)
			if !close(got, tt.want, 1e-8) {
				t.Errorf("MDE = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWinsorize(t *testing.T) {
	oneTo100 := make([]float64, 100)
	for i := range oneTo100 {
		oneTo100[(i*37)%100] = float64(i + 1) // 1..100, shuffled
	}
	tests := []struct {
		name string
		xs   []float64
		pct  float64
		cap  float64 // values above are capped to it; NaN: unchanged
	}{
		// SOURCE: by hand, type-7 quantile of 1..100 at 0.99:
		// h = 99·0.99 = 98.01, x(98) + 0.01·(x(99) − x(98)) = 99 + 0.01 =
		// 99.01 (numpy.quantile(range(1, 101), 0.99) = 99.01).
		{"1..100 at 99%", oneTo100, 0.99, 99.01},
		// SOURCE: by hand, {1, 2, 3, 4, 1000} at 0.5: h = 2, x(2) = 3.
		{"median", []float64{1000, 2, 3, 4, 1}, 0.5, 3},
		// SOURCE: by hand, {0, 10} at 0.75: h = 0.75, 0 + 0.75·10 = 7.5.
		{"interpolate", []float64{10, 0}, 0.75, 7.5},
		{"pct 1 keeps", []float64{1, 2, 3}, 1, math.NaN()},
		{"pct 0 keeps", []float64{1, 2, 3}, 0, math.NaN()},
		{"single", []float64{5}, 0.5, math.NaN()},
		{"empty", nil, 0.99, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.xs)
			got := Winsorize(tt.xs, tt.pct)
			if got == nil || len(got) != len(tt.xs) {
				t.Fatalf("Winsorize returned %v", got)
			}
			if !slices.Equal(in, tt.xs) {
				t.Fatal("input modified")
			}
			for i, x := range tt.xs {
				want := x
				if !math.IsNaN(tt.cap) && x > tt.cap {
					want = tt.cap
				}
				if !close(got[i], want, 1e-12) {
					t.Fatalf("Winsorize(%v)[%d] = %v, want %v", x, i, got[i], want)
				}
			}
			if len(got) > 0 && &got[0] == &tt.xs[0] {
				t.Fatal("not a new slice")
			}
		})
	}
}

func TestRatio(t *testing.T) {
	// Every unit with one booking: the ratio is the mean of the numerator,
	// with its variance.
	ys := []float64{0, 1, 0, 0, 1, 1, 0, 1}
	var y, x Moments
	var xy float64
	for _, v := range ys {
		y.N, y.Sum, y.SumSq = y.N+1, y.Sum+v, y.SumSq+v*v
		x.N, x.Sum, x.SumSq = x.N+1, x.Sum+1, x.SumSq+1
		xy += v
	}
	r := Ratio(y, x, xy)
	if math.Abs(r.Mean()-y.Mean()) > 1e-12 || math.Abs(r.Variance()-y.Variance()) > 1e-12 {
		t.Errorf("ratio with X = 1: mean %g var %g, want %g %g", r.Mean(), r.Variance(), y.Mean(), y.Variance())
	}
	// Units without a denominator count as units and add no evidence.
	if r := Ratio(Moments{N: 10}, Moments{N: 10}, 0); r.N != 10 || r.Mean() != 0 || r.Variance() != 0 {
		t.Errorf("empty ratio %+v", r)
	}
	// Y = 2X exactly: the ratio is 2 with no variance.
	if r := Ratio(Moments{N: 3, Sum: 12, SumSq: 2*2 + 4*4 + 6*6}, Moments{N: 3, Sum: 6, SumSq: 1 + 4 + 9}, 2*1+4*2+6*3); math.Abs(r.Mean()-2) > 1e-12 || r.Variance() > 1e-9 {
		t.Errorf("Y = 2X: %+v mean %g var %g", r, r.Mean(), r.Variance())
	}
}
