package inference

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
)

// longMemoryArtifact is a model of a long-memory schema that answers 1 + 10
// when demand_last ≤ 50, else 1 + 100 (raw, identity link), so tests can see
// which row it was given.
func longMemoryArtifact(t *testing.T, schema features.Schema) []byte {
	t.Helper()
	col := int32(schema.Index(features.DemandLast))
	e := &model.Ensemble{NumFeatures: schema.Len(), Base: 1, Trees: []model.Tree{{Nodes: []model.Node{
		{Feature: col, Threshold: 50, True: 1, False: 2}, {Leaf: true, Value: 10}, {Leaf: true, Value: 100},
	}}}}
	enc := &features.Encoding{RegionLevels: map[string]float64{"berlin": 2}}
	e.Meta = model.Metadata{Name: "demand", Version: "v9", SchemaHash: schema.Hash(), FeatureNames: schema.Names(),
		Params: map[string]string{features.EncodingParam: enc.String(), "data": "real"}}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLongMemoryModelServing(t *testing.T) {
	for _, v := range []string{"v2", "v3"} {
		t.Run(v, func(t *testing.T) { testLongMemoryServing(t, features.Schemas[v]) })
	}
}

func testLongMemoryServing(t *testing.T, schema features.Schema) {
	m, err := LoadModel(longMemoryArtifact(t, schema), RuntimeGo)
	if err != nil {
		t.Fatal(err)
	}
	if m.Encoding == nil || m.DataSource() != "real" {
		t.Fatalf("loaded %+v", m)
	}
	f := newTestForecaster(&fakePredictor{value: 1}, nil)
	f.SetModel(m)
	ctx := context.Background()
	at := time.Now()
	full := features.Online{features.HorizonKey(features.DemandLast, 15): 20}
	for _, h := range features.Horizons {
		for _, f := range schema {
			if f.PerHorizon && f.Name != features.DemandLast {
				full[features.HorizonKey(f.Name, h)] = 1
			}
		}
	}
	req := func(h int, on features.Online) Request {
		return Request{RegionID: "berlin", HorizonMinutes: h, At: at, Features: features.Values{Online: on, UpdatedAt: at}}
	}
	// 15 minutes with every window: demand_last 20 ≤ 50 → 1 + 10, no warning.
	if fc := f.Forecast(ctx, req(15, full)); fc.Demand != 11 || len(fc.Warnings) != 0 || fc.TrainingData != "real" {
		t.Fatalf("15 min: %+v", fc)
	}
	// 30 minutes is served at 15 and scaled by 2.
	if fc := f.Forecast(ctx, req(30, full)); fc.Demand != 22 {
		t.Fatalf("30 min: %+v", fc)
	}
	// Without the long-memory windows (Redis lost them): they take the
	// region level (2 per minute × 60 = 120 > 50 → 1 + 100) and the
	// forecast says so.
	fc := f.Forecast(ctx, req(60, features.Online{features.Searches1m: 3}))
	if fc.Source != SourceModel || fc.Demand != 101 || len(fc.Warnings) != 1 || !strings.Contains(fc.Warnings[0], "long-memory features missing") {
		t.Fatalf("60 min without memory: %+v", fc)
	}
	// A day is trained for: served at 1440, unscaled (demand_last 40 ≤ 50).
	full[features.HorizonKey(features.DemandLast, 1440)] = 40
	if fc := f.Forecast(ctx, req(1440, full)); fc.Demand != 11 || len(fc.Warnings) != 0 {
		t.Fatalf("1440 min: %+v", fc)
	}
}

// A V1 model is trained for 5, 15 and 60 minutes: longer horizons are
// served at 60 and scaled, where its trees would answer the 60-minute
// figure for any of them.
func TestV1LongHorizonScaled(t *testing.T) {
	col := int32(features.V1.Index(features.HorizonMinutes))
	e := &model.Ensemble{NumFeatures: features.V1.Len(), Trees: []model.Tree{{Nodes: []model.Node{
		{Feature: col, Threshold: 30, True: 1, False: 2}, {Leaf: true, Value: 5}, {Leaf: true, Value: 20},
	}}}}
	load := func(params map[string]string) *Forecaster {
		t.Helper()
		e.Meta = model.Metadata{Name: "demand", Version: "v1", SchemaHash: features.V1.Hash(), FeatureNames: features.V1.Names(), Params: params}
		b, err := e.MarshalONNX()
		if err != nil {
			t.Fatal(err)
		}
		m, err := LoadModel(b, RuntimeGo)
		if err != nil {
			t.Fatal(err)
		}
		f := newTestForecaster(&fakePredictor{value: 1}, nil)
		f.SetModel(m)
		return f
	}
	at := time.Now()
	for _, tt := range []struct {
		horizons string // the model's "horizons" parameter
		h        int
		want     float64
	}{
		{"", 15, 5}, {"", 60, 20}, {"", 240, 80}, {"", 1440, 480}, // no list: 60 assumed
		{"5,15,60", 240, 80},
		{"5,15,60,120", 240, 40}, // trained for 120: served at 120 (20) and doubled
	} {
		f := load(map[string]string{"horizons": tt.horizons})
		fc := f.Forecast(context.Background(), Request{RegionID: "berlin", HorizonMinutes: tt.h, At: at, Features: features.Values{Online: features.Online{}, UpdatedAt: at}})
		if fc.Source != SourceModel || fc.Demand != tt.want {
			t.Errorf("horizons %q, %d min: %+v, want %v", tt.horizons, tt.h, fc, tt.want)
		}
	}
}

func TestLoadModelRefusesUnknownSchema(t *testing.T) {
	e := &model.Ensemble{NumFeatures: 3, Trees: []model.Tree{{Nodes: []model.Node{{Leaf: true, Value: 1}}}},
		Meta: model.Metadata{Name: "demand", Version: "v3", SchemaHash: "0123456789abcdef"}}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadModel(b, RuntimeGo); !errors.Is(err, features.ErrSchemaMismatch) || !strings.Contains(err.Error(), "(v3)") {
		t.Fatalf("err = %v, want a schema mismatch naming the schemas this server builds", err)
	}
}
