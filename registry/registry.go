// Package registry is the model registry: immutable model versions (v1, v2,
// …) recorded in ClickHouse with their metrics, training window and the
// SHA-256 of an artifact kept in an ArtifactStore, plus a status history
// (candidate, active, retired, rejected).
//
// Storage: table models holds one row per version, written once; its status
// column is the status at registration. Every status change, including the
// initial one, is appended to model_status; a version's current status is
// its latest model_status row. Nothing is updated in place, so the full
// history stays queryable (StatusHistory).
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Status is the lifecycle state of a model version.
type Status string

// Statuses. Exactly one version per name is meant to be active: making a
// version active retires the previously active ones.
const (
	StatusCandidate Status = "candidate"
	StatusActive    Status = "active"
	StatusRetired   Status = "retired"
	StatusRejected  Status = "rejected"
)

// Valid reports whether s is one of the four statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusCandidate, StatusActive, StatusRetired, StatusRejected:
		return true
	}
	return false
}

var (
	// ErrNotFound is returned when no model version matches.
	ErrNotFound = errors.New("registry: not found")
	// ErrCorruptArtifact is returned by Load when the artifact's SHA-256
	// differs from the registered one.
	ErrCorruptArtifact = errors.New("registry: corrupt artifact")
)

// Entry is one registered model version; its fields mirror table models.
type Entry struct {
	Name       string
	Version    string // "v1", "v2", …
	VersionNum uint32 // 1, 2, …
	// HorizonMinutes is the forecast horizon the model was trained for;
	// 0 means the horizon is an input feature.
	HorizonMinutes    uint32
	SchemaHash        string // features.Schema.Hash of the training schema
	ArtifactURI       string
	SHA256            string // hex, of the artifact
	Metrics           map[string]float64
	Params            json.RawMessage // trainer parameters, a JSON object
	FeatureImportance map[string]float64
	TrainFrom         time.Time
	TrainTo           time.Time
	Status            Status
	StatusChangedAt   time.Time
	CreatedAt         time.Time
}

// StatusChange is one row of a version's status history.
type StatusChange struct {
	Status    Status
	ChangedAt time.Time
}

// Registry records model versions in ClickHouse (tables models and
// model_status of the connection's default database) and their artifacts in
// an ArtifactStore. It is safe for concurrent use; registrations within a
// process are serialised so that version numbers are consecutive (across
// processes, the artifact store refuses a second, different artifact for the
// same version).
type Registry struct {
	conn  driver.Conn
	store ArtifactStore
	mu    sync.Mutex
	now   func() time.Time
}

// New returns a Registry.
func New(conn driver.Conn, store ArtifactStore) *Registry {
	return &Registry{conn: conn, store: store, now: time.Now}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkName(s string) error {
	if !nameRE.MatchString(s) || strings.Contains(s, "..") {
		return fmt.Errorf("registry: invalid name %q: letters, digits, '.', '_', '-', up to 128", s)
	}
	return nil
}

// ParseVersion turns "v7" into 7.
func ParseVersion(v string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "v"), 10, 32)
	if err != nil || !strings.HasPrefix(v, "v") || n == 0 {
		return 0, fmt.Errorf("registry: invalid version %q: want v1, v2, …", v)
	}
	return uint32(n), nil
}

