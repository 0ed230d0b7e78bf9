package compat

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/rules"
)

// TestRules: rules.Store's versioning, current, pending and history queries.
func TestRules(t *testing.T) {
	conn, _ := migrated(t)
	ctx := t.Context()
	s := rules.NewStore(conn)
	seeded, err := rules.SeedDefaults(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(seeded) == 0 {
		t.Fatal("SeedDefaults stored no rule")
	}
	r := seeded[0]
	r.BasePrice++
	r.EffectiveFrom = time.Now().Add(time.Hour)
	next, err := s.Put(ctx, r, "compat")
	if err != nil {
		t.Fatal(err)
	}
	if next.Version != seeded[0].Version+1 {
		t.Fatalf("second Put got version %d, want %d", next.Version, seeded[0].Version+1)
	}
	cur, err := s.Current(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) != len(seeded) {
		t.Fatalf("Current: %d rules, want %d", len(cur), len(seeded))
	}
	pending, err := s.Pending(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].Version != next.Version || pending[0].BasePrice != r.BasePrice {
		t.Fatalf("Pending = %+v, want version %d", pending, next.Version)
	}
	hist, err := s.History(ctx, r.RegionID)
	if err != nil {
		t.Fatal(err)
	}
	var versions []uint32
	for _, h := range hist {
		if h.ProductType == r.ProductType {
			versions = append(versions, h.Version)
		}
	}
	if !slices.Equal(versions, []uint32{1, 2}) {
		t.Fatalf("History versions of %s/%s = %v, want [1 2]", r.RegionID, r.ProductType, versions)
	}
}

// TestRegistry: model registration, status changes and their history.
func TestRegistry(t *testing.T) {
	conn, _ := migrated(t)
	ctx := t.Context()
	store, err := registry.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(conn, store)
	if _, err := reg.Active(ctx, "demand"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Active of an empty registry = %v, want ErrNotFound", err)
	}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := registry.Entry{
		Name: "demand", HorizonMinutes: 15, SchemaHash: "abc",
		Metrics: map[string]float64{"mape": 0.12}, Params: json.RawMessage(`{"trees":100}`),
		FeatureImportance: map[string]float64{"searches_5m": 0.4},
		TrainFrom:         from, TrainTo: from.Add(24 * time.Hour),
	}
	v1, err := reg.Register(ctx, in, []byte("model one"))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := reg.Register(ctx, in, []byte("model two"))
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version != "v1" || v2.Version != "v2" {
		t.Fatalf("versions %s, %s; want v1, v2", v1.Version, v2.Version)
	}
	if err := reg.SetStatus(ctx, "demand", "v2", registry.StatusActive); err != nil {
		t.Fatal(err)
	}
	active, err := reg.Active(ctx, "demand")
	if err != nil || active.Version != "v2" || active.Metrics["mape"] != 0.12 || !active.TrainTo.Equal(in.TrainTo) {
		t.Fatalf("Active = %+v, %v; want v2 with its metrics", active, err)
	}
	got, err := reg.Get(ctx, "demand", "v1")
	if err != nil || got.Status != registry.StatusCandidate {
		t.Fatalf("Get v1 = %+v, %v", got, err)
	}
	art, err := reg.Load(ctx, got)
	if err != nil || string(art) != "model one" {
		t.Fatalf("Load v1 = %q, %v", art, err)
	}
	hist, err := reg.StatusHistory(ctx, "demand", "v2")
	if err != nil || len(hist) != 2 || hist[1].Status != registry.StatusActive {
		t.Fatalf("StatusHistory v2 = %+v, %v; want candidate then active", hist, err)
	}
	list, err := reg.List(ctx, "demand")
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %d entries, %v", len(list), err)
	}
}
