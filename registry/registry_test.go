package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newRegistry(t *testing.T) (*Registry, *LocalStore) {
	t.Helper()
	conn, _, _ := chtest.Migrated(t)
	store, err := NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(conn, store), store
}

func statuses(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Version+"="+string(e.Status))
	}
	return out
}

func TestRegisterActiveList(t *testing.T) {
	ctx := ctxT(t)
	reg, _ := newRegistry(t)

	if _, err := reg.Active(ctx, "demand"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Active of an empty registry = %v, want ErrNotFound", err)
	}
	from := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	in := Entry{
		Name:              "demand",
		HorizonMinutes:    15,
		SchemaHash:        "abc123",
		Metrics:           map[string]float64{"mape": 0.12, "rmse": 3.5},
		Params:            json.RawMessage(`{"trees":100,"depth":6,"objective":"l2"}`),
		FeatureImportance: map[string]float64{"searches_5m": 0.4, "supply": 0.1},
		TrainFrom:         from,
		TrainTo:           from.Add(28 * 24 * time.Hour),
	}
	v1, err := reg.Register(ctx, in, []byte("model one"))
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version != "v1" || v1.VersionNum != 1 || v1.Status != StatusCandidate || v1.SHA256 == "" || v1.ArtifactURI == "" {
		t.Fatalf("first registration = %+v", v1)
	}
	active := in
	active.Status = StatusActive
	v2, err := reg.Register(ctx, active, []byte("model two"))
	if err != nil {
		t.Fatal(err)
	}
	v3, err := reg.Register(ctx, in, []byte("model three"))
	if err != nil {
		t.Fatal(err)
	}
	if v2.Version != "v2" || v3.Version != "v3" {
		t.Fatalf("versions %s, %s; want v2, v3", v2.Version, v3.Version)
	}
	// Another model's versions count on their own.
	if other, err := reg.Register(ctx, Entry{Name: "demand-60m", HorizonMinutes: 60}, []byte("x")); err != nil || other.Version != "v1" {
		t.Fatalf("other model = %+v, %v", other, err)
	}

	got, err := reg.Active(ctx, "demand")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != "v2" {
		t.Fatalf("Active = %s, want v2", got.Version)
	}
	// Every field survives the round trip.
	if got.Name != in.Name || got.HorizonMinutes != 15 || got.SchemaHash != "abc123" ||
		got.Metrics["mape"] != 0.12 || got.Metrics["rmse"] != 3.5 || len(got.Metrics) != 2 ||
		got.FeatureImportance["searches_5m"] != 0.4 || len(got.FeatureImportance) != 2 ||
		!got.TrainFrom.Equal(in.TrainFrom) || !got.TrainTo.Equal(in.TrainTo) ||
		got.SHA256 != v2.SHA256 || got.ArtifactURI != v2.ArtifactURI || got.CreatedAt.IsZero() {
		t.Fatalf("Active = %+v, registered %+v", got, v2)
	}
	var params map[string]any
	if err := json.Unmarshal(got.Params, &params); err != nil || params["trees"] != 100.0 || params["objective"] != "l2" {
		t.Fatalf("params = %s (%v)", got.Params, err)
	}

	// Promoting v3 retires v2; rejecting v1 is recorded.
	if err := reg.SetStatus(ctx, "demand", "v3", StatusActive); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetStatus(ctx, "demand", "v1", StatusRejected); err != nil {
		t.Fatal(err)
	}
	list, err := reg.List(ctx, "demand")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statuses(list), []string{"v1=rejected", "v2=retired", "v3=active"}; !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	if a, err := reg.Active(ctx, "demand"); err != nil || a.Version != "v3" {
		t.Fatalf("Active = %s, %v; want v3", a.Version, err)
	}
	all, err := reg.List(ctx, "")
	if err != nil || len(all) != 4 {
		t.Fatalf("List(all) = %v, %v; want 4 entries", statuses(all), err)
	}

	// History keeps every change.
	hist, err := reg.StatusHistory(ctx, "demand", "v2")
	if err != nil {
		t.Fatal(err)
	}
	var seq []Status
	for _, h := range hist {
		seq = append(seq, h.Status)
	}
	if !slices.Equal(seq, []Status{StatusActive, StatusRetired}) {
		t.Fatalf("v2 history = %v", seq)
	}
	// Re-activating an old version works and retires the current one.
	if err := reg.SetStatus(ctx, "demand", "v2", StatusActive); err != nil {
		t.Fatal(err)
	}
	if a, err := reg.Active(ctx, "demand"); err != nil || a.Version != "v2" {
		t.Fatalf("Active after rollback = %s, %v; want v2", a.Version, err)
	}

	for _, tc := range []struct {
		name, version string
		status        Status
		want          error
	}{
		{"demand", "v9", StatusActive, ErrNotFound},
		{"nope", "v1", StatusActive, ErrNotFound},
		{"demand", "v1", "deployed", nil},
		{"demand", "1", StatusActive, nil},
	} {
		err := reg.SetStatus(ctx, tc.name, tc.version, tc.status)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("SetStatus(%s, %s, %s) = %v, want error %v", tc.name, tc.version, tc.status, err, tc.want)
		}
	}
	if _, err := reg.Get(ctx, "demand", "v7"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing version = %v", err)
	}
}

