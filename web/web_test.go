package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandlers(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/", Handler())
	mux.Handle("/playground", Playground())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		path        string
		status      int
		contentType string // substring
		cache       string
		body        string // substring
	}{
		{"/", 200, "text/html", "no-cache", `src="/assets/dashboard.js"`},
		{"/index.html", 200, "text/html", "no-cache", `href="/assets/dashboard.css"`},
		{"/assets/dashboard.js", 200, "javascript", "no-cache", "surgeUpdated"},
		{"/assets/dashboard.css", 200, "text/css", "no-cache", ".grid"},
		{"/assets/playground.js", 200, "javascript", "no-cache", "graphiql"},
		{"/assets/playground.css", 200, "text/css", "no-cache", ".graphiql-container"},
		{"/playground", 200, "text/html", "no-cache", `src="/assets/playground.js"`},
		{"/nope", 404, "", "", ""},
		{"/assets/nope.js", 404, "", "", ""},
		{"/assets/../web.go", 404, "", "", ""},
		{"/playground.html", 404, "", "", ""},
		{"/THIRD_PARTY_LICENSES.txt", 404, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			res, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			if tt.status != 200 {
				return
			}
			if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, tt.contentType) {
				t.Errorf("Content-Type %q, want it to contain %q", ct, tt.contentType)
			}
			if cc := res.Header.Get("Cache-Control"); cc != tt.cache {
				t.Errorf("Cache-Control %q, want %q", cc, tt.cache)
			}
			if !strings.Contains(string(body), tt.body) {
				t.Errorf("body does not contain %q", tt.body)
			}
		})
	}
}

func TestNotModified(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/assets/dashboard.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/assets/dashboard.js", nil)
	req.Header.Set("If-None-Match", etag)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotModified {
		t.Fatalf("status %d, want 304", res.StatusCode)
	}
}

// The pages must work offline: no script or stylesheet from a CDN.
func TestNoCDN(t *testing.T) {
	external := regexp.MustCompile(`(?i)<(script|link)[^>]+(src|href)\s*=\s*["']?(https?:)?//`)
	n := 0
	err := fs.WalkDir(dist, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".html") || strings.HasSuffix(p, ".js") || strings.HasSuffix(p, ".css")) {
			return err
		}
		n++
		b, err := fs.ReadFile(dist, p)
		if err != nil {
			return err
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s loads from another host: %s", p, m)
		}
		if strings.HasSuffix(p, ".css") {
			if m := regexp.MustCompile(`@import\s+url\(["']?https?:|url\(["']?https?://`).Find(b); m != nil {
				t.Errorf("%s loads from another host: %s", p, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("only %d files checked: is dist built?", n)
	}
}
