package experiments

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/surgeworks/surge/pricing"
)

func ptr(f float64) *float64 { return &f }

func valid() Experiment {
	e := Experiment{ID: "exp1", Hypothesis: "h", Variants: []Variant{
		{Name: "control", Weight: 50},
		{Name: "cheaper", Weight: 50, Strategy: Strategy{BasePriceAdjustmentPercent: -5}},
	}}
	e.applyDefaults(0)
	return e
}

func fields(err error) []string {
	var out []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, fe.Field)
		}
	}
	return out
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(e *Experiment)
		fields []string // nil: valid
	}{
		{"valid", func(e *Experiment) {}, nil},
		{"weights not 100", func(e *Experiment) { e.Variants[1].Weight = 40 }, []string{"variants"}},
		{"one variant", func(e *Experiment) { e.Variants = e.Variants[:1] }, []string{"variants"}},
		{"three decimals", func(e *Experiment) { e.Variants[0].Weight, e.Variants[1].Weight = 50.005, 49.995 }, []string{"variants[0].weight", "variants[1].weight", "variants"}},
		{"two decimals fine", func(e *Experiment) { e.Variants[0].Weight, e.Variants[1].Weight = 33.33, 66.67 }, nil},
		{"duplicate names", func(e *Experiment) { e.Variants[1].Name = "control" }, []string{"variants[1].name"}},
		{"bad id", func(e *Experiment) { e.ID = "a b" }, []string{"id"}},
		{"cancellation as primary", func(e *Experiment) { e.PrimaryMetric = MetricCancellationRate }, []string{"primaryMetric"}},
		{"strategy out of range", func(e *Experiment) { e.Variants[1].Strategy.MaxMultiplier = ptr(50) }, []string{"variants[1].strategy.maxMultiplier"}},
		{"max below min days", func(e *Experiment) { e.MaxDays = 3 }, []string{"maxDays"}},
		{"negative weight", func(e *Experiment) { e.Variants[0].Weight, e.Variants[1].Weight = -10, 110 }, []string{"variants[0].weight", "variants[1].weight"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := valid()
			c.change(&e)
			err := e.Validate()
			if c.fields == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want errors on %v, got none", c.fields)
			}
			if got := fields(err); !slices.Equal(got, c.fields) {
				t.Fatalf("fields = %v, want %v (%v)", got, c.fields, err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	e := Experiment{ID: "x"}
	e.applyDefaults(time.Minute)
	if e.Layer != "default" || e.Salt != "x" || e.PrimaryMetric != MetricConversionRate ||
		!slices.Equal(e.Guardrails, []Metric{MetricCancellationRate}) || e.MinDays != 7 || e.MaxDays != 28 ||
		e.MinSamplePerVariant != 1000 || e.PrePeriodDays != 14 || e.DayLength != time.Minute {
		t.Fatalf("defaults: %+v", e)
	}
}

// The realised split matches the weights: 200,000 users into 20/30/50.
// Each count is binomial; 5 standard deviations is a bound that a correct
// hash fails with probability ~1e-6.
func TestAssignmentSplitMatchesWeights(t *testing.T) {
	e := Experiment{ID: "split", Salt: "split", Variants: []Variant{{Name: "a", Weight: 20}, {Name: "b", Weight: 30}, {Name: "c", Weight: 50}}}
	const n = 200_000
	counts := make([]int, 3)
	for u := range n {
		counts[e.variantOf(Bucket(e.Salt, fmt.Sprintf("user-%d", u)))]++
	}
	for i, v := range e.Variants {
		p := v.Weight / 100
		sd := math.Sqrt(n * p * (1 - p))
		if d := math.Abs(float64(counts[i]) - n*p); d > 5*sd {
			t.Errorf("variant %s: %d users, want %.0f ± %.0f", v.Name, counts[i], n*p, 5*sd)
		}
	}
	t.Logf("split 20/30/50 over %d users: %v", n, counts)
}

// Experiments with different salts assign independently: among the users
// of variant a of one experiment, the other experiment's split is still
// 50/50 (a chi-square-free check: within 5 sd).
func TestAssignmentIndependentAcrossExperiments(t *testing.T) {
	one := Experiment{Salt: "one", Variants: []Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}}}
	two := Experiment{Salt: "two", Variants: []Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}}}
	var inA, bothA int
	for u := range 100_000 {
		id := fmt.Sprintf("u%d", u)
		if one.variantOf(Bucket(one.Salt, id)) == 0 {
			inA++
			if two.variantOf(Bucket(two.Salt, id)) == 0 {
				bothA++
			}
		}
	}
	sd := math.Sqrt(float64(inA) * 0.25)
	if d := math.Abs(float64(bothA) - float64(inA)/2); d > 5*sd {
		t.Fatalf("of %d users in one/a, %d are in two/a; want %d ± %.0f", inA, bothA, inA/2, 5*sd)
	}
}

func TestBucketDeterministic(t *testing.T) {
	if Bucket("s", "u1") != Bucket("s", "u1") {
		t.Fatal("same user, same salt, different buckets")
	}
	// Salt and user are separated: ("ab","c") and ("a","bc") differ.
	if Bucket("ab", "c") == Bucket("a", "bc") && Bucket("ab", "d") == Bucket("a", "bd") {
		t.Fatal("salt and user not separated in the hash")
	}
	for _, b := range []int{Bucket("", ""), Bucket("x", "y")} {
		if b < 0 || b >= Buckets {
			t.Fatalf("bucket %d out of range", b)
		}
	}
}

func TestOverlaps(t *testing.T) {
	base := Experiment{Layer: "default", Regions: []string{"r1", "r2"}, Products: []string{"ride"}}
	cases := []struct {
		name string
		o    Experiment
		want bool
	}{
		{"same targets", Experiment{Layer: "default", Regions: []string{"r2"}, Products: []string{"ride"}}, true},
		{"all regions", Experiment{Layer: "default"}, true},
		{"other layer", Experiment{Layer: "ui"}, false},
		{"other regions", Experiment{Layer: "default", Regions: []string{"r3"}}, false},
		{"other product", Experiment{Layer: "default", Products: []string{"delivery"}}, false},
	}
	for _, c := range cases {
		if got := base.overlaps(&c.o); got != c.want {
			t.Errorf("%s: overlaps = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestStrategyApply(t *testing.T) {
	rule := pricing.Rule{RegionID: "r", ProductType: "ride", Currency: "EUR", BasePrice: 10, MinMultiplier: 1, MaxMultiplier: 3,
		MaxStepPerMinute: 0.5, Threshold: 1, Sensitivity: 0.5, MultiplierStep: 0.05, PriceStep: 0.01}
	got, err := Strategy{MaxMultiplier: ptr(2), Sensitivity: ptr(0.8), BasePriceAdjustmentPercent: -5}.Apply(rule)
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxMultiplier != 2 || got.Sensitivity != 0.8 || got.BasePrice != 9.5 || got.MinMultiplier != 1 {
		t.Fatalf("applied: %+v", got)
	}
	if (Strategy{}).IsDefault() != true || (Strategy{Threshold: ptr(1)}).IsDefault() {
		t.Fatal("IsDefault")
	}
	// Caps below the rule's minimum give an invalid rule, refused.
	if _, err := (Strategy{MaxMultiplier: ptr(1), MinMultiplier: ptr(1)}).Apply(rule); err != nil {
		t.Fatalf("max=min=1 is valid: %v", err)
	}
	r2 := rule
	r2.MinMultiplier = 1
	if _, err := (Strategy{MaxMultiplier: ptr(0.5)}).Apply(r2); err == nil {
		t.Fatal("max below min accepted")
	}
}
