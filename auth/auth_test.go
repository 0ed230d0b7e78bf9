package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestRequireAdmin(t *testing.T) {
	a := New("s3cret")
	cases := []struct {
		name    string
		headers map[string]string
		want    error
	}{
		{"no key", nil, ErrUnauthenticated},
		{"wrong key", map[string]string{AdminKeyHeader: "nope"}, ErrForbidden},
		{"right key", map[string]string{AdminKeyHeader: "s3cret"}, nil},
		{"bearer", map[string]string{"Authorization": "Bearer s3cret"}, nil},
		{"wrong bearer", map[string]string{"Authorization": "Bearer x"}, ErrForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got error = errors.New("handler not reached")
			h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = RequireAdmin(r.Context())
			}))
			r := httptest.NewRequest(http.MethodPost, "/graphql", nil)
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if !errors.Is(got, c.want) && !(got == nil && c.want == nil) {
				t.Fatalf("RequireAdmin = %v, want %v", got, c.want)
			}
		})
	}
}

func TestNoKeyConfiguredRefusesEveryKey(t *testing.T) {
	a := New("")
	var got error
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = RequireAdmin(r.Context()) }))
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set(AdminKeyHeader, "")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if !errors.Is(got, ErrUnauthenticated) {
		t.Fatalf("got %v", got)
	}
	r.Header.Set(AdminKeyHeader, "anything")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if !errors.Is(got, ErrForbidden) {
		t.Fatalf("got %v", got)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "admin-api-key")
	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created || len(k1) != 48 {
		t.Fatalf("first call: key %q created %v err %v", k1, created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v err %v, want 0600", st.Mode().Perm(), err)
	}
	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created || k2 != k1 {
		t.Fatalf("second call: key %q created %v err %v, want the same key", k2, created, err)
	}
}

func TestReadKey(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKey(empty); err == nil {
		t.Fatal("an empty key file was accepted")
	}
	if _, err := ReadKey(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	ok := filepath.Join(dir, "key")
	if err := os.WriteFile(ok, []byte("s3cret\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := ReadKey(ok); err != nil || k != "s3cret" {
		t.Fatalf("ReadKey = %q, %v", k, err)
	}
}

func TestWithKey(t *testing.T) {
	a := New("s3cret")
	for _, c := range []struct {
		key     string
		wantErr error // of WithKey
		admin   error // RequireAdmin on the context it returns
	}{
		{"", nil, ErrUnauthenticated},
		{"s3cret", nil, nil},
		{"nope", ErrForbidden, ErrUnauthenticated},
	} {
		ctx, err := a.WithKey(context.Background(), c.key)
		if !errors.Is(err, c.wantErr) && !(err == nil && c.wantErr == nil) {
			t.Errorf("WithKey(%q) = %v, want %v", c.key, err, c.wantErr)
		}
		if got := RequireAdmin(ctx); !errors.Is(got, c.admin) && !(got == nil && c.admin == nil) {
			t.Errorf("WithKey(%q): RequireAdmin = %v, want %v", c.key, got, c.admin)
		}
	}
	if _, err := New("").WithKey(context.Background(), "anything"); !errors.Is(err, ErrForbidden) {
		t.Errorf("no key configured: %v, want ErrForbidden", err)
	}
}

func TestBearerToken(t *testing.T) {
	for in, want := range map[string]string{"Bearer abc": "abc", "bearer abc": "", "Basic abc": "", "": "", "abc": ""} {
		if got := BearerToken(in); got != want {
			t.Errorf("BearerToken(%q) = %q, want %q", in, got, want)
		}
	}
}
