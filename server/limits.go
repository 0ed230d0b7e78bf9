package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
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

// aliasLimit refuses operations with more than max aliased fields (fields
// whose alias is not their name, counted through fragments): aliases are
// how one query asks for the same costly field many times.
type aliasLimit struct{ max int }

func (aliasLimit) ExtensionName() string                   { return "AliasLimit" }
func (aliasLimit) Validate(graphql.ExecutableSchema) error { return nil }
func (a aliasLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	aliased := func(f *ast.Field) bool { return f.Alias != f.Name }
	if n := countFields(oc.Operation.SelectionSet, aliased, map[*ast.FragmentDefinition]int{}, a.max); n > a.max {
		err := gqlerror.Errorf("operation has %d aliased fields or more; the alias limit is %d", n, a.max)
		errcode.Set(err, errcode.ValidationFailed)
		return err
	}
	return nil
}

// operationLimit bounds a query document: its size, checked before it is
// parsed (and before AutomaticPersistedQuery caches it: use it first), the
// operations it defines, and the fields the operation selects once its
// fragments are expanded. The last runs before the other extensions, whose
// walks through fragments (gqlgen's complexity among them) take time in
// the number of paths through nested spreads, 2^n for n fragments each
// spreading the next twice; every field costs at least 1 in complexity, so
// it refuses nothing that a complexity limit of maxFields would let through.
type operationLimit struct{ maxBytes, maxOps, maxFields int }

func (operationLimit) ExtensionName() string                   { return "OperationLimit" }
func (operationLimit) Validate(graphql.ExecutableSchema) error { return nil }
func (l operationLimit) MutateOperationParameters(_ context.Context, p *graphql.RawParams) *gqlerror.Error {
	if len(p.Query) > l.maxBytes {
		err := gqlerror.Errorf("query document is %d bytes; the limit is %d", len(p.Query), l.maxBytes)
		errcode.Set(err, errcode.ValidationFailed)
		return err
	}
	return nil
}
func (l operationLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if n := len(oc.Doc.Operations); n > l.maxOps {
		err := gqlerror.Errorf("query document defines %d operations; the limit is %d", n, l.maxOps)
		errcode.Set(err, errcode.ValidationFailed)
		return err
	}
	all := func(*ast.Field) bool { return true }
	if n := countFields(oc.Operation.SelectionSet, all, map[*ast.FragmentDefinition]int{}, l.maxFields); n > l.maxFields {
		err := gqlerror.Errorf("operation selects %d fields or more, its fragments expanded; the complexity limit is %d", n, l.maxFields)
		errcode.Set(err, codeComplexity)
		return err
	}
	return nil
}

// codeComplexity is extension.ComplexityLimit's code.
const codeComplexity = "COMPLEXITY_LIMIT_EXCEEDED"

// countFields counts the fields of a selection set that keep accepts, a
// fragment's as often as it is spread, stopping past limit. Each fragment is
// walked once (memo, for this keep), so that fragments spreading fragments
// cost the document's size (cycles are refused by validation).
func countFields(set ast.SelectionSet, keep func(*ast.Field) bool, memo map[*ast.FragmentDefinition]int, limit int) int {
	n := 0
	for _, sel := range set {
		if n > limit {
			break
		}
		switch s := sel.(type) {
		case *ast.Field:
			if keep(s) {
				n++
			}
			n += countFields(s.SelectionSet, keep, memo, limit)
		case *ast.InlineFragment:
			n += countFields(s.SelectionSet, keep, memo, limit)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				c, ok := memo[s.Definition]
				if !ok {
					c = countFields(s.Definition.SelectionSet, keep, memo, limit)
					memo[s.Definition] = c
				}
				n += c
			}
		}
	}
	return min(n, limit+1)
}

// codeTimeout is the extensions.code of a field that failed because its
// operation ran out of time.
const codeTimeout = "TIMEOUT"

// errTimedOut is the cause of the contexts requestTimeout ends.
var errTimedOut = errors.New("operation timed out")

// requestTimeout bounds the execution of a query or mutation, on every
// transport, by d (subscriptions last as long as their client wants), and
// gives the fields that fail once it has passed the code TIMEOUT. Resolvers
// that do not watch their context run on past it.
type requestTimeout struct{ d time.Duration }

func (requestTimeout) ExtensionName() string                   { return "RequestTimeout" }
func (requestTimeout) Validate(graphql.ExecutableSchema) error { return nil }
func (t requestTimeout) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if op := graphql.GetOperationContext(ctx).Operation; op == nil || op.Operation == ast.Subscription {
		return next(ctx)
	}
	// The transports call the response handler with the context given to
	// next; it is called again for deferred parts, so the operation ends
	// with its last response (or when the request does).
	ctx, cancel := context.WithTimeoutCause(ctx, t.d, errTimedOut)
	responses := next(ctx)
	return func(ctx context.Context) *graphql.Response {
		resp := responses(ctx)
		if resp == nil || resp.HasNext == nil || !*resp.HasNext {
			cancel()
		}
		return resp
	}
}
func (t requestTimeout) InterceptField(ctx context.Context, next graphql.Resolver) (any, error) {
	res, err := next(ctx)
	if err != nil && context.Cause(ctx) == errTimedOut {
		return res, &gqlerror.Error{
			Err:        err,
			Message:    fmt.Sprintf("operation timed out after %s", t.d),
			Extensions: map[string]any{"code": codeTimeout},
		}
	}
	return res, err
}

var (
	_ graphql.OperationContextMutator   = aliasLimit{}
	_ graphql.OperationParameterMutator = operationLimit{}
	_ graphql.OperationContextMutator   = operationLimit{}
	_ graphql.OperationInterceptor      = requestTimeout{}
	_ graphql.FieldInterceptor          = requestTimeout{}
)

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

type getKey struct{}

// markGET marks GET requests (not websocket upgrades) in their context,
// for getQueriesOnly.
func markGET(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.Header.Get("Upgrade") == "" { // not a websocket
			r = r.WithContext(context.WithValue(r.Context(), getKey{}, true))
		}
		next.ServeHTTP(w, r)
	})
}

// getQueriesOnly refuses a mutation or subscription sent by GET with a
// coded error (gqlgen's GET transport would answer 406 with an uncoded one).
type getQueriesOnly struct{}

func (getQueriesOnly) ExtensionName() string                   { return "GETQueriesOnly" }
func (getQueriesOnly) Validate(graphql.ExecutableSchema) error { return nil }
func (getQueriesOnly) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil || oc.Operation.Operation == ast.Query || ctx.Value(getKey{}) == nil {
		return nil
	}
	err := gqlerror.Errorf("GET requests only allow query operations; send a %s by POST (or a subscription over the websocket)", oc.Operation.Operation)
	errcode.Set(err, errcode.ValidationFailed)
	return err
}
