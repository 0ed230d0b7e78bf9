package resolvers

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/graph-gophers/dataloader/v7"

	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/graph/model"
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

// loaderBatch bounds the quotes of one batch.
const loaderBatch = 100

// Middleware gives each request its own dataloaders, so that look-ups made
// by sibling fields run as one batch: regions { currentPrices } as one Redis
// round trip and one model call, experiments { results } as one ClickHouse
// query.
func Middleware(res *Resolver, next http.Handler) http.Handler {
	svc := res.Quotes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		batch := func(ctx context.Context, keys []priceKey) []*dataloader.Result[quotes.Quote] {
			qs, errs := quoteKeys(ctx, svc, keys)
			out := make([]*dataloader.Result[quotes.Quote], len(keys))
			for i := range keys {
				out[i] = &dataloader.Result[quotes.Quote]{Data: qs[i], Error: errs[i]}
			}
			return out
		}
		l := &loaders{prices: dataloader.NewBatchedLoader(batch,
			dataloader.WithWait[priceKey, quotes.Quote](LoaderWait),
			dataloader.WithBatchCapacity[priceKey, quotes.Quote](loaderBatch))}
		if res.ExperimentService != nil {
			l.results = resultsLoader(res.ExperimentService)
		}
		ctx := context.WithValue(r.Context(), loadersKey{}, l)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// quoteKeys quotes keys in one QuoteBatch, with the request's trace id.
func quoteKeys(ctx context.Context, svc *quotes.Service, keys []priceKey) ([]quotes.Quote, []error) {
	reqs := make([]quotes.Request, len(keys))
	for i, k := range keys {
		reqs[i] = quotes.Request{RegionID: k.region, ProductType: k.product, UserID: k.user, TraceID: TraceID(ctx)}
	}
	return svc.QuoteBatch(ctx, reqs)
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

// primeCurrentPrices quotes every region's current prices when the query
// selects regions { currentPrices }, in batches of loaderBatch, and primes
// the price loader with them: the list's resolvers find them in its cache,
// so it is one Redis round trip and one model call per batch however the
// list's goroutines are scheduled, which the loader's wait window alone
// cannot promise on a busy machine. A key whose quote failed is left out;
// its resolver loads it again and gets the error.
func (r *Resolver) primeCurrentPrices(ctx context.Context, regions []*model.Region) {
	l := loadersFrom(ctx)
	if l == nil || !slices.Contains(graphql.CollectAllFields(ctx), "currentPrices") {
		return
	}
	var keys []priceKey
	for _, g := range regions {
		for _, p := range g.Products {
			keys = append(keys, priceKey{g.ID, p, ""})
		}
	}
	for chunk := range slices.Chunk(keys, loaderBatch) {
		qs, errs := quoteKeys(ctx, r.Quotes, chunk)
		for i, k := range chunk {
			if errs[i] == nil {
				l.prices.Prime(ctx, k, qs[i])
			}
		}
	}
}
