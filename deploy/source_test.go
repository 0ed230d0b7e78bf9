package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the main module's directory, relative to this package.
const repoRoot = ".."

// metricDef is a Prometheus metric the main module defines.
type metricDef struct {
	kind   string // Counter, Gauge, Histogram, Summary
	labels map[string]bool
	at     string // file:line
}

// source is what the main module's non-test Go files define: metrics
// (prometheus.New*(prometheus.*Opts{Name: ...}, []string{labels})) and the
// environment variables the binary reads (help(usage, "NAME") of the flags,
// os.Getenv/os.LookupEnv of a literal or a string constant).
type source struct {
	metrics map[string]metricDef
	env     map[string]bool
}

var scanSource = sync.OnceValues(func() (*source, error) {
	src := &source{metrics: map[string]metricDef{}, env: map[string]bool{}}
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); p != repoRoot && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata" || name == "deploy") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// String constants of every package, for os.Getenv(SomeConst).
	consts := map[string]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if v, ok := stringLit(vs.Values[i]); ok {
							consts[n.Name] = v
						}
					}
				}
			}
		}
	}
	var errs []string
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			pkg, fn := callee(call)
			switch {
			case pkg == "" && fn == "help" && len(call.Args) == 2:
				if v, ok := stringLit(call.Args[1]); ok {
					src.env[v] = true
				}
			case pkg == "os" && (fn == "Getenv" || fn == "LookupEnv") && len(call.Args) == 1:
				if v, ok := stringLit(call.Args[0]); ok {
					src.env[v] = true
				} else if id, ok := call.Args[0].(*ast.Ident); ok && consts[id.Name] != "" {
					src.env[consts[id.Name]] = true
				}
			case pkg == "prometheus" && strings.HasPrefix(fn, "New"):
				kind, vec := strings.CutSuffix(strings.TrimPrefix(fn, "New"), "Vec")
				switch kind {
				case "Counter", "Gauge", "Histogram", "Summary":
				default:
					return true
				}
				at := fset.Position(call.Pos()).String()
				name, labels, err := metricOpts(call, vec)
				if err != "" {
					errs = append(errs, at+": "+err)
					return true
				}
				src.metrics[name] = metricDef{kind: kind, labels: labels, at: at}
			}
			return true
		})
	}
	if len(errs) > 0 {
		return nil, &scanError{errs}
	}
	return src, nil
})

type scanError struct{ errs []string }

func (e *scanError) Error() string {
	return "metric definitions this scan cannot read (give Name and the labels as literals):\n" + strings.Join(e.errs, "\n")
}

// metricOpts reads the Name of a prometheus.New* call's options literal and,
// for a Vec, its label names; it refuses what it cannot read, so that no
// definition is missed silently.
func metricOpts(call *ast.CallExpr, vec bool) (name string, labels map[string]bool, err string) {
	if len(call.Args) == 0 {
		return "", nil, "no options"
	}
	opts, ok := call.Args[0].(*ast.CompositeLit)
	if !ok {
		return "", nil, "options are not a literal"
	}
	for _, e := range opts.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			return "", nil, "options without field names"
		}
		switch key := kv.Key.(*ast.Ident).Name; key {
		case "Name":
			if name, ok = stringLit(kv.Value); !ok {
				return "", nil, "Name is not a string literal"
			}
		case "Namespace", "Subsystem":
			return "", nil, key + " is set"
		}
	}
	if name == "" {
		return "", nil, "no Name"
	}
	labels = map[string]bool{}
	if !vec {
		return name, labels, ""
	}
	if len(call.Args) < 2 {
		return "", nil, "Vec without labels"
	}
	list, ok := call.Args[1].(*ast.CompositeLit)
	if !ok {
		return "", nil, "labels are not a []string literal"
	}
	for _, e := range list.Elts {
		l, ok := stringLit(e)
		if !ok {
			return "", nil, "a label is not a string literal"
		}
		labels[l] = true
	}
	return name, labels, ""
}

func callee(call *ast.CallExpr) (pkg, fn string) {
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return "", f.Name
	case *ast.SelectorExpr:
		if x, ok := f.X.(*ast.Ident); ok {
			return x.Name, f.Sel.Name
		}
	}
	return "", ""
}

func stringLit(e ast.Expr) (string, bool) {
	b, ok := e.(*ast.BasicLit)
	if !ok || b.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(b.Value)
	return s, err == nil
}

func mustSource(t *testing.T) *source {
	t.Helper()
	src, err := scanSource()
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestSourceScan keeps the scan honest: it finds the metrics and settings
// the alerts and manifests rely on, with their labels.
func TestSourceScan(t *testing.T) {
	src := mustSource(t)
	t.Logf("%d metrics, %d environment variables", len(src.metrics), len(src.env))
	if len(src.metrics) < 50 {
		t.Errorf("found %d metric definitions, want the 50 or more the code has", len(src.metrics))
	}
	for name, want := range map[string]struct {
		kind   string
		labels []string
	}{
		"surge_graphql_request_duration_seconds": {"Histogram", []string{"type", "field"}},
		"surge_stream_consumer_lag":              {"Gauge", []string{"topic", "partition"}},
		"surge_quotes_total":                     {"Counter", []string{"forecast_source"}},
		"surge_live_subscriptions":               {"Gauge", nil},
	} {
		m, ok := src.metrics[name]
		if !ok {
			t.Errorf("metric %s not found", name)
			continue
		}
		if m.kind != want.kind || len(m.labels) != len(want.labels) {
			t.Errorf("%s: %s with labels %v, want %s %v", name, m.kind, m.labels, want.kind, want.labels)
		}
		for _, l := range want.labels {
			if !m.labels[l] {
				t.Errorf("%s: label %s missing", name, l)
			}
		}
	}
	for _, e := range []string{"LISTEN_ADDR", "REDIS_ADDR", "USER_HASH_KEY", "ORT_LIB_PATH", "AWS_ACCESS_KEY_ID", "RUN_CONSUMERS"} {
		if !src.env[e] {
			t.Errorf("environment variable %s not found in the source", e)
		}
	}
}
