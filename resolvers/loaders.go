package resolvers

import (
	"context"
	"net/http"
	"time"

	"github.com/graph-gophers/dataloader/v7"

	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/quotes"
)

// priceKey identifies one price look-up within a request.
type priceKey struct{ region, product, user string }

type loadersKey struct{}

// loaders are the per-request dataloaders.
type loaders struct {
	prices  *dataloader.Loader[priceKey, quotes.Quote]
	results *dataloader.Loader[string, experiments.Results] // nil without experiments
}

// LoaderWait is how long a loader collects keys before it runs a batch.
const LoaderWait = 500 * time.Microsecond

// Middleware gives each request its own dataloaders, so that look-ups made
// by sibling fields run as one batch: regions { currentPrices } as one Redis
// round trip and one model call, experiments { results } as one ClickHouse
// query.
func Middleware(res *Resolver, next http.Handler) http.Handler {
	svc := res.Quotes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traceID := TraceID(r.Context())
		batch := func(ctx context.Context, keys []priceKey) []*dataloader.Result[quotes.Quote] {
			reqs := make([]quotes.Request, len(keys))
			for i, k := range keys {
				reqs[i] = quotes.Request{RegionID: k.region, ProductType: k.product, UserID: k.user, TraceID: traceID}
			}
			qs, errs := svc.QuoteBatch(ctx, reqs)
			out := make([]*dataloader.Result[quotes.Quote], len(keys))
			for i := range keys {
				out[i] = &dataloader.Result[quotes.Quote]{Data: qs[i], Error: errs[i]}
			}
			return out
		}
		l := &loaders{prices: dataloader.NewBatchedLoader(batch,
			dataloader.WithWait[priceKey, quotes.Quote](LoaderWait),
			dataloader.WithBatchCapacity[priceKey, quotes.Quote](100))}
		if res.ExperimentService != nil {
			l.results = resultsLoader(res.ExperimentService)
		}
		ctx := context.WithValue(r.Context(), loadersKey{}, l)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func loadersFrom(ctx context.Context) *loaders {
	l, _ := ctx.Value(loadersKey{}).(*loaders)
	return l
}

type traceKey struct{}

// WithTraceID stores the request's trace id in ctx.
func WithTraceID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, traceKey{}, id)
}

// TraceID returns the request's trace id, or "".
func TraceID(ctx context.Context) string {
	id, _ := ctx.Value(traceKey{}).(string)
	return id
}
