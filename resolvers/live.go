package resolvers

import (
	"context"
	"errors"
	"reflect"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/surgeworks/surge/graph/model"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/live"
	"github.com/surgeworks/surge/quotes"
)

// Error codes of subscriptions.
const (
	CodeTooManySubscriptions = "TOO_MANY_SUBSCRIPTIONS"
	CodeSlowSubscriber       = "SLOW_SUBSCRIBER"
)

// errNoLive is returned when the process serves no live updates.
var errNoLive = errors.New("live updates are not served by this process")

// rolloutPoll is how often rolloutUpdated looks at the rollout state.
const rolloutPoll = time.Second

func (r *subscriptionResolver) surgeUpdated(ctx context.Context, regionIDs, productTypes []string, minChange *float64) (<-chan *live.Update, error) {
	if r.Live == nil {
		return nil, errNoLive
	}
	q := live.Query{RegionIDs: regionIDs, ProductTypes: productTypes, OnSlow: func() {
		transport.AddSubscriptionError(ctx, &gqlerror.Error{
			Message:    "subscriber too slow: updates were left unread; resubscribe to get a fresh snapshot",
			Extensions: map[string]any{"code": CodeSlowSubscriber},
		})
	}}
	if minChange != nil {
		q.MinChange = *minChange
	}
	return r.Live.Subscribe(ctx, q) // SurgeUpdate is bound to live.Update (gqlgen.yml)
}

func (r *subscriptionResolver) forecastUpdated(ctx context.Context, regionID string, horizonMinutes, intervalSeconds *int) (<-chan *model.Forecast, error) {
	if r.Live == nil {
		return nil, errNoLive
	}
	h, every := r.Quotes.HorizonMinutes(), 5
	if horizonMinutes != nil {
		h = *horizonMinutes
	}
	if intervalSeconds != nil {
		every = *intervalSeconds
	}
	if every < 1 || every > 300 {
		return nil, &quotes.InputError{Field: "intervalSeconds", Msg: "intervalSeconds must be between 1 and 300"}
	}
	first, err := r.Quotes.Forecast(ctx, regionID, h) // refuses bad regions and horizons
	if err != nil {
		return nil, err
	}
	same := func(a, b inference.Forecast) bool {
		return a.Demand == b.Demand && a.Lower == b.Lower && a.Upper == b.Upper && a.Source == b.Source && a.ModelVersion == b.ModelVersion
	}
	return poll(ctx, r.Live, time.Duration(every)*time.Second, first, func(ctx context.Context) (inference.Forecast, bool) {
		f, err := r.Quotes.Forecast(ctx, regionID, h)
		return f, err == nil
	}, same, toForecast)
}

func (r *subscriptionResolver) rolloutUpdated(ctx context.Context) (<-chan *model.Rollout, error) {
	if r.Live == nil {
		return nil, errNoLive
	}
	if r.Rollouts == nil {
		return nil, errNoRollouts
	}
	status := func(context.Context) (*model.Rollout, bool) {
		st, ok := r.Rollouts.Status()
		if !ok {
			return nil, true
		}
		return toRollout(st), true
	}
	first, _ := status(ctx)
	return poll(ctx, r.Live, rolloutPoll, first, status, func(a, b *model.Rollout) bool { return reflect.DeepEqual(a, b) },
		func(m *model.Rollout) *model.Rollout { return m })
}

// poll sends first, then fetch's value every interval when it differs from
// the last one sent, until ctx ends; the subscription counts against the
// hub's limits meanwhile.
func poll[T, M any](ctx context.Context, hub *live.Hub, every time.Duration, first T,
	fetch func(context.Context) (T, bool), same func(a, b T) bool, convert func(T) M) (<-chan M, error) {
	release, err := hub.Hold(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan M)
	go func() {
		defer close(out)
		defer release()
		t := time.NewTicker(every)
		defer t.Stop()
		last, pending := first, true
		for {
			if pending {
				select {
				case out <- convert(last):
					pending = false
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if v, ok := fetch(ctx); ok && !same(v, last) {
					last, pending = v, true
				}
			}
		}
	}()
	return out, nil
}
