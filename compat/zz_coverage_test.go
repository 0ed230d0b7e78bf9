package compat

// This file sorts last so that its test runs after every other test of the
// package (go test runs them in file order): it checks what they executed.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/surgeworks/surge/migrations"
)

// sqlStart is how a string literal of SQL starts (keywords in upper case,
// as the project writes them; prose such as "create key: %w" is not SQL).
var sqlStart = regexp.MustCompile(`^\s*(SELECT|INSERT\s+INTO|CREATE\s+(DATABASE|TABLE|VIEW|MATERIALIZED\s+VIEW|TEMPORARY\s+TABLE)|ALTER\s+TABLE|DROP\s+(TABLE|DATABASE|VIEW)|DETACH|ATTACH|OPTIMIZE\s+TABLE|TRUNCATE|RENAME\s+TABLE|SYSTEM|WITH|SHOW|DESCRIBE|EXISTS)\b`)

// notRunHere are the directories whose SQL is not the project's analytics:
// test support that runs only against the 18.16 test server.
var notRunHere = map[string]string{
	"internal/testenv": "creates and drops the test databases of the 18.16 test server",
	"internal/chtest":  "opens the 18.16 test server",
}

// clusterOnlyFiles hold SQL that runs only when CLICKHOUSE_CLUSTER names a
// cluster (Replicated tables need ZooKeeper, Distributed ones a
// remote_servers cluster; chDB has neither): `make test-chcluster` runs it on
// 18.16 servers. clusterOnly also takes every SYSTEM SYNC REPLICA.
var clusterOnlyFiles = map[string]bool{
	"migrations/cluster.go": true,
	"sink/cluster.go":       true,
}

func clusterOnly(s sqlText) bool {
	file, _, _ := strings.Cut(s.at, ":")
	return clusterOnlyFiles[file] || strings.HasPrefix(strings.TrimSpace(s.pieces[0]), "SYSTEM SYNC REPLICA")
}

// placeholder is what a statement's text has in place of what is filled in
// at run time: fmt verbs, {name} (strings.Replacer) and ?N placeholders.
var placeholder = regexp.MustCompile(`%[-+# 0-9.]*[a-zA-Z]|\{[a-z_]+\}|\$\{[a-z_]+\}|\?[0-9]+`)

// sqlText is one SQL statement (or fragment) of the project's source: its
// pieces, with a wildcard between two pieces where an expression or a
// placeholder fills in the rest.
type sqlText struct {
	at     string // file:line
	pieces []string
}

// pattern matches the executed statements that contain the text.
func (s sqlText) pattern() *regexp.Regexp {
	var b strings.Builder
	for i, p := range s.pieces {
		if i > 0 {
			b.WriteString(`[\s\S]*?`)
		}
		for j, f := range strings.Fields(p) {
			if j > 0 {
				b.WriteString(`\s+`)
			}
			b.WriteString(regexp.QuoteMeta(f))
		}
	}
	return regexp.MustCompile(b.String())
}

// projectSQL returns the SQL of the main module's non-test Go sources: each
// string literal that starts like SQL, taken with the literals it is
// concatenated with (other operands are wildcards), and the statements of
// the migrations.
func projectSQL(t *testing.T, root string) []sqlText {
	t.Helper()
	var out []sqlText
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if _, ok := notRunHere[rel]; ok {
				return filepath.SkipDir
			}
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "data" || d.Name() == "graph") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir // another module (this one)
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			e, ok := n.(ast.Expr)
			if !ok {
				return true
			}
			operands := concatenation(e)
			if operands == nil {
				return true
			}
			first, ok := operands[0].(*ast.BasicLit)
			if !ok || first.Kind != token.STRING {
				return true
			}
			if s, _ := strconv.Unquote(first.Value); !sqlStart.MatchString(s) {
				return true
			}
			st := sqlText{at: rel + ":" + strconv.Itoa(fset.Position(e.Pos()).Line)}
			for _, op := range operands {
				lit, ok := op.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					st.pieces = append(st.pieces, "")
					continue
				}
				s, _ := strconv.Unquote(lit.Value)
				st.pieces = append(st.pieces, placeholder.Split(s, -1)...)
			}
			out = append(out, st)
			return false // its operands are part of it
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		for i, stmt := range m.Statements {
			out = append(out, sqlText{at: "migrations/" + m.Name + ".sql statement " + strconv.Itoa(i+1), pieces: placeholder.Split(stmt, -1)})
		}
	}
	return out
}

// concatenation returns the operands of a string concatenation a + b + …
// (e itself when it is a string literal outside one), nil for anything else.
func concatenation(e ast.Expr) []ast.Expr {
	switch x := e.(type) {
	case *ast.BasicLit:
		return []ast.Expr{x}
	case *ast.ParenExpr:
		return concatenation(x.X)
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return nil
		}
		l, r := concatenation(x.X), concatenation(x.Y)
		if l == nil {
			l = []ast.Expr{x.X}
		}
		if r == nil {
			r = []ast.Expr{x.Y}
		}
		return append(l, r...)
	}
	return nil
}

// TestEveryQueryIsCovered fails for each SQL text of the project that no
// test of this package ran on chDB (run the whole package: with -run
// selecting a subset, the others' statements are missing).
func TestEveryQueryIsCovered(t *testing.T) {
	texts := projectSQL(t, "..")
	executed := session.Executed()
	var covered, cluster int
	for _, s := range texts {
		if clusterOnly(s) {
			cluster++
			continue
		}
		re := s.pattern()
		found := false
		for _, q := range executed {
			if re.MatchString(q) {
				found = true
				break
			}
		}
		if found {
			covered++
		} else {
			t.Errorf("%s: not run on chDB: %s", s.at, strings.Join(strings.Fields(strings.Join(s.pieces, " … ")), " "))
		}
	}
	var fromMigrations int
	for _, s := range texts {
		if strings.HasSuffix(strings.Fields(s.at)[0], ".sql") {
			fromMigrations++
		}
	}
	t.Logf("%d of %d SQL texts of the project run on chDB (%d in Go sources, %d migration statements; %d statements executed); %d more run on a cluster only (make test-chcluster, 18.16)",
		covered, len(texts)-cluster, len(texts)-cluster-fromMigrations, fromMigrations, len(executed), cluster)
	if len(texts) < 60 {
		t.Errorf("found only %d SQL texts: the scan is broken", len(texts))
	}
}
