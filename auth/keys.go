package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// KeysChannel is the Redis channel on which a key change is announced, so
// every replica reloads at once.
const KeysChannel = "auth:keys"

// keyPrefix starts every key Keys creates: sk_<id>_<secret>.
const keyPrefix = "sk_"

// Key is a stored API key, without its secret.
type Key struct {
	// ID is the public part of the key (its first characters after sk_):
	// the lookup id, safe to show and log.
	ID string
	// Client owns the key: its rate-limit bucket and the namespace of its
	// event ids. Several keys of one client (a rotation) share both.
	Client string
	// Name describes the key (what it is for).
	Name      string
	Roles     Role
	CreatedAt time.Time
	CreatedBy string
	RevokedAt time.Time // zero while valid
}

// KeysOptions configures Keys. The zero value is ready to use.
type KeysOptions struct {
	// Refresh is how often Run reloads every key (default 30 s), besides
	// the reload at every announcement on KeysChannel.
	Refresh time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

func (o *KeysOptions) defaults() {
	if o.Refresh <= 0 {
		o.Refresh = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Keys is the API key store: keys live in ClickHouse (api_keys, append-only
// versions: the latest per id wins), so they last as long as the rest of
// the system of record; every replica holds them in memory, reloads them
// every Refresh and at once when a change is announced on Redis
// (KeysChannel). Only the SHA-256 of a key's secret is stored; it is shown
// once, when created. Keys implements Verifier.
type Keys struct {
	ch   driver.Conn
	rdb  redis.UniversalClient // nil: no announcements
	db   string
	opts KeysOptions
	snap atomic.Pointer[map[string]storedKey]
	mu   sync.Mutex // serialises reloads

	reloads *prometheus.CounterVec
}

type storedKey struct {
	Key
	hash [32]byte
}

// NewKeys returns the store of database db. Call Load (or Run) before
// verifying keys.
func NewKeys(ch driver.Conn, rdb redis.UniversalClient, db string, opts KeysOptions) *Keys {
	opts.defaults()
	k := &Keys{ch: ch, rdb: rdb, db: db, opts: opts,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_auth_key_reloads_total", Help: "Reloads of the API keys, by result (ok, error).",
		}, []string{"result"})}
	empty := map[string]storedKey{}
	k.snap.Store(&empty)
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(k.reloads)
	}
	return k
}

// Load reads every key from ClickHouse.
func (k *Keys) Load(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	rows, err := k.ch.Query(ctx, `SELECT id, argMax(client, version), argMax(name, version), argMax(roles, version),
		argMax(secret_sha256, version), argMax(created_at, version), argMax(created_by, version), argMax(revoked_at, version)
		FROM `+k.db+`.api_keys GROUP BY id`)
	if err != nil {
		k.reloads.WithLabelValues("error").Inc()
		return fmt.Errorf("auth: load keys: %w", err)
	}
	defer rows.Close()
	next := map[string]storedKey{}
	for rows.Next() {
		var (
			sk           storedKey
			roles        []string
			hash         string
			revoked      time.Time
			created      time.Time
			createdBy    string
			client, name string
		)
		if err := rows.Scan(&sk.ID, &client, &name, &roles, &hash, &created, &createdBy, &revoked); err != nil {
			k.reloads.WithLabelValues("error").Inc()
			return fmt.Errorf("auth: load keys: %w", err)
		}
		r, err := ParseRoles(strings.Join(roles, ","))
		b, herr := hex.DecodeString(hash)
		if err != nil || herr != nil || len(b) != 32 {
			k.opts.Logger.Warn("auth: skipping a stored key that does not parse", "key_id", sk.ID)
			continue
		}
		copy(sk.hash[:], b)
		sk.Client, sk.Name, sk.Roles, sk.CreatedAt, sk.CreatedBy = client, name, r, created, createdBy
		if revoked.Unix() > 0 {
			sk.RevokedAt = revoked
		}
		next[sk.ID] = sk
	}
	if err := rows.Err(); err != nil {
		k.reloads.WithLabelValues("error").Inc()
		return fmt.Errorf("auth: load keys: %w", err)
	}
	k.snap.Store(&next)
	k.reloads.WithLabelValues("ok").Inc()
	return nil
}

// Run reloads the keys every Refresh and whenever a change is announced,
// until ctx ends. A failed reload keeps the last keys and is logged.
func (k *Keys) Run(ctx context.Context) error {
	var changes <-chan *redis.Message
	if k.rdb != nil {
		ps := k.rdb.Subscribe(ctx, KeysChannel)
		defer ps.Close()
		changes = ps.Channel()
	}
	t := time.NewTicker(k.opts.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-changes:
		}
		if err := k.Load(ctx); err != nil && ctx.Err() == nil {
			k.opts.Logger.Warn("auth: reloading API keys failed; the last ones stay in force", "err", err)
		}
	}
}

