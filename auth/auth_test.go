package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestRoles(t *testing.T) {
	for _, c := range []struct {
		in      string
		holds   []auth.Role
		lacks   []auth.Role
		wantErr bool
	}{
		{in: "client", holds: []auth.Role{auth.RoleClient}, lacks: []auth.Role{auth.RoleAnalyst, auth.RoleIngest}},
		{in: "analyst", holds: []auth.Role{auth.RoleClient, auth.RoleAnalyst}, lacks: []auth.Role{auth.RoleAdmin, auth.RoleIngest}},
		{in: "supply", holds: []auth.Role{auth.RoleIngest, auth.RoleSupply}, lacks: []auth.Role{auth.RoleClient}},
		{in: "ingest", holds: []auth.Role{auth.RoleIngest}, lacks: []auth.Role{auth.RoleSupply}},
		{in: "admin", holds: []auth.Role{auth.RoleClient, auth.RoleIngest, auth.RoleSupply, auth.RoleAnalyst, auth.RoleAdmin}},
		{in: " Client , ingest ", holds: []auth.Role{auth.RoleClient, auth.RoleIngest}, lacks: []auth.Role{auth.RoleAnalyst}},
		{in: "", lacks: []auth.Role{auth.RoleClient}},
		{in: "root", wantErr: true},
	} {
		r, err := auth.ParseRoles(c.in)
		if (err != nil) != c.wantErr {
			t.Fatalf("ParseRoles(%q): %v", c.in, err)
		}
		a := auth.New(auth.Options{Open: r})
		p, _ := a.Token(context.Background(), "", "10.0.0.1:4000")
		for _, h := range c.holds {
			if !p.Has(h) {
				t.Errorf("%q: lacks %s", c.in, h)
			}
		}
		for _, l := range c.lacks {
			if p.Has(l) {
				t.Errorf("%q: holds %s", c.in, l)
			}
		}
		if p.ID != "addr:10.0.0.1" || !p.Anonymous {
			t.Errorf("anonymous principal %+v", p)
		}
	}
}

func TestRequire(t *testing.T) {
	ctx := context.Background()
	anon := auth.WithPrincipal(ctx, auth.Principal{ID: "addr:x", Anonymous: true})
	client := auth.WithPrincipal(ctx, auth.Principal{ID: "key:app", Roles: auth.RoleClient})
	for _, c := range []struct {
		name string
		ctx  context.Context
		role auth.Role
		want error
	}{
		{"no principal", ctx, auth.RoleClient, auth.ErrUnauthenticated},
		{"anonymous", anon, auth.RoleClient, auth.ErrUnauthenticated},
		{"holds it", client, auth.RoleClient, nil},
		{"lacks it", client, auth.RoleAdmin, auth.ErrForbidden},
	} {
		if err := auth.Require(c.ctx, c.role); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestMiddleware: a bad credential is 401 before anything runs; none is
// the anonymous caller; RequireRole answers 401 or 403.
func TestMiddleware(t *testing.T) {
	static := auth.Static{}
	static.Add("app-key", "app", auth.RoleClient)
	a := auth.New(auth.Options{Verifiers: []auth.Verifier{static}})
	h := a.Middleware(auth.RequireRole(auth.RoleClient, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(auth.FromContext(r.Context()).Name))
	})))
	admin := a.Middleware(auth.RequireRole(auth.RoleAdmin, http.NotFoundHandler()))
	for _, c := range []struct {
		name   string
		h      http.Handler
		header map[string]string
		status int
		code   string
	}{
		{"api key header", h, map[string]string{"X-Api-Key": "app-key"}, 200, ""},
		{"bearer", h, map[string]string{"Authorization": "Bearer app-key"}, 200, ""},
		{"bearer any case", h, map[string]string{"Authorization": "bearer app-key"}, 200, ""},
		{"unknown key", h, map[string]string{"X-Api-Key": "nope"}, 401, "UNAUTHENTICATED"},
		{"no key", h, nil, 401, "UNAUTHENTICATED"},
		{"without the role", admin, map[string]string{"X-Api-Key": "app-key"}, 403, "FORBIDDEN"},
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, req)
		if rec.Code != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, rec.Code, rec.Body, c.status)
			continue
		}
		if c.code == "" {
			if rec.Body.String() != "app" {
				t.Errorf("%s: principal %q", c.name, rec.Body)
			}
			continue
		}
		var body struct {
			Errors []struct{ Extensions struct{ Code string } }
			Error  struct{ Code string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 ||
			body.Errors[0].Extensions.Code != c.code || body.Error.Code != c.code {
			t.Errorf("%s: body %s, want code %s", c.name, rec.Body, c.code)
		}
		if strings.Contains(rec.Body.String(), "app-key") {
			t.Errorf("%s: the answer repeats the key: %s", c.name, rec.Body)
		}
	}
}