// Register stores artifact and records e as the next version of e.Name
// (Version, VersionNum, ArtifactURI, SHA256, CreatedAt are assigned; what e
// holds there is ignored). e.Status may be candidate (the default when
// empty) or active; registering an active version retires the previously
// active ones. It returns the entry as recorded.
func (r *Registry) Register(ctx context.Context, e Entry, artifact []byte) (Entry, error) {
	if err := checkName(e.Name); err != nil {
		return Entry{}, err
	}
	if e.Status == "" {
		e.Status = StatusCandidate
	}
	if e.Status != StatusCandidate && e.Status != StatusActive {
		return Entry{}, fmt.Errorf("registry: register %s: status must be candidate or active, not %q", e.Name, e.Status)
	}
	if len(artifact) == 0 {
		return Entry{}, fmt.Errorf("registry: register %s: empty artifact", e.Name)
	}
	metrics, err := marshalObject(e.Metrics)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: register %s: metrics: %w", e.Name, err)
	}
	importance, err := marshalObject(e.FeatureImportance)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: register %s: feature importance: %w", e.Name, err)
	}
	params := "{}"
	if len(e.Params) > 0 {
		var obj map[string]any
		if err := json.Unmarshal(e.Params, &obj); err != nil {
			return Entry{}, fmt.Errorf("registry: register %s: params must be a JSON object: %w", e.Name, err)
		}
		params = string(e.Params)
	}
	sum := sha256.Sum256(artifact)
	e.SHA256 = hex.EncodeToString(sum[:])
	e.TrainFrom, e.TrainTo = e.TrainFrom.UTC().Truncate(time.Second), e.TrainTo.UTC().Truncate(time.Second)

	r.mu.Lock()
	defer r.mu.Unlock()
	var last uint32
	if err := r.conn.QueryRow(ctx, `SELECT max(version_num) FROM models WHERE name = ?`, e.Name).Scan(&last); err != nil {
		return Entry{}, fmt.Errorf("registry: last version of %s: %w", e.Name, err)
	}
	e.VersionNum = last + 1
	e.Version = "v" + strconv.FormatUint(uint64(e.VersionNum), 10)
	if e.ArtifactURI, err = r.store.Put(ctx, e.Name, e.Version, artifact); err != nil {
		return Entry{}, fmt.Errorf("registry: register %s %s: %w", e.Name, e.Version, err)
	}
	now := r.now().UTC()
	e.CreatedAt = now.Truncate(time.Second)
	e.StatusChangedAt = e.CreatedAt
	batch, err := r.conn.PrepareBatch(ctx, `INSERT INTO models (name, version, version_num, horizon_minutes,
		schema_hash, artifact_uri, sha256, metrics, params, feature_importance,
		train_from, train_to, status, created_at)`)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: prepare insert: %w", err)
	}
	if err := batch.Append(e.Name, e.Version, e.VersionNum, e.HorizonMinutes, e.SchemaHash, e.ArtifactURI,
		e.SHA256, metrics, params, importance, e.TrainFrom, e.TrainTo, string(e.Status), e.CreatedAt); err != nil {
		_ = batch.Abort()
		return Entry{}, fmt.Errorf("registry: append model row: %w", err)
	}
	if err := batch.Send(); err != nil {
		return Entry{}, fmt.Errorf("registry: insert %s %s: %w", e.Name, e.Version, err)
	}
	if err := r.setStatusLocked(ctx, e.Name, e.VersionNum, e.Status, now); err != nil {
		return Entry{}, err
	}
	e.Params = json.RawMessage(params)
	return e, nil
}