func TestRegisterRejects(t *testing.T) {
	ctx := ctxT(t)
	reg, _ := newRegistry(t)
	for _, tc := range []struct {
		name     string
		e        Entry
		artifact []byte
	}{
		{"bad name", Entry{Name: "../etc"}, []byte("x")},
		{"empty name", Entry{}, []byte("x")},
		{"retired at birth", Entry{Name: "m", Status: StatusRetired}, []byte("x")},
		{"empty artifact", Entry{Name: "m"}, nil},
		{"params not an object", Entry{Name: "m", Params: json.RawMessage(`[1]`)}, []byte("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e, err := reg.Register(ctx, tc.e, tc.artifact); err == nil {
				t.Fatalf("registered %+v", e)
			}
		})
	}
	if list, err := reg.List(ctx, ""); err != nil || len(list) != 0 {
		t.Fatalf("rejected registrations left %v (%v)", statuses(list), err)
	}
}

func TestLoadVerifiesArtifact(t *testing.T) {
	ctx := ctxT(t)
	reg, store := newRegistry(t)
	artifact := bytes.Repeat([]byte{0x08, 0x01, 0x12}, 1000)
	e, err := reg.Register(ctx, Entry{Name: "demand", Status: StatusActive}, artifact)
	if err != nil {
		t.Fatal(err)
	}
	got, err := reg.Load(ctx, e)
	if err != nil || !bytes.Equal(got, artifact) {
		t.Fatalf("Load = %d bytes, %v", len(got), err)
	}

	// Someone rewrites the file behind the registry's back.
	path := filepath.Join(store.Dir(), "demand", "v1.bin")
	if err := os.WriteFile(path, append(artifact[:len(artifact)-1], 0xff), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Load(ctx, e); !errors.Is(err, ErrCorruptArtifact) {
		t.Fatalf("Load of a modified artifact = %v, want ErrCorruptArtifact", err)
	}
	// A tampered entry is caught the same way.
	if err := os.WriteFile(path, artifact, 0o644); err != nil {
		t.Fatal(err)
	}
	forged := e
	forged.SHA256 = "00" + e.SHA256[2:]
	if _, err := reg.Load(ctx, forged); !errors.Is(err, ErrCorruptArtifact) {
		t.Fatalf("Load with a wrong sha256 = %v, want ErrCorruptArtifact", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Load(ctx, e); err == nil || errors.Is(err, ErrCorruptArtifact) {
		t.Fatalf("Load of a missing artifact = %v, want a read error", err)
	}
}

func TestLocalStore(t *testing.T) {
	ctx := ctxT(t)
	s, err := NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	uri, err := s.Put(ctx, "demand", "v1", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if uri != "local:demand/v1.bin" {
		t.Fatalf("uri = %q", uri)
	}
	// Same bytes again: idempotent. Other bytes: refused, original kept.
	if again, err := s.Put(ctx, "demand", "v1", []byte("one")); err != nil || again != uri {
		t.Fatalf("identical re-put = %q, %v", again, err)
	}
	if _, err := s.Put(ctx, "demand", "v1", []byte("two")); !errors.Is(err, ErrArtifactExists) {
		t.Fatalf("overwrite = %v, want ErrArtifactExists", err)
	}
	if got, err := s.Get(ctx, uri); err != nil || string(got) != "one" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	// A store opened elsewhere on the same directory resolves the URI.
	s2, err := NewLocalStore(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Get(ctx, uri); err != nil || string(got) != "one" {
		t.Fatalf("Get via a second store = %q, %v", got, err)
	}
	for _, bad := range []string{"local:../etc/passwd", "local:/etc/passwd", "file:///etc/passwd", "local:", "s3://b/k"} {
		if _, err := s.Get(ctx, bad); err == nil {
			t.Errorf("Get(%q) succeeded", bad)
		}
	}
	for _, bad := range [][2]string{{"..", "v1"}, {"a/b", "v1"}, {"demand", "../v1"}, {"", "v1"}} {
		if _, err := s.Put(ctx, bad[0], bad[1], []byte("x")); err == nil {
			t.Errorf("Put(%q, %q) succeeded", bad[0], bad[1])
		}
	}
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "demand"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("store dir holds %v (%v), want only v1.bin (no temp files)", entries, err)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"v1", 1, true}, {"v42", 42, true}, {"v0", 0, false}, {"1", 0, false}, {"v", 0, false}, {"vx", 0, false}, {"v-1", 0, false},
	} {
		got, err := ParseVersion(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseVersion(%q) = %d, %v", tc.in, got, err)
		}
	}
}
