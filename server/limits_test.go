package server

import (
	"testing"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
)

func TestSelectionDepth(t *testing.T) {
	cases := []struct {
		query string
		want  int
	}{
		{`{ regions { id } }`, 2},
		{`{ a b c }`, 1},
		{`{ a { b { c { d } } } }`, 4},
		{`{ a { ...F } } fragment F on T { b { c } }`, 3},
		{`{ a { ... on T { b { c { d } } } } }`, 4},
	}
	for _, c := range cases {
		doc, err := parser.ParseQuery(&ast.Source{Input: c.query})
		if err != nil {
			t.Fatal(err)
		}
		// Resolve fragment spreads as validation would.
		for _, op := range doc.Operations {
			resolveSpreads(op.SelectionSet, doc)
			if got := selectionDepth(op.SelectionSet, 0, 100); got != c.want {
				t.Errorf("%s: depth %d, want %d", c.query, got, c.want)
			}
		}
	}
}

func resolveSpreads(set ast.SelectionSet, doc *ast.QueryDocument) {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			resolveSpreads(s.SelectionSet, doc)
		case *ast.InlineFragment:
			resolveSpreads(s.SelectionSet, doc)
		case *ast.FragmentSpread:
			s.Definition = doc.Fragments.ForName(s.Name)
			resolveSpreads(s.Definition.SelectionSet, doc)
		}
	}
}

func TestSelectionDepthStopsPastTheLimit(t *testing.T) {
	doc, err := parser.ParseQuery(&ast.Source{Input: `{ a { b { c { d { e { f } } } } } }`})
	if err != nil {
		t.Fatal(err)
	}
	if got := selectionDepth(doc.Operations[0].SelectionSet, 0, 2); got <= 2 {
		t.Fatalf("depth %d: a query deeper than the limit must report more than the limit", got)
	}
}