func marshalObject(m map[string]float64) (string, error) {
	if m == nil {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// SetStatus records a status change of a version. Making a version active
// retires the other active versions of the name. Unknown versions give
// ErrNotFound.
func (r *Registry) SetStatus(ctx context.Context, name, version string, status Status) error {
	if !status.Valid() {
		return fmt.Errorf("registry: invalid status %q", status)
	}
	n, err := ParseVersion(version)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var count uint64
	if err := r.conn.QueryRow(ctx, `SELECT count() FROM models WHERE name = ? AND version_num = ?`, name, n).Scan(&count); err != nil {
		return fmt.Errorf("registry: look up %s %s: %w", name, version, err)
	}
	if count == 0 {
		return fmt.Errorf("%w: %s %s", ErrNotFound, name, version)
	}
	return r.setStatusLocked(ctx, name, n, status, r.now().UTC())
}

// setStatusLocked appends the status row and, for active, the retirement
// of the other active versions, as one insert block.
func (r *Registry) setStatusLocked(ctx context.Context, name string, n uint32, status Status, now time.Time) error {
	type change struct {
		num    uint32
		status Status
	}
	changes := []change{{n, status}}
	if status == StatusActive {
		entries, err := r.list(ctx, name)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Status == StatusActive && e.VersionNum != n {
				changes = append(changes, change{e.VersionNum, StatusRetired})
			}
		}
	}
	batch, err := r.conn.PrepareBatch(ctx, `INSERT INTO model_status (name, version_num, status, changed_at, seq)`)
	if err != nil {
		return fmt.Errorf("registry: prepare status insert: %w", err)
	}
	for _, c := range changes {
		if err := batch.Append(name, c.num, string(c.status), now.Truncate(time.Second), uint64(now.UnixNano())); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("registry: append status row: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("registry: set status of %s v%d: %w", name, n, err)
	}
	return nil
}

// List returns the versions of a model (every model when name is empty) with
// their current status, ordered by name and version.
func (r *Registry) List(ctx context.Context, name string) ([]Entry, error) {
	return r.list(ctx, name)
}

// Active returns the active version of a model (the highest, should several
// be active), or an error wrapping ErrNotFound.
func (r *Registry) Active(ctx context.Context, name string) (Entry, error) {
	entries, err := r.list(ctx, name)
	if err != nil {
		return Entry{}, err
	}
	for _, e := range slices.Backward(entries) {
		if e.Status == StatusActive {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("%w: no active version of model %q", ErrNotFound, name)
}

// Get returns one version of a model, or an error wrapping ErrNotFound.
func (r *Registry) Get(ctx context.Context, name, version string) (Entry, error) {
	n, err := ParseVersion(version)
	if err != nil {
		return Entry{}, err
	}
	entries, err := r.list(ctx, name)
	if err != nil {
		return Entry{}, err
	}
	for _, e := range entries {
		if e.VersionNum == n {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("%w: %s %s", ErrNotFound, name, version)
}

// StatusHistory returns every status a version has had, oldest first.
func (r *Registry) StatusHistory(ctx context.Context, name, version string) ([]StatusChange, error) {
	n, err := ParseVersion(version)
	if err != nil {
		return nil, err
	}
	rows, err := r.conn.Query(ctx, `SELECT status, changed_at FROM model_status
		WHERE name = ? AND version_num = ? ORDER BY seq`, name, n)
	if err != nil {
		return nil, fmt.Errorf("registry: status history of %s %s: %w", name, version, err)
	}
	defer rows.Close()
	var out []StatusChange
	for rows.Next() {
		var s string
		var c StatusChange
		if err := rows.Scan(&s, &c.ChangedAt); err != nil {
			return nil, fmt.Errorf("registry: scan status history: %w", err)
		}
		c.Status, c.ChangedAt = Status(s), c.ChangedAt.UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: read status history: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s %s", ErrNotFound, name, version)
	}
	return out, nil
}

func (r *Registry) list(ctx context.Context, name string) ([]Entry, error) {
	where, args := "", []any(nil)
	if name != "" {
		where, args = " WHERE name = ?", []any{name}
	}
	rows, err := r.conn.Query(ctx, `SELECT name, version, version_num, horizon_minutes, schema_hash,
		artifact_uri, sha256, metrics, params, feature_importance, train_from, train_to,
		status, created_at
		FROM models`+where+` ORDER BY name, version_num`, args...)
	if err != nil {
		return nil, fmt.Errorf("registry: list models: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var (
			e                           Entry
			metrics, params, importance string
			status                      string
		)
		if err := rows.Scan(&e.Name, &e.Version, &e.VersionNum, &e.HorizonMinutes, &e.SchemaHash,
			&e.ArtifactURI, &e.SHA256, &metrics, &params, &importance, &e.TrainFrom, &e.TrainTo,
			&status, &e.CreatedAt); err != nil {
			return nil, fmt.Errorf("registry: scan model: %w", err)
		}
		if err := json.Unmarshal([]byte(metrics), &e.Metrics); err != nil {
			return nil, fmt.Errorf("registry: %s %s metrics: %w", e.Name, e.Version, err)
		}
		if err := json.Unmarshal([]byte(importance), &e.FeatureImportance); err != nil {
			return nil, fmt.Errorf("registry: %s %s feature importance: %w", e.Name, e.Version, err)
		}
		e.Params = json.RawMessage(params)
		e.Status, e.StatusChangedAt = Status(status), e.CreatedAt.UTC()
		e.TrainFrom, e.TrainTo, e.CreatedAt = e.TrainFrom.UTC(), e.TrainTo.UTC(), e.CreatedAt.UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: list models: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}

	// Current statuses: the latest change of each version.
	rows2, err := r.conn.Query(ctx, `SELECT name, version_num, argMax(status, seq), max(changed_at)
		FROM model_status`+where+` GROUP BY name, version_num`, args...)
	if err != nil {
		return nil, fmt.Errorf("registry: current statuses: %w", err)
	}
	defer rows2.Close()
	type vkey struct {
		name string
		num  uint32
	}
	idx := make(map[vkey]int, len(out))
	for i, e := range out {
		idx[vkey{e.Name, e.VersionNum}] = i
	}
	for rows2.Next() {
		var (
			k       vkey
			status  string
			changed time.Time
		)
		if err := rows2.Scan(&k.name, &k.num, &status, &changed); err != nil {
			return nil, fmt.Errorf("registry: scan status: %w", err)
		}
		if i, ok := idx[k]; ok {
			out[i].Status, out[i].StatusChangedAt = Status(status), changed.UTC()
		}
	}
	if err := rows2.Err(); err != nil {
		return nil, fmt.Errorf("registry: current statuses: %w", err)
	}
	return out, nil
}

// Load returns the artifact of e after checking its SHA-256 against
// e.SHA256; a mismatch is an error wrapping ErrCorruptArtifact.
func (r *Registry) Load(ctx context.Context, e Entry) ([]byte, error) {
	data, err := r.store.Get(ctx, e.ArtifactURI)
	if err != nil {
		return nil, fmt.Errorf("registry: load %s %s: %w", e.Name, e.Version, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != e.SHA256 {
		return nil, fmt.Errorf("%w: %s %s (%s) has sha256 %s, registered %s", ErrCorruptArtifact, e.Name, e.Version, e.ArtifactURI, got, e.SHA256)
	}
	return data, nil
}
