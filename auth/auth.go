// Package auth owns who may do what: it reads the caller's credentials from
// the request and answers whether the caller may run admin operations. It is
// the one place to change when a fuller role model arrives.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// AdminKeyHeader carries the admin API key.
const AdminKeyHeader = "X-Admin-Key"

// Errors of RequireAdmin; check them with errors.Is.
var (
	ErrUnauthenticated = errors.New("admin API key required (header " + AdminKeyHeader + ")")
	ErrForbidden       = errors.New("admin API key not valid")
)

// Role is what a caller may do.
type Role int

// The roles.
const (
	RoleAnonymous Role = iota
	RoleAdmin
)

type principal struct {
	role       Role
	badKeySent bool
}

type ctxKey struct{}

// Authenticator checks admin keys. The zero value (no key) refuses every
// admin operation.
type Authenticator struct {
	adminKeyHash [32]byte
	configured   bool
}

// New returns an authenticator for one admin key; an empty key disables
// admin operations.
func New(adminKey string) *Authenticator {
	a := &Authenticator{}
	if adminKey != "" {
		a.adminKeyHash = sha256.Sum256([]byte(adminKey))
		a.configured = true
	}
	return a
}

// Middleware puts the caller's role into the request context. It never
// refuses a request itself: operations decide with RequireAdmin.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(AdminKeyHeader)
		if key == "" {
			key = BearerToken(r.Header.Get("Authorization"))
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, a.principal(key))))
	})
}

// WithKey returns ctx carrying the role of a key presented outside HTTP
// headers (a websocket's connection_init): ErrForbidden for a key that is
// not valid, ctx unchanged for no key.
func (a *Authenticator) WithKey(ctx context.Context, key string) (context.Context, error) {
	if key == "" {
		return ctx, nil
	}
	p := a.principal(key)
	if p.badKeySent {
		return ctx, ErrForbidden
	}
	return context.WithValue(ctx, ctxKey{}, p), nil
}

// BearerToken returns the token of an Authorization header value ("" when
// it is not a bearer token).
func BearerToken(authorization string) string {
	v, _ := strings.CutPrefix(authorization, "Bearer ")
	if v == authorization {
		return ""
	}
	return v
}

func (a *Authenticator) principal(key string) principal {
	if key == "" {
		return principal{role: RoleAnonymous}
	}
	h := sha256.Sum256([]byte(key))
	if a.configured && subtle.ConstantTimeCompare(h[:], a.adminKeyHash[:]) == 1 {
		return principal{role: RoleAdmin}
	}
	return principal{role: RoleAnonymous, badKeySent: true}
}

// WithRole returns a context carrying a role (for tests and internal callers).
func WithRole(ctx context.Context, role Role) context.Context {
	return context.WithValue(ctx, ctxKey{}, principal{role: role})
}

// RequireAdmin returns nil when the caller is an admin, else
// ErrUnauthenticated (no key) or ErrForbidden (a wrong key).
func RequireAdmin(ctx context.Context) error {
	p, _ := ctx.Value(ctxKey{}).(principal)
	switch {
	case p.role == RoleAdmin:
		return nil
	case p.badKeySent:
		return ErrForbidden
	default:
		return ErrUnauthenticated
	}
}

// Actor names the caller for audit records.
func Actor(ctx context.Context) string {
	p, _ := ctx.Value(ctxKey{}).(principal)
	if p.role == RoleAdmin {
		return "admin"
	}
	return "anonymous"
}

// ReadKey reads a key from a file, without surrounding white space; an
// empty file is an error.
func ReadKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read key: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("key file %s is empty", path)
	}
	return key, nil
}

// LoadOrCreateKey reads the admin key from path, creating the file with a new
// random key (mode 0600) when it does not exist. created tells which.
func LoadOrCreateKey(path string) (key string, created bool, err error) {
	key, err = ReadKey(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, err
	}
	key = hex.EncodeToString(raw[:])
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("create admin key: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("create admin key: %w", err)
	}
	return key, true, nil
}
