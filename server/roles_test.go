package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/resolvers"
)

// roleKeys are the keys of roleAuth, one per role.
var roleKeys = map[string]auth.Role{
	"key-client": auth.RoleClient, "key-ingest": auth.RoleIngest, "key-supply": auth.RoleSupply,
	"key-analyst": auth.RoleAnalyst, "key-admin": auth.RoleAdmin,
}

// roleAuth knows one key per role and opens no role: `surge serve`'s
// default.
func roleAuth() *auth.Authenticator {
	keys := auth.Static{}
	for k, r := range roleKeys {
		keys.Add(k, k, r)
	}
	return auth.New(auth.Options{Verifiers: []auth.Verifier{keys}})
}

// TestEveryFieldDeclaresItsRole enumerates the schema's root fields
// (queries, mutations, subscriptions): each must carry @hasRole, so a new
// field without a rule fails here. Each is then called, with made-up
// arguments, without credentials (UNAUTHENTICATED), with every key whose
// roles lack the field's (FORBIDDEN), and with every key holding it (not
// refused: the resolver runs, whatever it then answers).
func TestEveryFieldDeclaresItsRole(t *testing.T) {
	h := New(&resolvers.Resolver{}, roleAuth(), nil, Options{RequestTimeout: 5 * time.Second}).Handler()
	srv := httptest.NewServer(h)
	defer srv.Close()
	schema := resolvers.NewSchema(&resolvers.Resolver{}).Schema()
	fields := 0
	for _, root := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		for _, f := range root.Fields {
			if strings.HasPrefix(f.Name, "__") {
				continue
			}
			fields++
			name := root.Name + "." + f.Name
			d := f.Directives.ForName("hasRole")
			if d == nil {
				t.Errorf("%s has no @hasRole: declare in schema.graphqls who may call it", name)
				continue
			}
			want, err := auth.ParseRoles(strings.ToLower(d.Arguments.ForName("role").Value.Raw))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			op := operation(schema, root, f)
			call := func(key string) string {
				if root == schema.Subscription {
					return subscribeCode(t, srv.URL, key, op)
				}
				return postCode(t, h, key, op)
			}
			if code := call(""); code != resolvers.CodeUnauthenticated {
				t.Errorf("%s without credentials: code %q, want UNAUTHENTICATED\n%s", name, code, op)
			}
			for _, key := range sortedKeys() {
				held := auth.New(auth.Options{Open: roleKeys[key]}).Open()
				code := call(key)
				switch {
				case held&want == want && (code == resolvers.CodeUnauthenticated || code == resolvers.CodeForbidden):
					t.Errorf("%s with %s: refused (%s), want it run", name, key, code)
				case held&want != want && code != resolvers.CodeForbidden:
					t.Errorf("%s with %s: code %q, want FORBIDDEN", name, key, code)
				}
			}
		}
	}
	if fields < 25 {
		t.Fatalf("found %d root fields; the enumeration is broken", fields)
	}
}

func sortedKeys() []string {
	keys := make([]string, 0, len(roleKeys))
	for k := range roleKeys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// operation is a document calling f with made-up values for its required
// arguments, selecting __typename of an object result.
func operation(schema *ast.Schema, root *ast.Definition, f *ast.FieldDefinition) string {
	var args []string
	for _, a := range f.Arguments {
		if a.Type.NonNull && a.DefaultValue == nil {
			args = append(args, a.Name+": "+literal(schema, a.Type, 0))
		}
	}
	call := f.Name
	if len(args) > 0 {
		call += "(" + strings.Join(args, ", ") + ")"
	}
	if def := schema.Types[f.Type.Name()]; def != nil && def.Kind != ast.Scalar && def.Kind != ast.Enum {
		call += " { __typename }"
	}
	return strings.ToLower(root.Name) + " { " + call + " }"
}

// literal is a value of type t.
func literal(schema *ast.Schema, t *ast.Type, depth int) string {
	if t.Elem != nil {
		return "[" + literal(schema, t.Elem, depth) + "]"
	}
	def := schema.Types[t.NamedType]
	switch {
	case t.NamedType == "Int", t.NamedType == "Float":
		return "1"
	case t.NamedType == "Boolean":
		return "false"
	case t.NamedType == "Time":
		return `"2026-01-01T00:00:00Z"`
	case def != nil && def.Kind == ast.Enum:
		return def.EnumValues[0].Name
	case def != nil && def.Kind == ast.InputObject && depth < 4:
		var fs []string
		for _, f := range def.Fields {
			if f.Type.NonNull && f.DefaultValue == nil {
				fs = append(fs, f.Name+": "+literal(schema, f.Type, depth+1))
			}
		}
		return "{" + strings.Join(fs, ", ") + "}"
	default:
		return `"x"`
	}
}

// postCode runs a query or mutation and returns its first error's code.
func postCode(t *testing.T, h http.Handler, key, op string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": op})
	req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(auth.APIKeyHeader, key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out gqlResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s: %d %s", op, rec.Code, rec.Body)
	}
	if len(out.Errors) == 0 {
		return ""
	}
	code, _ := out.Errors[0].Extensions["code"].(string)
	return code
}

// subscribeCode subscribes over graphql-transport-ws, with the key in
// connection_init, and returns the code of the first error (or "" for a
// first result).
func subscribeCode(t *testing.T, url, key, op string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1)+"/graphql",
		&websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	send := func(v any) {
		b, _ := json.Marshal(v)
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	init := map[string]any{}
	if key != "" {
		init["X-Api-Key"] = key
	}
	send(map[string]any{"type": "connection_init", "payload": init})
	send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": op}})
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		var m struct {
			Type    string
			Payload json.RawMessage
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		switch m.Type {
		case "connection_ack", "ping", "pong":
			continue
		case "next":
			var r gqlResponse
			_ = json.Unmarshal(m.Payload, &r)
			if len(r.Errors) > 0 {
				code, _ := r.Errors[0].Extensions["code"].(string)
				return code
			}
			return ""
		case "error":
			var errs []struct{ Extensions map[string]any }
			_ = json.Unmarshal(m.Payload, &errs)
			if len(errs) > 0 {
				code, _ := errs[0].Extensions["code"].(string)
				return code
			}
			return "error"
		default:
			return fmt.Sprintf("message %s", m.Type)
		}
	}
}
