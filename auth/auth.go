// Package auth owns who may do what: it reads the caller's credentials from
// a request (an API key or a JWT bearer token), turns them into a Principal
// holding roles, and answers whether that principal may call an operation.
// GraphQL fields declare their role with the @hasRole directive
// (resolvers.HasRole calls Require); HTTP routes are wrapped by
// RequireRole; the websocket's connection_init presents the same
// credentials (Authenticator.Token). Keys live in ClickHouse (Keys), JWTs
// are verified with a shared secret (HS256) or a JWKS file (RS256).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// Credential headers. An API key travels in X-Api-Key (or as a bearer
// token); X-Admin-Key is kept for clients of the first admin key.
const (
	APIKeyHeader   = "X-Api-Key"
	AdminKeyHeader = "X-Admin-Key"
)

// Errors. Check them with errors.Is.
var (
	// ErrUnauthenticated: the operation needs a role the anonymous caller
	// does not hold; send a key or a token.
	ErrUnauthenticated = errors.New("authentication required: send an API key (X-Api-Key) or a bearer token")
	// ErrForbidden: the caller is known but does not hold the role.
	ErrForbidden = errors.New("the caller's roles do not allow this operation")
	// ErrInvalidCredentials: the key or token presented is not valid
	// (unknown, revoked, expired, badly signed).
	ErrInvalidCredentials = errors.New("invalid credentials")
)

// Role is a set of operations a caller may run.
type Role uint8

// The roles. Admin includes every other; analyst includes client; supply
// includes ingest. Ingest and supply are for servers sending events, client for
// apps asking prices, analyst for reading history and results, admin for
// changing rules, experiments, models and keys.
const (
	RoleClient  Role = 1 << iota // price, prices, forecast, factorBreakdown, regions, book, live surge
	RoleIngest                   // POST /v1/events and ingestEvents: demand events (search, booking, cancel)
	RoleSupply                   // supply_update and external_signal events too
	RoleAnalyst                  // history, features, accuracy, audits, experiment results
	RoleAdmin                    // rules, experiments, models, rollouts, keys
)

var roleNames = []struct {
	role Role
	name string
}{{RoleClient, "client"}, {RoleIngest, "ingest"}, {RoleSupply, "supply"}, {RoleAnalyst, "analyst"}, {RoleAdmin, "admin"}}

// implied expands roles by the hierarchy.
func implied(r Role) Role {
	if r&RoleAdmin != 0 {
		r |= RoleAnalyst | RoleSupply
	}
	if r&RoleAnalyst != 0 {
		r |= RoleClient
	}
	if r&RoleSupply != 0 {
		r |= RoleIngest
	}
	return r
}

// ParseRoles reads comma-separated role names ("client,analyst"); "" is no
// role.
func ParseRoles(s string) (Role, error) {
	var r Role
	for _, part := range strings.Split(s, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		if part == "" {
			continue
		}
		known := false
		for _, n := range roleNames {
			if n.name == part {
				r, known = r|n.role, true
			}
		}
		if !known {
			return 0, fmt.Errorf("unknown role %q (want client, ingest, supply, analyst or admin)", part)
		}
	}
	return r, nil
}

