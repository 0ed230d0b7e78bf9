package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"
)

// The simulations are deterministic (seeded PCG streams, one per
// replication) and sized to keep the package test run to a few seconds.
const (
	replications = 2000
	days         = 30
	baseRate     = 0.10
	// plannedPerVariant: 30 days at the 200 users/day/variant expected.
	plannedPerVariant = days * 200
)

// fixedTau2 is the mixture variance a user fixes before the experiment from
// its plan: baseline rate 10% (per-unit variance 0.09 in both variants),
// 6,000 users per variant, tuned so the confidence sequence is narrowest at
// the planned end (τ² = r·V*, V* = 0.09·2/6000, r = 8.21 at α = 0.05).
var fixedTau2 = mixtureRatio(0.05) * (baseRate * (1 - baseRate) * 2 / plannedPerVariant)

// dailyUsers draws one variant's new users for a day: uniform on 100…300.
func dailyUsers(rng *rand.Rand) float64 { return float64(100 + rng.IntN(201)) }

// mcBound is the Monte-Carlo allowance: α + 3 standard errors of a rate α
// estimated from n replications.
func mcBound(alpha float64, n int) float64 {
	return alpha + 3*math.Sqrt(alpha*(1-alpha)/float64(n))
}

// TestAAPeeking: 2,000 A/A experiments (10% conversion in both variants),
// peeked daily for 30 days. Stopping at the first fixed-horizon p < 0.05
// rejects a true null far more often than 5%; the mSPRT p-value does not.
func TestAAPeeking(t *testing.T) {
	var fixedAny, seqAny, seqTunedAny, fixedFinal int
	for rep := range replications {
		rng := rand.New(rand.NewPCG(1, uint64(rep)))
		var c, tr Moments
		var fixedHit, seqHit, seqTunedHit bool
		for day := range days {
			for _, m := range []*Moments{&c, &tr} {
				n := dailyUsers(rng)
				k := distuv.Binomial{N: n, P: baseRate, Src: rng}.Rand()
				m.N += n
				m.Sum += k
				m.SumSq += k
			}
			got := Compare(Paired{Y: c}, Paired{Y: tr}, Options{Binomial: true, MixtureVariance: fixedTau2})
			fixedHit = fixedHit || got.PValue < 0.05
			seqHit = seqHit || got.SequentialPValue < 0.05
			if day == days-1 && got.PValue < 0.05 {
				fixedFinal++
			}
			// The default tuning with the planned size fixed in advance.
			tuned := Compare(Paired{Y: c}, Paired{Y: tr}, Options{Binomial: true, PlannedN: plannedPerVariant})
			seqTunedHit = seqTunedHit || tuned.SequentialPValue < 0.05
		}
		if fixedHit {
			fixedAny++
		}
		if seqHit {
			seqAny++
		}
		if seqTunedHit {
			seqTunedAny++
		}
	}
	rate := func(k int) float64 { return float64(k) / replications }
	t.Logf("A/A, %d experiments × %d daily peeks: false-positive rate fixed-horizon (any peek) %.4f, fixed-horizon (last day only) %.4f, sequential τ² fixed %.4f, sequential τ² tuned from PlannedN %.4f",
		replications, days, rate(fixedAny), rate(fixedFinal), rate(seqAny), rate(seqTunedAny))
	bound := mcBound(0.05, replications)
	if rate(seqAny) > bound || rate(seqTunedAny) > bound {
		t.Errorf("sequential false-positive rate %.4f / %.4f > %.4f", rate(seqAny), rate(seqTunedAny), bound)
	}
	if rate(fixedAny) <= 0.10 {
		t.Errorf("fixed-horizon peeking false-positive rate %.4f, want clearly above 0.05", rate(fixedAny))
	}
	// Sanity: a single pre-planned look is a valid 5% test.
	if math.Abs(rate(fixedFinal)-0.05) > 3*math.Sqrt(0.05*0.95/replications) {
		t.Errorf("single-look false-positive rate %.4f, want ≈ 0.05", rate(fixedFinal))
	}
}

