// Package web owns the dashboard and the playground: static assets built from
// web/src by esbuild and embedded with go:embed.
//
// The built files live in web/dist and are committed, so that `go build` works
// in a fresh clone without node; `cd web && npm ci && npm run build` rebuilds
// them (see web/package.json).
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
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

// etags holds a strong ETag per embedded file, from its content.
var etags = func() map[string]string {
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
}()

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
	h := w.Header()
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		h.Set("Content-Type", ct)
	} else {
		h.Set("Content-Type", http.DetectContentType(data))
	}
	// The bundles keep their names from build to build, so every file is
	// revalidated; the content ETag makes that a 304 when nothing changed.
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	etag := etags[name]
	h.Set("ETag", etag)
	if match := r.Header.Get("If-None-Match"); etag != "" && match != "" && strings.Contains(match, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data)
}