// Verify implements Verifier: tokens of the form sk_<id>_<secret>.
func (k *Keys) Verify(_ context.Context, token string) (Principal, bool, error) {
	id, ok := keyID(token)
	if !ok {
		return Principal{}, false, nil
	}
	sk, found := (*k.snap.Load())[id]
	h := sha256.Sum256([]byte(token))
	if !found || subtle.ConstantTimeCompare(h[:], sk.hash[:]) != 1 {
		return Principal{}, false, fmt.Errorf("unknown API key %s", id)
	}
	if !sk.RevokedAt.IsZero() {
		return Principal{}, false, fmt.Errorf("API key %s was revoked at %s", id, sk.RevokedAt.Format(time.RFC3339))
	}
	return Principal{ID: "key:" + sk.Client, Name: sk.Name, Roles: sk.Roles}, true, nil
}

func keyID(token string) (string, bool) {
	rest, ok := strings.CutPrefix(token, keyPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "_")
	return id, ok && id != ""
}

// clientRE bounds client names: they appear in metrics-free ids only, but
// stay plain.
var clientRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Create stores a new key and returns it with its secret, which is not
// stored and cannot be shown again.
func (k *Keys) Create(ctx context.Context, client, name string, roles Role, by string) (string, Key, error) {
	if !clientRE.MatchString(client) {
		return "", Key{}, fmt.Errorf("auth: client %q: want 1 to 64 letters, digits, '.', '_' or '-'", client)
	}
	if roles == 0 {
		return "", Key{}, errors.New("auth: a key needs at least one role")
	}
	var raw [4 + 24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", Key{}, err
	}
	id := hex.EncodeToString(raw[:4])
	secret := keyPrefix + id + "_" + hex.EncodeToString(raw[4:])
	key := Key{ID: id, Client: client, Name: name, Roles: roles, CreatedAt: time.Now().UTC().Truncate(time.Second), CreatedBy: by}
	h := sha256.Sum256([]byte(secret))
	if err := k.write(ctx, key, hex.EncodeToString(h[:])); err != nil {
		return "", Key{}, err
	}
	return secret, key, nil
}

// Revoke revokes the key of id (the public part, or the whole key).
func (k *Keys) Revoke(ctx context.Context, id string) (Key, error) {
	if kid, ok := keyID(id); ok {
		id = kid
	}
	if err := k.Load(ctx); err != nil {
		return Key{}, err
	}
	sk, ok := (*k.snap.Load())[id]
	if !ok {
		return Key{}, fmt.Errorf("auth: no API key %q", id)
	}
	if !sk.RevokedAt.IsZero() {
		return sk.Key, nil
	}
	sk.RevokedAt = time.Now().UTC().Truncate(time.Second)
	if err := k.write(ctx, sk.Key, hex.EncodeToString(sk.hash[:])); err != nil {
		return Key{}, err
	}
	return sk.Key, nil
}

// List returns every key, newest first, revoked ones included.
func (k *Keys) List(ctx context.Context) ([]Key, error) {
	if err := k.Load(ctx); err != nil {
		return nil, err
	}
	var out []Key
	for _, sk := range *k.snap.Load() {
		out = append(out, sk.Key)
	}
	slices.SortFunc(out, func(a, b Key) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// write appends a version of a key and announces the change.
func (k *Keys) write(ctx context.Context, key Key, hash string) error {
	revoked := time.Unix(0, 0).UTC()
	if !key.RevokedAt.IsZero() {
		revoked = key.RevokedAt
	}
	batch, err := k.ch.PrepareBatch(ctx, `INSERT INTO `+k.db+`.api_keys (id, version, client, name, roles, secret_sha256, created_at, created_by, revoked_at)`)
	if err == nil {
		err = batch.Append(key.ID, uint64(time.Now().UnixNano()), key.Client, key.Name, key.Roles.Names(), hash, key.CreatedAt, key.CreatedBy, revoked)
		if err == nil {
			err = batch.Send()
		} else {
			_ = batch.Abort()
		}
	}
	if err != nil {
		return fmt.Errorf("auth: store key %s: %w", key.ID, err)
	}
	if err := k.Load(ctx); err != nil {
		return err
	}
	if k.rdb != nil {
		if err := k.rdb.Publish(ctx, KeysChannel, key.ID).Err(); err != nil {
			// The other replicas still reload within Refresh.
			k.opts.Logger.Warn("auth: announcing a key change failed; replicas pick it up at their next refresh", "key_id", key.ID, "err", err)
		}
	}
	return nil
}