// TestABCoverageBinomial: 10% vs 11% conversion, 30 daily looks. The fixed
// interval at the planned end covers the true lift (+1 point) ≈ 95% of the
// time; the confidence sequence covers it at every look simultaneously in
// at least 95% of the experiments.
func TestABCoverageBinomial(t *testing.T) {
	const pt = 0.11
	trueLift := pt - baseRate
	var fixedCover, seqCover, seqDetect int
	for rep := range replications {
		rng := rand.New(rand.NewPCG(2, uint64(rep)))
		var c, tr Moments
		seqOK, detected := true, false
		var last Comparison
		for range days {
			for _, v := range []struct {
				m *Moments
				p float64
			}{{&c, baseRate}, {&tr, pt}} {
				n := dailyUsers(rng)
				k := distuv.Binomial{N: n, P: v.p, Src: rng}.Rand()
				v.m.N += n
				v.m.Sum += k
				v.m.SumSq += k
			}
			last = Compare(Paired{Y: c}, Paired{Y: tr}, Options{Binomial: true, MixtureVariance: fixedTau2})
			if trueLift < last.SequentialCI.Lower || trueLift > last.SequentialCI.Upper {
				seqOK = false
			}
			detected = detected || last.SequentialPValue < 0.05
		}
		if last.AbsCI.Lower <= trueLift && trueLift <= last.AbsCI.Upper {
			fixedCover++
		}
		if seqOK {
			seqCover++
		}
		if detected {
			seqDetect++
		}
	}
	fixed, seq := float64(fixedCover)/replications, float64(seqCover)/replications
	t.Logf("A/B binomial 10%% → 11%%, %d experiments: fixed 95%% CI coverage at day %d %.4f; confidence sequence coverage at all %d looks %.4f; sequential power %.4f",
		replications, days, fixed, days, seq, float64(seqDetect)/replications)
	if fixed < 0.93 || fixed > 0.97 {
		t.Errorf("fixed CI coverage %.4f, want within [0.93, 0.97]", fixed)
	}
	if seq < 0.95 {
		t.Errorf("confidence sequence coverage %.4f < 0.95", seq)
	}
}

// TestABCoverageRevenue: a skewed (lognormal) revenue per user with a +5%
// multiplicative lift and a pre-period covariate correlated with it
// (≈ 0.63): user level l = e^{0.8·Z₁}, pre-period x = l·e^{0.5·Z₂},
// revenue y = m·l·e^{0.5·Z₃} with m = 1 (control) or 1.05 (treatment), so
// E[y] = m·e^{0.32+0.125} and the true absolute lift is 0.05·e^{0.445}.
// 1,000 users per variant, looked at every 100. Both the unadjusted and
// the CUPED analyses must cover; CUPED must reduce the variance.
func TestABCoverageRevenue(t *testing.T) {
	const (
		perVariant = 1000
		looks      = 10
	)
	trueLift := 0.05 * math.Exp(0.445)
	var rawCover, cupedCover, rawSeq, cupedSeq, narrower int
	var sumVR, sumWidthRatio float64
	minVR := math.Inf(1)
	for rep := range replications {
		rng := rand.New(rand.NewPCG(3, uint64(rep)))
		var c, tr Paired
		rawSeqOK, cupedSeqOK := true, true
		var raw, cuped Comparison
		for range looks {
			for _, v := range []struct {
				p *Paired
				m float64
			}{{&c, 1}, {&tr, 1.05}} {
				for range perVariant / looks {
					l := math.Exp(0.8 * rng.NormFloat64())
					x := l * math.Exp(0.5*rng.NormFloat64())
					y := v.m * l * math.Exp(0.5*rng.NormFloat64())
					v.p.Y.N++
					v.p.Y.Sum += y
					v.p.Y.SumSq += y * y
					v.p.X.N++
					v.p.X.Sum += x
					v.p.X.SumSq += x * x
					v.p.XY += x * y
				}
			}
			opts := Options{PlannedN: perVariant}
			raw = Compare(Paired{Y: c.Y}, Paired{Y: tr.Y}, opts)
			cuped = Compare(c, tr, opts)
			if !cuped.CUPED || raw.CUPED {
				t.Fatalf("CUPED flags raw %v cuped %v", raw.CUPED, cuped.CUPED)
			}
			rawSeqOK = rawSeqOK && raw.SequentialCI.Lower <= trueLift && trueLift <= raw.SequentialCI.Upper
			cupedSeqOK = cupedSeqOK && cuped.SequentialCI.Lower <= trueLift && trueLift <= cuped.SequentialCI.Upper
		}
		if raw.AbsCI.Lower <= trueLift && trueLift <= raw.AbsCI.Upper {
			rawCover++
		}
		if cuped.AbsCI.Lower <= trueLift && trueLift <= cuped.AbsCI.Upper {
			cupedCover++
		}
		if rawSeqOK {
			rawSeq++
		}
		if cupedSeqOK {
			cupedSeq++
		}
		rw, cw := raw.AbsCI.Upper-raw.AbsCI.Lower, cuped.AbsCI.Upper-cuped.AbsCI.Lower
		if cw < rw {
			narrower++
		}
		sumWidthRatio += cw / rw
		sumVR += cuped.VarianceReduction
		minVR = math.Min(minVR, cuped.VarianceReduction)
	}
	r := func(k int) float64 { return float64(k) / replications }
	t.Logf("A/B revenue +5%% (lognormal), %d experiments × %d users/variant: fixed 95%% CI coverage unadjusted %.4f, CUPED %.4f; confidence sequence coverage at all %d looks unadjusted %.4f, CUPED %.4f; CUPED variance reduction mean %.3f (min %.3f), CI width ratio CUPED/unadjusted mean %.3f, narrower in %.4f",
		replications, perVariant, r(rawCover), r(cupedCover), looks, r(rawSeq), r(cupedSeq), sumVR/replications, minVR, sumWidthRatio/replications, r(narrower))
	for name, cov := range map[string]float64{"unadjusted": r(rawCover), "CUPED": r(cupedCover)} {
		if cov < 0.93 || cov > 0.97 {
			t.Errorf("%s fixed CI coverage %.4f, want within [0.93, 0.97]", name, cov)
		}
	}
	for name, cov := range map[string]float64{"unadjusted": r(rawSeq), "CUPED": r(cupedSeq)} {
		if cov < 0.95 {
			t.Errorf("%s confidence sequence coverage %.4f < 0.95", name, cov)
		}
	}
	if !(minVR > 0) || sumVR/replications < 0.2 {
		t.Errorf("CUPED variance reduction mean %.3f, min %.3f: want > 0", sumVR/replications, minVR)
	}
	if r(narrower) < 0.99 || sumWidthRatio/replications >= 1 {
		t.Errorf("CUPED CI narrower in %.4f of experiments, mean width ratio %.3f", r(narrower), sumWidthRatio/replications)
	}
}