// Names lists the roles held, lowest first.
func (r Role) Names() []string {
	var out []string
	for _, n := range roleNames {
		if r&n.role != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

func (r Role) String() string {
	if r == 0 {
		return "none"
	}
	return strings.Join(r.Names(), ",")
}

// Principal is the caller of a request.
type Principal struct {
	// ID is stable and not secret: the rate-limit bucket and the namespace
	// of the caller's event ids. "key:<client>" for an API key,
	// "jwt:<subject>" for a token, "env:<hash>" for a key from the
	// environment, "addr:<ip>" for an anonymous caller.
	ID string
	// Name is what logs and audit records show (the key's name, the
	// token's subject, "anonymous"); never a secret.
	Name string
	// Roles held, the hierarchy expanded.
	Roles Role
	// Anonymous: no credentials; Roles are the open roles.
	Anonymous bool
}

// Has tells whether the principal holds role.
func (p Principal) Has(role Role) bool { return p.Roles&role == role }

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the caller in ctx; an anonymous one without roles
// when there is none.
func FromContext(ctx context.Context) Principal {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	if !ok {
		return Principal{ID: "anonymous", Name: "anonymous", Anonymous: true}
	}
	return p
}

// Require returns nil when the caller in ctx holds role, else
// ErrUnauthenticated (anonymous) or ErrForbidden (known, without the role).
func Require(ctx context.Context, role Role) error {
	p := FromContext(ctx)
	switch {
	case p.Has(role):
		return nil
	case p.Anonymous:
		return fmt.Errorf("%w (this operation needs the %s role)", ErrUnauthenticated, role)
	default:
		return fmt.Errorf("%w (needs the %s role; the caller holds %s)", ErrForbidden, role, p.Roles)
	}
}

// Actor names the caller for audit records.
func Actor(ctx context.Context) string {
	p := FromContext(ctx)
	if p.Anonymous {
		return "anonymous"
	}
	return p.Name
}

// Verifier checks one kind of credential: ok false when the token is not
// of its kind, err when it is but does not verify.
type Verifier interface {
	Verify(ctx context.Context, token string) (p Principal, ok bool, err error)
}

// Options configures an Authenticator. The zero value knows no credential
// and opens no role: every operation is refused.
type Options struct {
	// Verifiers are asked in order (Keys, Static, JWT).
	Verifiers []Verifier
	// Open are the roles of anonymous callers (surge dev: client and
	// analyst, so the README's examples need no key).
	Open Role
}

// Authenticator turns credentials into principals.
type Authenticator struct{ opts Options }

// New returns an authenticator.
func New(opts Options) *Authenticator {
	opts.Open = implied(opts.Open)
	return &Authenticator{opts: opts}
}

// Open returns the roles anonymous callers hold.
func (a *Authenticator) Open() Role { return a.opts.Open }

// Token returns the principal of a presented key or token; "" is the
// anonymous caller (by remoteAddr, host:port or host).
func (a *Authenticator) Token(ctx context.Context, token, remoteAddr string) (Principal, error) {
	if token == "" {
		host, _, err := net.SplitHostPort(remoteAddr)
		if err != nil {
			host = remoteAddr
		}
		return Principal{ID: "addr:" + host, Name: "anonymous", Roles: a.opts.Open, Anonymous: true}, nil
	}
	for _, v := range a.opts.Verifiers {
		p, ok, err := v.Verify(ctx, token)
		if err != nil {
			return Principal{}, fmt.Errorf("%w: %w", ErrInvalidCredentials, err)
		}
		if ok {
			p.Roles = implied(p.Roles)
			return p, nil
		}
	}
	return Principal{}, fmt.Errorf("%w: unknown API key", ErrInvalidCredentials)
}

// RequestToken returns the credential of a request: X-Api-Key, else
// X-Admin-Key, else the bearer token of Authorization.
func RequestToken(h http.Header) string {
	if k := h.Get(APIKeyHeader); k != "" {
		return k
	}
	if k := h.Get(AdminKeyHeader); k != "" {
		return k
	}
	return BearerToken(h.Get("Authorization"))
}

// BearerToken returns the token of an Authorization header value ("" when
// it is not a bearer token).
func BearerToken(authorization string) string {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// Middleware puts the caller into the request's context. A request with
// credentials that do not verify is answered 401 UNAUTHENTICATED; one
// without credentials goes on as the anonymous caller, whose open roles the
// operations check.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Token(r.Context(), RequestToken(r.Header), r.RemoteAddr)
		if err != nil {
			WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// RequireRole refuses a request whose caller (put by Middleware) does not
// hold role: 401 for the anonymous caller, 403 for a known one.
func RequireRole(role Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Require(r.Context(), role); err != nil {
			WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteError answers an authentication error in GraphQL's error shape
// (401 UNAUTHENTICATED or 403 FORBIDDEN), which the event intake's clients
// read as well (errors[0].extensions.code).
func WriteError(w http.ResponseWriter, err error) {
	status, code := http.StatusUnauthorized, "UNAUTHENTICATED"
	if errors.Is(err, ErrForbidden) {
		status, code = http.StatusForbidden, "FORBIDDEN"
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="surge"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{"message": err.Error(), "extensions": map[string]any{"code": code}}},
		"error":  map[string]string{"code": code, "message": err.Error()},
	})
}

// Static are keys given at start (ADMIN_API_KEY, INGEST_API_KEYS), each
// with its roles; compared by SHA-256.
type Static map[[32]byte]Principal

// Add registers a key with its roles under a name.
func (s Static) Add(key, name string, roles Role) {
	h := sha256.Sum256([]byte(key))
	s[h] = Principal{ID: "env:" + hex.EncodeToString(h[:8]), Name: name, Roles: roles}
}

// Verify implements Verifier.
func (s Static) Verify(_ context.Context, token string) (Principal, bool, error) {
	p, ok := s[sha256.Sum256([]byte(token))]
	return p, ok, nil
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

// LoadOrCreateKey reads a key from path, creating the file with a new
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
		return "", false, fmt.Errorf("create key: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("create key: %w", err)
	}
	return key, true, nil
}
