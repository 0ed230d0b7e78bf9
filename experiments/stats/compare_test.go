package stats

import (
	"math"
	"reflect"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"
)

// z975 is Φ⁻¹(0.975) = 1.959964, from the inverse error function.
var z975 = math.Sqrt2 * math.Erfinv(0.95)

// allFinite fails the test when any float field of c is NaN or ±Inf.
func allFinite(t *testing.T, c Comparison) {
	t.Helper()
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		case reflect.Float64:
			if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
				t.Errorf("%s = %v", path, f)
			}
		}
	}
	walk(reflect.ValueOf(c), "Comparison")
}

func TestCompareContinuousDeltaMethod(t *testing.T) {
	// Control n = 100, mean 10, variance 4; treatment n = 100, mean 11,
	// variance 9.
	c, tr := fromSummary(100, 10, 2), fromSummary(100, 11, 3)
	got := Compare(Paired{Y: c}, Paired{Y: tr}, Options{})
	allFinite(t, got)

	// SOURCE: by hand. AbsLift = 1; V = 4/100 + 9/100 = 0.13, se = 0.360555;
	// Welch df = 0.13²/((0.04² + 0.09²)/99) = 172.48; the interval is
	// 1 ± t_{0.975,172.48}·0.360555 and the p-value WelchT's.
	ts, df, p := WelchT(c, tr)
	if !close(df, 0.0169*99/0.0097, 1e-9) || !close(ts, 1/math.Sqrt(0.13), 1e-9) {
		t.Fatalf("Welch t %v df %v", ts, df)
	}
	q := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(0.975)
	se := math.Sqrt(0.13)
	checks := []struct {
		name      string
		got, want float64
	}{
		{"ControlMean", got.ControlMean, 10},
		{"TreatmentMean", got.TreatmentMean, 11},
		{"ControlSE", got.ControlSE, 0.2},     // sqrt(4/100)
		{"TreatmentSE", got.TreatmentSE, 0.3}, // sqrt(9/100)
		{"AbsLift", got.AbsLift, 1},
		{"AbsCI.Lower", got.AbsCI.Lower, 1 - q*se},
		{"AbsCI.Upper", got.AbsCI.Upper, 1 + q*se},
		{"PValue", got.PValue, p},
		// SOURCE: by hand, delta method. RelLift = 11/10 − 1 = 0.1;
		// Var = σt²/(nt μc²) + μt² σc²/(nc μc⁴) = 9/(100·100) +
		// 121·4/(100·10⁴) = 0.0009 + 0.000484 = 0.001384, se = 0.0372022;
		// CI = 0.1 ± 1.959964·0.0372022 = [0.0270851, 0.1729149].
		{"RelLift", got.RelLift, 0.1},
		{"RelCI.Lower", got.RelCI.Lower, 0.02708512492062634},
		{"RelCI.Upper", got.RelCI.Upper, 0.17291487507937367},
		// SOURCE: by hand. ChanceToBeat = Φ(0.1/0.0372022) = Φ(2.68801) =
		// 0.9964061; ExpectedLoss = σφ(μ/σ) − μΦ(−μ/σ) =
		// 0.0372022·φ(2.68801) − 0.1·Φ(−2.68801) = 4.10119e−5.
		{"ChanceToBeat", got.ChanceToBeat, 0.9964061094032599},
		{"ExpectedLoss", got.ExpectedLoss, 4.1011942696381166e-05},
		{"VarianceReduction", got.VarianceReduction, 0},
	}
	for _, ck := range checks {
		if !close(ck.got, ck.want, 1e-9) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if got.CUPED {
		t.Error("CUPED without covariate")
	}
}

func TestCompareBinomial(t *testing.T) {
	c, tr := Moments{1000, 200, 200}, Moments{1000, 250, 250}
	got := Compare(Paired{Y: c}, Paired{Y: tr}, Options{Binomial: true})
	allFinite(t, got)
	_, p := TwoProportionZ(c, tr)
	// SOURCE: by hand. Unpooled se = sqrt(0.2·0.8/1000 + 0.25·0.75/1000)
	// = sqrt(0.0003475) = 0.0186414; CI = 0.05 ± 1.959964·0.0186414 =
	// [0.0134637, 0.0865363]. Relative: 0.25/0.2 − 1 = 0.25, variance
	// 0.0001875/0.04 + 0.0625·0.00016/0.0016 = 0.0109375, se 0.1045825.
	se := math.Sqrt(0.0003475)
	seRel := math.Sqrt(0.0109375)
	checks := []struct {
		name      string
		got, want float64
	}{
		{"PValue (pooled z)", got.PValue, p},
		{"PValue value", got.PValue, 0.007419649261025679},
		{"AbsLift", got.AbsLift, 0.05},
		{"AbsCI.Lower", got.AbsCI.Lower, 0.05 - z975*se},
		{"AbsCI.Upper", got.AbsCI.Upper, 0.05 + z975*se},
		{"ControlSE", got.ControlSE, math.Sqrt(0.16 / 1000)},
		{"RelLift", got.RelLift, 0.25},
		{"RelCI.Lower", got.RelCI.Lower, 0.25 - z975*seRel},
		{"RelCI.Upper", got.RelCI.Upper, 0.25 + z975*seRel},
		{"ChanceToBeat", got.ChanceToBeat, 0.5 * math.Erfc(-0.25/seRel/math.Sqrt2)},
	}
	for _, ck := range checks {
		if !close(ck.got, ck.want, 1e-9) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestBayesianClosedForm(t *testing.T) {
	// SOURCE: closed form for a normal posterior N(μ, σ²) of the relative
	// lift: P(lift > 0) = Φ(μ/σ) and E[max(0, −lift)] = σφ(μ/σ) − μΦ(−μ/σ)
	// (the normal partial expectation). Checked against a direct numerical
	// integral of max(0, −x)·N(x; μ, σ²) by the midpoint rule.
	for _, tc := range []struct{ mean, sd float64 }{{11, 3}, {9.8, 3}, {10, 3}, {10.2, 0.5}} {
		c, tr := fromSummary(400, 10, 2), fromSummary(400, tc.mean, tc.sd)
		got := Compare(Paired{Y: c}, Paired{Y: tr}, Options{})
		mu := tc.mean/10 - 1
		sigma := math.Sqrt(tc.sd*tc.sd/(400*100) + tc.mean*tc.mean*4/(400*1e4))
		var integral float64
		const steps = 200000
		lo := mu - 12*sigma
		h := 12 * sigma / steps * 2
		for i := range steps {
			x := lo + (float64(i)+0.5)*h
			if x < 0 {
				integral += -x * math.Exp(-(x-mu)*(x-mu)/(2*sigma*sigma)) / (sigma * math.Sqrt(2*math.Pi)) * h
			}
		}
		if !close(got.ChanceToBeat, 0.5*math.Erfc(-mu/sigma/math.Sqrt2), 1e-12) {
			t.Errorf("mean %v: ChanceToBeat %v", tc.mean, got.ChanceToBeat)
		}
		if math.Abs(got.ExpectedLoss-integral) > 1e-9 {
			t.Errorf("mean %v: ExpectedLoss %v, integral %v", tc.mean, got.ExpectedLoss, integral)
		}
	}
}

func TestSequential(t *testing.T) {
	c, tr := fromSummary(100, 10, 2), fromSummary(100, 11, 3) // V = 0.13, Δ = 1
	t.Run("fixed tau2", func(t *testing.T) {
		got := Compare(Paired{Y: c}, Paired{Y: tr}, Options{MixtureVariance: 0.5})
		// SOURCE: by hand from Johari et al.'s formula with V = 0.13,
		// τ² = 0.5, Δ̂ = 1: Λ = sqrt(0.13/0.63)·exp(0.5·1/(2·0.13·0.63)) =
		// 0.454257·exp(3.052503) = 9.615827, p = 1/Λ = 0.1039952; CS
		// half-width = sqrt((2·0.13·0.63/0.5)·(log 20 + ½·log(0.63/0.13)))
		// = sqrt(0.3276·(2.995732 + 0.788953)) = 1.1135119.
		if !close(got.SequentialPValue, 0.1039952173374557, 1e-9) {
			t.Errorf("SequentialPValue = %v", got.SequentialPValue)
		}
		if !close(got.SequentialCI.Upper-1, 1.113511857254794, 1e-9) || !close(1-got.SequentialCI.Lower, 1.113511857254794, 1e-9) {
			t.Errorf("SequentialCI = %+v", got.SequentialCI)
		}
		// SOURCE: by hand, Δ̂ = 0.5: Λ = 0.454257·exp(0.763126) = 0.974367 < 1,
		// so p = min(1, 1/Λ) = 1.
		half := Compare(Paired{Y: c}, Paired{Y: fromSummary(100, 10.5, 3)}, Options{MixtureVariance: 0.5})
		if half.SequentialPValue != 1 {
			t.Errorf("Λ < 1 gave p = %v", half.SequentialPValue)
		}
	})
	t.Run("default tau2 is tightest at planned size", func(t *testing.T) {
		// SOURCE: the root of r = 2·log 20 + log(1+r) is r = 8.211968
		// (fixed-point iteration; Howard et al.'s one-step value is 7.936).
		if r := mixtureRatio(0.05); !close(r, 8.211968062068253, 1e-9) {
			t.Fatalf("mixtureRatio = %v", r)
		}
		halfWidth := func(v, tau2 float64) float64 {
			return math.Sqrt(2 * v * (v + tau2) / tau2 * (math.Log(20) + 0.5*math.Log((v+tau2)/v)))
		}
		for _, planned := range []float64{0, 100, 400, 2500} {
			got := Compare(Paired{Y: c}, Paired{Y: tr}, Options{PlannedN: planned})
			n := planned
			if n == 0 {
				n = 100
			}
			vPlanned := 0.13 * 100 / n
			tau2 := 8.211968062068253 * vPlanned
			if w := halfWidth(0.13, tau2); !close(got.SequentialCI.Upper-got.AbsLift, w, 1e-9) {
				t.Errorf("planned %v: half-width %v, want %v", planned, got.SequentialCI.Upper-got.AbsLift, w)
			}
			// At the planned size the chosen τ² minimises the half-width.
			best := halfWidth(vPlanned, tau2)
			for _, k := range []float64{0.5, 0.8, 0.95, 1.05, 1.25, 2} {
				if halfWidth(vPlanned, k*tau2) < best {
					t.Errorf("planned %v: τ²·%v narrower than the tuned τ²", planned, k)
				}
			}
		}
	})
	t.Run("p below alpha iff CS excludes 0", func(t *testing.T) {
		// SOURCE: algebra: 1/Λ ≤ α ⟺ Δ̂² ≥ (2V(V+τ²)/τ²)(log(1/α) +
		// ½log((V+τ²)/V)), i.e. the mSPRT is the inversion of the CS.
		for _, m := range []float64{10, 10.2, 10.5, 10.8, 11, 11.2, 11.5, 12} {
			got := Compare(Paired{Y: c}, Paired{Y: fromSummary(100, m, 3)}, Options{})
			excludes := got.SequentialCI.Lower > 0 || got.SequentialCI.Upper < 0
			if excludes != (got.SequentialPValue < 0.05) {
				t.Errorf("mean %v: p %v, CS %+v", m, got.SequentialPValue, got.SequentialCI)
			}
			// The CS is wider than the fixed-horizon interval.
			if got.SequentialCI.Upper-got.SequentialCI.Lower <= got.AbsCI.Upper-got.AbsCI.Lower {
				t.Errorf("mean %v: CS %+v narrower than CI %+v", m, got.SequentialCI, got.AbsCI)
			}
		}
	})
}

// cupedUser is one user's pre-period covariate x and metric y.
type cupedUser struct{ x, y float64 }

// paired sums per-user values into the ClickHouse-style sufficient
// statistics.
func paired(us []cupedUser) Paired {
	var p Paired
	for _, u := range us {
		p.Y.N++
		p.Y.Sum += u.y
		p.Y.SumSq += u.y * u.y
		p.X.N++
		p.X.Sum += u.x
		p.X.SumSq += u.x * u.x
		p.XY += u.x * u.y
	}
	return p
}

// meanVar is the two-pass mean and sample variance.
func meanVar(xs []float64) (mean, variance float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		variance += (x - mean) * (x - mean)
	}
	return mean, variance / float64(len(xs)-1)
}

func TestCUPED(t *testing.T) {
	control := []cupedUser{{1, 2}, {2, 3}, {3, 5}, {4, 6}}
	treatment := []cupedUser{{2, 4}, {3, 4}, {4, 7}, {5, 7}}
	// SOURCE: by hand. Control: x̄ = 2.5, ȳ = 4, Sxx = 5, Sxy = 7, Syy = 10.
	// Treatment: x̄ = 3.5, ȳ = 5.5, Sxx = 5, Sxy = 6, Syy = 9. Pooled θ =
	// (7+6)/(5+5) = 1.3; X̄ = 24/8 = 3. Adjusted means: 4 − 1.3·(−0.5) =
	// 4.65 and 5.5 − 1.3·0.5 = 4.85, lift 0.2 (raw 1.5). Adjusted
	// variances: (10 − 2·1.3·7 + 1.69·5)/3 = 0.25/3 and (9 − 2·1.3·6 +
	// 1.69·5)/3 = 1.85/3. V_adj = (0.25/3 + 1.85/3)/4 = 0.175, V_raw =
	// (10/3)/4 + 3/4 = 1.583333, variance reduction 1 − 0.175/1.583333 =
	// 0.8894737.
	const theta, xBar = 1.3, 3.0

	// Independent computation from the raw per-user values: adjusted
	// per-user outcome y − θ(x − X̄), then two-pass mean and variance.
	adjusted := func(us []cupedUser) []float64 {
		out := make([]float64, len(us))
		for i, u := range us {
			out[i] = u.y - theta*(u.x-xBar)
		}
		return out
	}
	ys := func(us []cupedUser) []float64 {
		out := make([]float64, len(us))
		for i, u := range us {
			out[i] = u.y
		}
		return out
	}
	// Check θ itself from the raw values.
	var sxy, sxx float64
	for _, g := range [][]cupedUser{control, treatment} {
		var mx, my float64
		for _, u := range g {
			mx += u.x / float64(len(g))
			my += u.y / float64(len(g))
		}
		for _, u := range g {
			sxy += (u.x - mx) * (u.y - my)
			sxx += (u.x - mx) * (u.x - mx)
		}
	}
	if !close(sxy/sxx, theta, 1e-12) {
		t.Fatalf("raw θ = %v", sxy/sxx)
	}
	mc, vc := meanVar(adjusted(control))
	mt, vt := meanVar(adjusted(treatment))
	_, rc := meanVar(ys(control))
	_, rt := meanVar(ys(treatment))
	if !close(mc, 4.65, 1e-12) || !close(mt, 4.85, 1e-12) || !close(vc, 0.25/3, 1e-12) || !close(vt, 1.85/3, 1e-12) {
		t.Fatalf("independent adjusted figures %v %v %v %v", mc, mt, vc, vt)
	}
	vAdj, vRaw := vc/4+vt/4, rc/4+rt/4
	df := vAdj * vAdj / ((vc/4)*(vc/4)/3 + (vt/4)*(vt/4)/3)
	q := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(0.975)
	_, _, pWelch := welch(4, mc, vc, 4, mt, vt)

	got := Compare(paired(control), paired(treatment), Options{})
	allFinite(t, got)
	if !got.CUPED {
		t.Fatal("CUPED not applied")
	}
	raw := Compare(Paired{Y: paired(control).Y}, Paired{Y: paired(treatment).Y}, Options{})
	seRel := math.Sqrt(vt/(4*mc*mc) + mt*mt*vc/(4*mc*mc*mc*mc))
	checks := []struct {
		name      string
		got, want float64
	}{
		{"ControlMean", got.ControlMean, mc},
		{"TreatmentMean", got.TreatmentMean, mt},
		{"ControlSE", got.ControlSE, math.Sqrt(vc / 4)},
		{"TreatmentSE", got.TreatmentSE, math.Sqrt(vt / 4)},
		{"AbsLift", got.AbsLift, 0.2},
		{"AbsCI.Lower", got.AbsCI.Lower, 0.2 - q*math.Sqrt(vAdj)},
		{"AbsCI.Upper", got.AbsCI.Upper, 0.2 + q*math.Sqrt(vAdj)},
		{"PValue", got.PValue, pWelch},
		{"VarianceReduction", got.VarianceReduction, 1 - vAdj/vRaw},
		{"VarianceReduction value", got.VarianceReduction, 0.8894736842105263},
		{"RelLift", got.RelLift, mt/mc - 1},
		{"RelCI.Upper", got.RelCI.Upper, mt/mc - 1 + z975*seRel},
		{"ChanceToBeat", got.ChanceToBeat, 0.5 * math.Erfc(-(mt/mc-1)/seRel/math.Sqrt2)},
	}
	for _, ck := range checks {
		if !close(ck.got, ck.want, 1e-9) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if raw.CUPED || !close(raw.AbsLift, 1.5, 1e-12) {
		t.Errorf("unadjusted comparison %+v", raw)
	}

	t.Run("binomial", func(t *testing.T) {
		// 0/1 metric and 0/1 covariate: the unpooled z-test on the adjusted
		// means and variances, computed here from the raw values.
		control := []cupedUser{{1, 1}, {1, 1}, {0, 0}, {0, 0}, {1, 0}, {0, 0}, {1, 1}, {0, 1}}
		treatment := []cupedUser{{1, 1}, {0, 1}, {0, 0}, {1, 1}, {1, 1}, {0, 0}, {0, 1}, {1, 1}}
		var sxy, sxx float64
		for _, g := range [][]cupedUser{control, treatment} {
			mx, _ := meanVar(xsOf(g))
			my, _ := meanVar(ys(g))
			for _, u := range g {
				sxy += (u.x - mx) * (u.y - my)
				sxx += (u.x - mx) * (u.x - mx)
			}
		}
		th := sxy / sxx
		xb := (4.0 + 4.0) / 16
		adj := func(us []cupedUser) []float64 {
			out := make([]float64, len(us))
			for i, u := range us {
				out[i] = u.y - th*(u.x-xb)
			}
			return out
		}
		mc, vc := meanVar(adj(control))
		mt, vt := meanVar(adj(treatment))
		se := math.Sqrt(vc/8 + vt/8)
		got := Compare(paired(control), paired(treatment), Options{Binomial: true})
		if !got.CUPED {
			t.Fatal("CUPED not applied")
		}
		if !close(got.AbsLift, mt-mc, 1e-12) || !close(got.PValue, math.Erfc(math.Abs(mt-mc)/se/math.Sqrt2), 1e-12) ||
			!close(got.AbsCI.Upper, mt-mc+z975*se, 1e-12) {
			t.Errorf("binomial CUPED %+v, want lift %v se %v", got, mt-mc, se)
		}
	})
}

// xsOf is the covariates of us.
func xsOf(us []cupedUser) []float64 {
	out := make([]float64, len(us))
	for i, u := range us {
		out[i] = u.x
	}
	return out
}

func TestCompareDegenerate(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		name    string
		c, t    Paired
		opts    Options
		noEvid  bool // p-values 1
		zeroRel bool // relative fields 0
	}{
		{"both empty", Paired{}, Paired{}, Options{}, true, true},
		{"empty control", Paired{}, Paired{Y: moments(1, 2, 3)}, Options{}, true, true},
		{"empty treatment", Paired{Y: moments(1, 2, 3)}, Paired{}, Options{}, true, false},
		{"one unit each", Paired{Y: moments(1)}, Paired{Y: moments(2)}, Options{}, true, false},
		{"zero variance", Paired{Y: moments(2, 2, 2)}, Paired{Y: moments(2, 2, 2)}, Options{}, true, false},
		{"zero variance different means", Paired{Y: moments(2, 2, 2)}, Paired{Y: moments(3, 3, 3)}, Options{}, true, false},
		{"control mean 0", Paired{Y: moments(0, 0, 0)}, Paired{Y: moments(0, 1, 2)}, Options{}, false, true},
		{"binomial control 0", Paired{Y: Moments{100, 0, 0}}, Paired{Y: Moments{100, 5, 5}}, Options{Binomial: true}, false, true},
		{"binomial all 0", Paired{Y: Moments{100, 0, 0}}, Paired{Y: Moments{100, 0, 0}}, Options{Binomial: true}, true, true},
		{"binomial all 1", Paired{Y: Moments{100, 100, 100}}, Paired{Y: Moments{100, 100, 100}}, Options{Binomial: true}, true, false},
		{"NaN sums", Paired{Y: Moments{10, nan, nan}}, Paired{Y: Moments{10, 1, nan}}, Options{}, true, true},
		{"Inf sums", Paired{Y: Moments{10, inf, inf}}, Paired{Y: Moments{10, 1, 1}}, Options{}, true, true},
		{"huge", Paired{Y: Moments{2, 1e300, 1e300}}, Paired{Y: Moments{2, 1e-300, 1e300}}, Options{}, false, false},
		{"constant covariate", Paired{Y: moments(1, 2), X: moments(1, 1), XY: 3}, Paired{Y: moments(2, 3), X: moments(1, 1), XY: 5}, Options{}, false, false},
		{"covariate on other units", Paired{Y: moments(1, 2, 3), X: moments(1, 2), XY: 5}, Paired{Y: moments(2, 3, 4), X: moments(1, 3), XY: 11}, Options{}, false, false},
		{"NaN options", Paired{Y: moments(1, 2, 3)}, Paired{Y: moments(2, 3, 4)}, Options{Alpha: nan, MixtureVariance: nan, PlannedN: inf}, false, false},
		{"negative options", Paired{Y: moments(1, 2, 3)}, Paired{Y: moments(2, 3, 4)}, Options{Alpha: -1, MixtureVariance: -1, PlannedN: -5}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compare(tt.c, tt.t, tt.opts)
			allFinite(t, got)
			if tt.noEvid && (got.PValue != 1 || got.SequentialPValue != 1 || got.ChanceToBeat != 0.5) {
				t.Errorf("no evidence expected: %+v", got)
			}
			if tt.zeroRel && (got.RelLift != 0 || got.RelCI != (Interval{}) || got.ExpectedLoss != 0) {
				t.Errorf("relative fields not zero: %+v", got)
			}
			if got.PValue < 0 || got.PValue > 1 || got.SequentialPValue < 0 || got.SequentialPValue > 1 ||
				got.ChanceToBeat < 0 || got.ChanceToBeat > 1 || got.ExpectedLoss < 0 {
				t.Errorf("out of range: %+v", got)
			}
			if got.CUPED {
				t.Errorf("CUPED applied to %+v / %+v", tt.c, tt.t)
			}
		})
	}
	// The other helpers on degenerate input.
	for _, f := range []float64{
		MinimumDetectableEffect(nan, inf, 0, 0, nan, nan),
		MinimumDetectableEffect(1, 1, inf, 1, 0.05, 0.8),
	} {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			t.Errorf("MDE not finite: %v", f)
		}
	}
	if chi2, p := SampleRatioMismatch([]float64{nan, 1}, []float64{1, 1}); math.IsNaN(chi2) || math.IsNaN(p) {
		t.Errorf("SRM NaN: %v %v", chi2, p)
	}
	if chi2, p := SampleRatioMismatch([]float64{inf, 1}, []float64{1, 1}); math.IsInf(chi2, 0) || math.IsNaN(p) {
		t.Errorf("SRM Inf: %v %v", chi2, p)
	}
}