// TestRatioCoverage: cancellations per booking, users as units. Users book
// Poisson(λ_u) times with a lasting λ_u (gamma), each booking is cancelled
// with probability 5 % (control) or 6 % (treatment). The delta-method 95 %
// interval of the difference must cover the true 0.01 in about 95 % of
// 2,000 experiments of 2,000 users per variant.
func TestRatioCoverage(t *testing.T) {
	const users, trueLift = 2000, 0.01
	cover := 0
	for rep := range replications {
		rng := rand.New(rand.NewPCG(9, uint64(rep)))
		var m [2]struct {
			y, x Moments
			xy   float64
		}
		for v, p := range []float64{0.05, 0.06} {
			for range users {
				lambda := distuv.Gamma{Alpha: 0.5, Beta: 0.5, Src: rng}.Rand() // mean 1, heavy tail
				b := distuv.Poisson{Lambda: lambda, Src: rng}.Rand()
				c := 0.0
				if b > 0 {
					c = distuv.Binomial{N: b, P: p, Src: rng}.Rand()
				}
				s := &m[v]
				s.y.N, s.y.Sum, s.y.SumSq = s.y.N+1, s.y.Sum+c, s.y.SumSq+c*c
				s.x.N, s.x.Sum, s.x.SumSq = s.x.N+1, s.x.Sum+b, s.x.SumSq+b*b
				s.xy += b * c
			}
		}
		cmp := Compare(Paired{Y: Ratio(m[0].y, m[0].x, m[0].xy)}, Paired{Y: Ratio(m[1].y, m[1].x, m[1].xy)}, Options{})
		if cmp.AbsCI.Lower <= trueLift && trueLift <= cmp.AbsCI.Upper {
			cover++
		}
	}
	c := float64(cover) / replications
	t.Logf("ratio metric (cancellations per booking), %d experiments: 95%% CI coverage %.4f", replications, c)
	if c < 0.93 || c > 0.97 {
		t.Errorf("coverage %.4f, want within [0.93, 0.97]", c)
	}
}
