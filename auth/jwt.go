package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2/expirable"
)

// JWTOptions configures bearer-token verification. Issuer and Audience are
// required: a token must name both.
type JWTOptions struct {
	// HS256Secret verifies HS256 tokens; empty: HS256 is refused.
	HS256Secret []byte
	// JWKSFile holds the public keys (a JSON Web Key Set) that verify RS256
	// tokens, chosen by the token's kid; empty: RS256 is refused. It is read
	// again when it changes (size or modification time, looked at most
	// every JWKSReload), so keys rotate without a restart; a file that no
	// longer parses leaves the previous keys in force.
	JWKSFile string
	// JWKSReload is how often a verification may look at JWKSFile for a
	// change (default 10 s). A token verified before a key was removed is
	// remembered for up to a minute more (see JWT).
	JWKSReload time.Duration
	Issuer     string
	Audience   string
	// Leeway is the clock skew allowed on exp, nbf and iat (default 30 s).
	Leeway time.Duration
}

// JWT verifies bearer tokens: signature (HS256 or RS256, never "none"),
// issuer, audience and expiry (required). The subject is the principal;
// roles come from the "roles" claim (an array of role names) or, without
// it, from the space-separated "scope" claim; names it does not know are
// ignored.
//
// A verified token is remembered (by its SHA-256, until it expires, at
// most a minute), so a client sending the same token on every request
// costs one signature check a minute, not one per request.
type JWT struct {
	parser   *jwt.Parser
	keyfunc  jwt.Keyfunc
	verified *lru.LRU[[32]byte, verifiedToken]
}

type verifiedToken struct {
	p       Principal
	expires time.Time
}

// NewJWT returns a verifier, or nil when neither a secret nor a JWKS file
// is configured.
func NewJWT(opts JWTOptions) (*JWT, error) {
	if len(opts.HS256Secret) == 0 && opts.JWKSFile == "" {
		return nil, nil
	}
	if opts.Issuer == "" || opts.Audience == "" {
		return nil, errors.New("auth: JWT verification needs an issuer and an audience")
	}
	if n := len(opts.HS256Secret); n > 0 && n < 32 {
		return nil, fmt.Errorf("auth: the HS256 secret has %d bytes; at least 32 are needed", n)
	}
	if opts.Leeway <= 0 {
		opts.Leeway = 30 * time.Second
	}
	if opts.JWKSReload <= 0 {
		opts.JWKSReload = 10 * time.Second
	}
	var methods []string
	var jwks *jwksFile
	if len(opts.HS256Secret) > 0 {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if opts.JWKSFile != "" {
		jwks = &jwksFile{path: opts.JWKSFile, every: opts.JWKSReload}
		if err := jwks.load(); err != nil {
			return nil, err
		}
		methods = append(methods, jwt.SigningMethodRS256.Alg())
	}
	secret := opts.HS256Secret
	return &JWT{
		verified: lru.NewLRU[[32]byte, verifiedToken](10_000, nil, time.Minute),
		parser: jwt.NewParser(jwt.WithValidMethods(methods), jwt.WithIssuer(opts.Issuer), jwt.WithAudience(opts.Audience),
			jwt.WithLeeway(opts.Leeway), jwt.WithExpirationRequired(), jwt.WithIssuedAt()),
		keyfunc: func(t *jwt.Token) (any, error) {
			if t.Method.Alg() == jwt.SigningMethodHS256.Alg() {
				return secret, nil
			}
			return jwks.keyfunc(t)
		},
	}, nil
}

// jwksFile is a JWKS file and the keys last read from it.
type jwksFile struct {
	path  string
	every time.Duration

	mu      sync.Mutex
	checked time.Time // when the file was last looked at
	mod     time.Time // its modification time and size when read
	size    int64
	keys    keyfunc.Keyfunc
}

// load reads the file.
func (f *jwksFile) load() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("auth: JWKS: %w", err)
	}
	raw, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("auth: JWKS: %w", err)
	}
	keys, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", f.path, err)
	}
	f.keys, f.mod, f.size, f.checked = keys, st.ModTime(), st.Size(), time.Now()
	return nil
}

// keyfunc finds the token's key, reading the file again first when it
// has changed since it was last looked at (at most every f.every).
func (f *jwksFile) keyfunc(t *jwt.Token) (any, error) {
	f.mu.Lock()
	if time.Since(f.checked) >= f.every {
		f.checked = time.Now()
		if st, err := os.Stat(f.path); err == nil && (!st.ModTime().Equal(f.mod) || st.Size() != f.size) {
			if err := f.load(); err != nil {
				slog.Warn("auth: JWKS file changed but cannot be used; the previous keys stay in force", "err", err)
				f.mod, f.size = st.ModTime(), st.Size() // not again until it changes once more
			} else {
				slog.Info("auth: JWKS file reloaded", "path", f.path)
			}
		}
	}
	keys := f.keys
	f.mu.Unlock()
	return keys.Keyfunc(t)
}

type claims struct {
	jwt.RegisteredClaims
	Roles []string `json:"roles"`
	Scope string   `json:"scope"`
}

// Verify implements Verifier: tokens that look like a JWT (three
// dot-separated parts).
func (j *JWT) Verify(_ context.Context, token string) (Principal, bool, error) {
	if strings.Count(token, ".") != 2 {
		return Principal{}, false, nil
	}
	sum := sha256.Sum256([]byte(token))
	if v, ok := j.verified.Get(sum); ok && time.Now().Before(v.expires) {
		return v.p, true, nil
	}
	var c claims
	if _, err := j.parser.ParseWithClaims(token, &c, j.keyfunc); err != nil {
		return Principal{}, false, fmt.Errorf("bearer token: %w", err)
	}
	if c.Subject == "" {
		return Principal{}, false, errors.New("bearer token: no subject (sub)")
	}
	names := c.Roles
	if names == nil {
		names = strings.Fields(c.Scope)
	}
	var roles Role
	for _, n := range names {
		if r, err := ParseRoles(n); err == nil {
			roles |= r
		}
	}
	p := Principal{ID: "jwt:" + c.Subject, Name: c.Subject, Roles: roles}
	j.verified.Add(sum, verifiedToken{p: p, expires: c.ExpiresAt.Time}) // exp is required
	return p, true, nil
}
