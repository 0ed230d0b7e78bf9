package server

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	lru "github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"golang.org/x/time/rate"
)

// depthLimit refuses operations nested deeper than max.
type depthLimit struct{ max int }

func (depthLimit) ExtensionName() string                   { return "DepthLimit" }
func (depthLimit) Validate(graphql.ExecutableSchema) error { return nil }
func (d depthLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	if depth := selectionDepth(oc.Operation.SelectionSet, 0, d.max); depth > d.max {
		err := gqlerror.Errorf("operation is nested %d levels deep or more; the depth limit is %d", depth, d.max)
		errcode.Set(err, errcode.ValidationFailed)
		return err
	}
	return nil
}

// selectionDepth returns the depth of a selection set, stopping past limit
// (fragment cycles are refused by validation before this runs).
func selectionDepth(set ast.SelectionSet, depth, limit int) int {
	if depth > limit {
		return depth
	}
	deepest := depth
	for _, sel := range set {
		var d int
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "ofType" && s.ObjectDefinition != nil && s.ObjectDefinition.Name == "__Type" {
				// A type reference's wrappers (list of non-null of …): the
				// standard introspection query nests them 8 deep, and the
				// answer ends where the schema's types do.
				d = selectionDepth(s.SelectionSet, depth, limit)
			} else if len(s.SelectionSet) == 0 {
				d = depth + 1
			} else {
				d = selectionDepth(s.SelectionSet, depth+1, limit)
			}
		case *ast.InlineFragment:
			d = selectionDepth(s.SelectionSet, depth, limit)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				d = selectionDepth(s.Definition.SelectionSet, depth, limit)
			}
		}
		deepest = max(deepest, d)
	}
	return deepest
}

// rateLimiter keeps one token bucket per client address.
type rateLimiter struct {
	limit   rate.Limit
	burst   int
	clients *lru.LRU[string, *rate.Limiter]
	limited prometheus.Counter
}

func newRateLimiter(perSecond float64, burst int, limited prometheus.Counter) *rateLimiter {
	return &rateLimiter{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		clients: lru.NewLRU[string, *rate.Limiter](100_000, nil, 10*time.Minute),
		limited: limited,
	}
}

func (l *rateLimiter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			client = r.RemoteAddr
		}
		lim, ok := l.clients.Get(client)
		if !ok {
			lim = rate.NewLimiter(l.limit, l.burst)
			l.clients.Add(client, lim)
		}
		res := lim.Reserve()
		if delay := res.Delay(); delay > 0 {
			res.Cancel()
			l.limited.Inc()
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(delay.Seconds()))))
			writeError(w, http.StatusTooManyRequests, "RATE_LIMITED", fmt.Sprintf("too many requests; retry in %s", delay.Round(time.Millisecond)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// noIntrospection refuses operations that select __schema or __type, when
// introspection is switched off, before anything runs.
type noIntrospection struct{}

func (noIntrospection) ExtensionName() string                   { return "NoIntrospection" }
func (noIntrospection) Validate(graphql.ExecutableSchema) error { return nil }
func (noIntrospection) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation != nil && introspects(oc.Operation.SelectionSet) {
		err := gqlerror.Errorf("introspection is disabled on this server")
		errcode.Set(err, errcode.ValidationFailed)
		return err
	}
	return nil
}

// introspects tells whether a selection set asks for __schema or __type
// (introspection fields exist only at the root).
func introspects(set ast.SelectionSet) bool {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "__schema" || s.Name == "__type" {
				return true
			}
		case *ast.InlineFragment:
			if introspects(s.SelectionSet) {
				return true
			}
		case *ast.FragmentSpread:
			if s.Definition != nil && introspects(s.Definition.SelectionSet) {
				return true
			}
		}
	}
	return false
}
