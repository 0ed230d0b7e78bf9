package resolvers

//go:generate sh -c "cd .. && go run github.com/99designs/gqlgen generate --config gqlgen.yml"
