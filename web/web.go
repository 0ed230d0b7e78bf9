// Package web owns the dashboard and the playground: static assets built from
// web/src by esbuild and embedded with go:embed.
//
// The built files live in web/dist and are committed, so that `go build` works
// in a fresh clone without node; `cd web && npm ci && npm run build` rebuilds
// them (see web/package.json).
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed dist
var files embed.FS

var dist = func() fs.FS {
	sub, err := fs.Sub(files, "dist")
	if err != nil {
		panic(err)
	}
	return sub
}()

// etags holds a strong ETag per embedded file, from its content; computed at
// the first request, not at the start of every surge command.
var etags = sync.OnceValue(func() map[string]string {
	m := map[string]string{}
	_ = fs.WalkDir(dist, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(dist, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		m[p] = `"` + hex.EncodeToString(sum[:12]) + `"`
		return nil
	})
	return m
})

// Handler serves the dashboard: index.html at / and the bundles under
// /assets/. Every other path is 404.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/" || p == "/index.html":
			serveFile(w, r, "index.html")
		case strings.HasPrefix(p, "/assets/"):
			serveFile(w, r, strings.TrimPrefix(p, "/"))
		default:
			http.NotFound(w, r)
		}
	})
}

// Playground serves the GraphiQL page at /playground (its bundles are served
// by Handler under /assets/).
func Playground() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/playground" && r.URL.Path != "/playground/" {
			http.NotFound(w, r)
			return
		}
		serveFile(w, r, "playground.html")
	})
}

func serveFile(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name = path.Clean(name)
	if !fs.ValidPath(name) {
		http.NotFound(w, r)
		return
	}
	data, err := fs.ReadFile(dist, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	// The bundles keep their names from build to build, so every file is
	// revalidated; the content ETag makes that a 304 when nothing changed
	// (http.ServeContent answers If-None-Match, HEAD and ranges).
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", etags()[name])
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
}
