package training

import (
	"fmt"
	"math"

	"github.com/surgeworks/surge/model"
)

// Objective names accepted by Options.Objective.
const (
	ObjectiveL2      = "l2"      // squared error, identity link
	ObjectivePoisson = "poisson" // Poisson log-likelihood, log link
	ObjectiveTweedie = "tweedie" // Tweedie log-likelihood (1 < p < 2), log link
)

// defaultCountMaxDeltaStep is MaxDeltaStep's default for the log-link
// objectives (XGBoost's default for Poisson).
const defaultCountMaxDeltaStep = 0.7

// objective is a twice-differentiable loss of the raw score f (base plus the
// sum of trees); the model outputs link(f).
type objective interface {
	// link is the model's link: model.LinkIdentity or model.LinkExp.
	link() string
	// checkTargets rejects targets the loss is not defined for; training
	// targets must also admit an initial score.
	checkTargets(y []float32, training bool) error
	// initScore is the best constant raw score, the ensemble's base.
	initScore(y []float32) float64
	// gradients fills the first and second derivatives of the loss with
	// respect to the raw score f, for every row.
	gradients(y, f []float32, g, h []float64)
	// constHessian reports whether the second derivative is the same for
	// every row (then histograms need not sum it).
	constHessian() bool
	// metric names the validation loss.
	metric() string
	// lossSum is the sum over rows of the per-row validation loss.
	lossSum(y, f []float32) float64
	// finish turns the sum over n rows into the reported loss.
	finish(sum float64, n int) float64
}

func newObjective(o Options) (objective, error) {
	switch o.Objective {
	case ObjectiveL2:
		return l2Loss{}, nil
	case ObjectivePoisson:
		return poissonLoss{}, nil
	case ObjectiveTweedie:
		p := o.TweedieVariancePower
		if !(p > 1 && p < 2) {
			return nil, fmt.Errorf("%w: TweedieVariancePower %v (want (1, 2))", ErrBadInput, p)
		}
		return tweedieLoss{p: p}, nil
	}
	return nil, fmt.Errorf("%w: unknown objective %q (want %q, %q or %q)", ErrBadInput, o.Objective,
		ObjectiveL2, ObjectivePoisson, ObjectiveTweedie)
}

// l2Loss is the squared error ½(f-y)²; validation metric RMSE.
type l2Loss struct{}

func (l2Loss) link() string                       { return model.LinkIdentity }
func (l2Loss) checkTargets([]float32, bool) error { return nil }
func (l2Loss) constHessian() bool                 { return true }
func (l2Loss) metric() string                     { return "rmse" }

func (l2Loss) initScore(y []float32) float64 { return mean(y) }

func (l2Loss) gradients(y, f []float32, g, h []float64) {
	for i := range y {
		g[i] = float64(f[i]) - float64(y[i])
		h[i] = 1
	}
}

func (l2Loss) lossSum(y, f []float32) float64 {
	s := 0.0
	for i := range y {
		d := float64(f[i]) - float64(y[i])
		s += d * d
	}
	return s
}

func (l2Loss) finish(sum float64, n int) float64 { return math.Sqrt(sum / float64(n)) }

func mean(y []float32) float64 {
	s := 0.0
	for _, v := range y {
		s += float64(v)
	}
	return s / float64(len(y))
}

// checkCounts requires non-negative targets, and for training a positive
// mean (the log of which is the initial score), as the log-link objectives
// need.
func checkCounts(name string, y []float32, training bool) error {
	for i, v := range y {
		if v < 0 {
			return fmt.Errorf("%w: %s objective: target %d is negative (%v)", ErrBadInput, name, i, v)
		}
	}
	if training && !(mean(y) > 0) {
		return fmt.Errorf("%w: %s objective: every target is zero", ErrBadInput, name)
	}
	return nil
}

// poissonLoss is the Poisson negative log-likelihood exp(f) − y·f with the log
// link (f is the log of the mean): gradient exp(f) − y, hessian exp(f).
// Validation metric: the mean Poisson deviance 2[y·log(y/μ) − (y − μ)].
type poissonLoss struct{}

func (poissonLoss) link() string { return model.LinkExp }
func (poissonLoss) checkTargets(y []float32, training bool) error {
	return checkCounts(ObjectivePoisson, y, training)
}
func (poissonLoss) constHessian() bool { return false }
func (poissonLoss) metric() string     { return "poisson_deviance" }

func (poissonLoss) initScore(y []float32) float64 { return math.Log(mean(y)) }

func (poissonLoss) gradients(y, f []float32, g, h []float64) {
	for i := range y {
		mu := math.Exp(float64(f[i]))
		g[i] = mu - float64(y[i])
		h[i] = mu
	}
}

func (poissonLoss) lossSum(y, f []float32) float64 {
	s := 0.0
	for i := range y {
		mu, yv := math.Exp(float64(f[i])), float64(y[i])
		d := mu - yv
		if yv > 0 {
			d += yv * math.Log(yv/mu)
		}
		s += 2 * d
	}
	return s
}

func (poissonLoss) finish(sum float64, n int) float64 { return sum / float64(n) }

// tweedieLoss is the Tweedie negative log-likelihood with variance power p in
// (1, 2) and the log link: −y·e^{(1−p)f}/(1−p) + e^{(2−p)f}/(2−p).
// Validation metric: the mean Tweedie deviance.
type tweedieLoss struct{ p float64 }

func (tweedieLoss) link() string { return model.LinkExp }
func (tweedieLoss) checkTargets(y []float32, training bool) error {
	return checkCounts(ObjectiveTweedie, y, training)
}
func (tweedieLoss) constHessian() bool { return false }
func (tweedieLoss) metric() string     { return "tweedie_deviance" }

func (tweedieLoss) initScore(y []float32) float64 { return math.Log(mean(y)) }

func (t tweedieLoss) gradients(y, f []float32, g, h []float64) {
	a, b := 1-t.p, 2-t.p
	for i := range y {
		fv, yv := float64(f[i]), float64(y[i])
		ea, eb := math.Exp(a*fv), math.Exp(b*fv)
		g[i] = -yv*ea + eb
		h[i] = -yv*a*ea + b*eb
	}
}

func (t tweedieLoss) lossSum(y, f []float32) float64 {
	a, b := 1-t.p, 2-t.p
	s := 0.0
	for i := range y {
		fv, yv := float64(f[i]), float64(y[i])
		d := -yv*math.Exp(a*fv)/a + math.Exp(b*fv)/b
		if yv > 0 {
			d += math.Pow(yv, b) / (a * b)
		}
		s += 2 * d
	}
	return s
}

func (tweedieLoss) finish(sum float64, n int) float64 { return sum / float64(n) }
