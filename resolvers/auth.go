package resolvers

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/graph/model"
)

// roles maps the schema's Role enum to auth's roles.
var roles = map[model.Role]auth.Role{
	model.RoleClient:  auth.RoleClient,
	model.RoleIngest:  auth.RoleIngest,
	model.RoleSupply:  auth.RoleSupply,
	model.RoleAnalyst: auth.RoleAnalyst,
	model.RoleAdmin:   auth.RoleAdmin,
}

// HasRole implements the schema's @hasRole directive: the field runs only
// for a caller holding the role (auth.Require), else it fails with
// UNAUTHENTICATED or FORBIDDEN (see ErrorPresenter).
func HasRole(ctx context.Context, _ any, next graphql.Resolver, role model.Role) (any, error) {
	r, ok := roles[role]
	if !ok {
		return nil, fmt.Errorf("hasRole: unknown role %q", role)
	}
	if err := auth.Require(ctx, r); err != nil {
		return nil, err
	}
	return next(ctx)
}
