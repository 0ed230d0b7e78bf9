package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/resolvers"
)

type gqlResponse struct {
	Data   map[string]any `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

func post(t *testing.T, h http.Handler, query string) (int, gqlResponse) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out gqlResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	return rec.Code, out
}

// testAuth knows the admin key "k" and opens the client and analyst roles,
// as surge dev does.
func testAuth() *auth.Authenticator {
	keys := auth.Static{}
	keys.Add("k", "admin", auth.RoleAdmin)
	return auth.New(auth.Options{Verifiers: []auth.Verifier{keys}, Open: auth.RoleAnalyst})
}

func newTestServer(opts Options) http.Handler {
	return New(&resolvers.Resolver{}, testAuth(), nil, opts).Handler()
}

// TestIntrospectionQueries: the exact queries graphql-js 16's
// getIntrospectionQuery() builds (default, and with every option, as
// GraphiQL and code generators send them; server/testdata, written by
// graphql 16.15.0 from web/node_modules: getIntrospectionQuery() and
// getIntrospectionQuery({descriptions, specifiedByUrl, directiveIsRepeatable,
// schemaDescription, inputValueDeprecation, oneOf: true})) pass the depth and
// complexity limits.
func TestIntrospectionQueries(t *testing.T) {
	h := newTestServer(Options{})
	for _, name := range []string{"introspection-default.graphql", "introspection-all-options.graphql"} {
		q, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		code, res := post(t, h, string(q))
		if code != http.StatusOK || len(res.Errors) > 0 {
			t.Fatalf("%s: %d %+v", name, code, res.Errors)
		}
		schema, _ := res.Data["__schema"].(map[string]any)
		qt, _ := schema["queryType"].(map[string]any)
		st, _ := schema["subscriptionType"].(map[string]any)
		if qt["name"] != "Query" || st["name"] != "Subscription" {
			t.Fatalf("%s: query type %v, subscription type %v", name, qt, st)
		}
	}
}

// TestAbusiveNestingRefused: introspection nested through fields, and
// inside ofType, is still refused; a long chain of ofType wrappers is not.
func TestAbusiveNestingRefused(t *testing.T) {
	h := newTestServer(Options{})
	deep := func(unit string, n int) string {
		closes := strings.Repeat(" }", strings.Count(unit, " ")/2+1)
		return "{ __schema { types { " + strings.Repeat(unit+" { ", n) + "name" + strings.Repeat(closes, n) + " } } }"
	}
	for name, q := range map[string]string{
		"fields":        deep("fields { type", 6),
		"inside ofType": deep("ofType { fields { type", 5),
	} {
		code, res := post(t, h, q)
		// Refused by the depth limit or by gqlparser's introspection depth
		// rule (graphql-js's MaxIntrospectionDepthRule), whichever sees it first.
		if code != http.StatusUnprocessableEntity || len(res.Errors) == 0 || res.Errors[0].Extensions["code"] != "GRAPHQL_VALIDATION_FAILED" {
			t.Errorf("%s: %d %+v, want refused", name, code, res.Errors)
		}
	}
	if code, res := post(t, h, deep("ofType", 30)); code != http.StatusOK || len(res.Errors) > 0 {
		t.Errorf("30 ofType wrappers: %d %+v, want an answer", code, res.Errors)
	}
}

func TestIntrospectionAndPlaygroundSwitchOff(t *testing.T) {
	h := newTestServer(Options{DisableIntrospection: true, DisablePlayground: true})
	for _, q := range []string{`{ __schema { queryType { name } } }`, `{ ...F } fragment F on Query { __type(name: "Query") { name } }`} {
		code, res := post(t, h, q)
		if code != http.StatusUnprocessableEntity || len(res.Errors) == 0 || res.Errors[0].Message != "introspection is disabled on this server" {
			t.Errorf("introspection off, %s: %d %+v, want refused", q, code, res)
		}
	}
	if _, res := post(t, h, `{ __typename }`); len(res.Errors) > 0 || res.Data["__typename"] != "Query" {
		t.Errorf("introspection off, __typename: %+v, want Query", res)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/playground", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("playground off: %d, want 404", rec.Code)
	}
	on := newTestServer(Options{})
	rec = httptest.NewRecorder()
	on.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/playground", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("playground on: %d, want 200", rec.Code)
	}
}
