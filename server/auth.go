package server

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/resolvers"
)

// introspectionNeedsRole refuses __schema and __type to a caller holding no
// role (anonymous, with no role open), so that a server with keys shows
// nothing, not even its schema, without them.
type introspectionNeedsRole struct{}

func (introspectionNeedsRole) ExtensionName() string                   { return "IntrospectionNeedsRole" }
func (introspectionNeedsRole) Validate(graphql.ExecutableSchema) error { return nil }
func (introspectionNeedsRole) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil || auth.FromContext(ctx).Roles != 0 || !introspects(oc.Operation.SelectionSet) {
		return nil
	}
	err := gqlerror.Errorf("introspection needs an API key or a bearer token on this server")
	err.Extensions = map[string]any{"code": resolvers.CodeUnauthenticated}
	return err
}