// TestJWT: HS256 and RS256 (JWKS file, by kid) tokens with the right
// issuer, audience and expiry verify; everything else is refused.
func TestJWT(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks := map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(rsaKey.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(rsaKey.E)).Bytes()),
	}}}
	b, _ := json.Marshal(jwks)
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewJWT(auth.JWTOptions{HS256Secret: secret, JWKSFile: file, Issuer: "https://id.example", Audience: "surge", Leeway: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(auth.Options{Verifiers: []auth.Verifier{v}})
	now := time.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": "https://id.example", "aud": "surge", "sub": "dash-1", "exp": now.Add(time.Hour).Unix(),
			"iat": now.Unix(), "roles": []string{"analyst"}}
	}
	hs := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rs := func(c jwt.MapClaims, kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(rsaKey)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for _, c := range []struct {
		name  string
		token string
		roles auth.Role // 0: refused
	}{
		{"HS256", hs(good()), auth.RoleAnalyst},
		{"RS256 by kid", rs(good(), "k1"), auth.RoleAnalyst},
		{"scope claim", hs(with("roles", nil)), 0},
		{"scope claim with roles", hs(func() jwt.MapClaims { c := with("roles", nil); c["scope"] = "openid client"; return c }()), auth.RoleClient},
		{"expired past the leeway", hs(with("exp", now.Add(-2*time.Minute).Unix())), 0},
		{"expired within the leeway", hs(with("exp", now.Add(-30*time.Second).Unix())), auth.RoleAnalyst},
		{"no expiry", hs(with("exp", nil)), 0},
		{"wrong issuer", hs(with("iss", "https://evil.example")), 0},
		{"wrong audience", hs(with("aud", "other")), 0},
		{"no subject", hs(with("sub", nil)), 0},
		{"unknown kid", rs(good(), "k2"), 0},
		{"alg none", none, 0},
		{"tampered", hs(good())[:20] + "x" + hs(good())[21:], 0},
	} {
		p, err := a.Token(context.Background(), c.token, "")
		if c.name == "scope claim" {
			// A token without roles verifies and holds none.
			if err != nil || p.Roles != 0 {
				t.Errorf("%s: %+v %v, want no roles", c.name, p, err)
			}
			continue
		}
		if c.roles == 0 {
			if !errors.Is(err, auth.ErrInvalidCredentials) {
				t.Errorf("%s: %+v %v, want refused", c.name, p, err)
			}
			continue
		}
		if err != nil || !p.Has(c.roles) || p.ID != "jwt:dash-1" || p.Has(auth.RoleAdmin) {
			t.Errorf("%s: %+v %v, want jwt:dash-1 with %s", c.name, p, err, c.roles)
		}
	}
	for _, bad := range []auth.JWTOptions{
		{HS256Secret: secret, Audience: "surge"},
		{HS256Secret: secret, Issuer: "i"},
		{HS256Secret: []byte("short"), Issuer: "i", Audience: "a"},
		{JWKSFile: filepath.Join(t.TempDir(), "missing.json"), Issuer: "i", Audience: "a"},
	} {
		if _, err := auth.NewJWT(bad); err == nil {
			t.Errorf("NewJWT(%+v) accepted", bad)
		}
	}
	if v, err := auth.NewJWT(auth.JWTOptions{}); v != nil || err != nil {
		t.Errorf("NewJWT without keys: %v %v, want nil", v, err)
	}
}

