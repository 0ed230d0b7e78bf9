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

// v2Artifact is a V2 model that answers demand_last + 1 (raw, identity
// link) so tests can see which row it was given.
func v2Artifact(t *testing.T) []byte {
	t.Helper()
	col := int32(features.V2.Index(features.DemandLast))
	e := &model.Ensemble{NumFeatures: features.V2.Len(), Base: 1, Trees: []model.Tree{{Nodes: []model.Node{
		{Feature: col, Threshold: 50, True: 1, False: 2}, {Leaf: true, Value: 10}, {Leaf: true, Value: 100},
	}}}}
	enc := &features.Encoding{RegionLevels: map[string]float64{"berlin": 2}}
	e.Meta = model.Metadata{Name: "demand", Version: "v9", SchemaHash: features.V2.Hash(), FeatureNames: features.V2.Names(),
		Params: map[string]string{features.EncodingParam: enc.String(), "data": "real"}}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestV2ModelServing(t *testing.T) {
	m, err := LoadModel(v2Artifact(t), RuntimeGo)
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
		for _, name := range []string{features.DemandPrev, features.DemandDayNext, features.DemandDayPrev, features.DemandWeekNext,
			features.DemandWeekPrev, features.DemandMean1h, features.DemandMean24h, features.DemandMean168h} {
			full[features.HorizonKey(name, h)] = 1
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
}

func TestLoadModelRefusesUnknownSchema(t *testing.T) {
	e := &model.Ensemble{NumFeatures: 3, Trees: []model.Tree{{Nodes: []model.Node{{Leaf: true, Value: 1}}}},
		Meta: model.Metadata{Name: "demand", Version: "v3", SchemaHash: "0123456789abcdef"}}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadModel(b, RuntimeGo); !errors.Is(err, features.ErrSchemaMismatch) || !strings.Contains(err.Error(), "v2") {
		t.Fatalf("err = %v, want a schema mismatch naming the schemas this server builds", err)
	}
}