// TestKeys: keys created on one replica verify on another at once (the
// announcement on Redis), revoking them too; only the hash is stored.
func TestKeys(t *testing.T) {
	ctx := context.Background()
	conn, _, db := chtest.Migrated(t)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr})
	t.Cleanup(func() { rdb.Close() })
	one := auth.NewKeys(conn, rdb, db, auth.KeysOptions{Refresh: time.Hour})
	two := auth.NewKeys(conn, rdb, db, auth.KeysOptions{Refresh: time.Hour})
	for _, k := range []*auth.Keys{one, two} {
		if err := k.Load(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = two.Run(rctx) }()
	// Run subscribes asynchronously: wait until Redis counts the subscriber.
	waitFor(t, "replica subscribed", func() bool {
		n, _ := rdb.PubSubNumSub(ctx, auth.KeysChannel).Result()
		return n[auth.KeysChannel] == 1
	})

	secret, key, err := one.Create(ctx, "acme", "acme backend", auth.RoleSupply, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "sk_"+key.ID+"_") {
		t.Fatalf("key %q does not start with its id %s", secret, key.ID)
	}
	a := auth.New(auth.Options{Verifiers: []auth.Verifier{two}})
	waitFor(t, "the other replica knows the new key", func() bool {
		_, err := a.Token(ctx, secret, "")
		return err == nil
	})
	p, _ := a.Token(ctx, secret, "")
	if p.ID != "key:acme" || p.Name != "acme backend" || !p.Has(auth.RoleSupply) || p.Has(auth.RoleClient) {
		t.Errorf("principal %+v", p)
	}
	wrong := secret[:len(secret)-1] + "0"
	if secret[len(secret)-1] == '0' {
		wrong = secret[:len(secret)-1] + "1"
	}
	if _, err := a.Token(ctx, wrong, ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Errorf("a wrong secret with the right id: %v", err)
	}
	var stored uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".api_keys WHERE position(secret_sha256, ?) > 0 OR position(name, ?) > 0",
		secret, secret).Scan(&stored); err != nil || stored != 0 {
		t.Errorf("the secret is stored in clear: %d %v", stored, err)
	}

	if _, err := one.Revoke(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other replica refuses the revoked key", func() bool {
		_, err := a.Token(ctx, secret, "")
		return errors.Is(err, auth.ErrInvalidCredentials)
	})
	list, err := one.List(ctx)
	if err != nil || len(list) != 1 || list[0].RevokedAt.IsZero() || list[0].Client != "acme" {
		t.Errorf("list %+v %v", list, err)
	}
	for _, c := range []struct {
		client string
		roles  auth.Role
	}{{"", auth.RoleClient}, {"has space", auth.RoleClient}, {"ok", 0}} {
		if _, _, err := one.Create(ctx, c.client, "", c.roles, "test"); err == nil {
			t.Errorf("Create(%q, %s) accepted", c.client, c.roles)
		}
	}
	if _, err := one.Revoke(ctx, "nosuch"); err == nil {
		t.Error("revoking an unknown key succeeded")
	}
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestJWTKeyRotation rotates the keys of a JWKS file under a running
// verifier: a token of the new key is accepted and one of the removed key
// refused, without a restart; a file that no longer parses leaves the last
// keys in force.
func TestJWTKeyRotation(t *testing.T) {
	key := func(kid string) (*rsa.PrivateKey, map[string]any) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k, map[string]any{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
	}
	k1, j1 := key("k1")
	k2, j2 := key("k2")
	file := filepath.Join(t.TempDir(), "jwks.json")
	version := time.Now()
	write := func(content []byte) {
		if err := os.WriteFile(file, content, 0o600); err != nil {
			t.Fatal(err)
		}
		// A later modification time even where the file system's clock is
		// coarser than the writes.
		version = version.Add(time.Second)
		if err := os.Chtimes(file, version, version); err != nil {
			t.Fatal(err)
		}
	}
	set := func(keys ...map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"keys": keys})
		return b
	}
	write(set(j1))
	v, err := auth.NewJWT(auth.JWTOptions{JWKSFile: file, JWKSReload: time.Millisecond, Issuer: "iss", Audience: "aud"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	token := func(k *rsa.PrivateKey, kid string) string { // a new token each time: none is remembered
		n++
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "iss", "aud": "aud", "sub": "s" + strconv.Itoa(n),
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	accepted := func(k *rsa.PrivateKey, kid string) bool {
		_, ok, err := v.Verify(context.Background(), token(k, kid))
		return ok && err == nil
	}
	if !accepted(k1, "k1") || accepted(k2, "k2") {
		t.Fatal("before the rotation: want k1 accepted, k2 refused")
	}
	write(set(j2))
	waitFor(t, "a token of the new key k2 accepted", func() bool { return accepted(k2, "k2") })
	if accepted(k1, "k1") {
		t.Error("a token of the removed key k1 is still accepted")
	}
	write([]byte("{not json"))
	time.Sleep(5 * time.Millisecond) // past JWKSReload: the next verification looks at the broken file
	for range 3 {
		if !accepted(k2, "k2") {
			t.Fatal("a file that does not parse dropped the keys in force")
		}
	}
	write(set(j1))
	waitFor(t, "k1 accepted again once the file is fixed", func() bool { return accepted(k1, "k1") })
}
