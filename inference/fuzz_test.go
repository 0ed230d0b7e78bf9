package inference

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
)

// fuzzArtifact is a one-split model of a schema, with params.
func fuzzArtifact(f *testing.F, schema features.Schema, link string, params map[string]string) []byte {
	f.Helper()
	e := &model.Ensemble{NumFeatures: schema.Len(), Base: 1, Link: link, Trees: []model.Tree{{Nodes: []model.Node{
		{Feature: int32(schema.Len() - 1), Threshold: 0.5, True: 1, False: 2}, {Leaf: true, Value: 0.5}, {Leaf: true, Value: 2},
	}}}}
	e.Meta = model.Metadata{Name: "demand", Version: "v-fuzz", SchemaHash: schema.Hash(), FeatureNames: schema.Names(), Params: params,
		TrainedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	b, err := e.MarshalONNX()
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzLoadModel fuzzes a model artifact (as the registry hands it to the
// Watcher) through LoadModel on the Go runtime: UnmarshalONNX, the schema
// check and the V2 encoding. Beyond not panicking:
//   - a refusal wraps model.ErrInvalidModel or features.ErrSchemaMismatch,
//     or is the encoding's ("model encoding: …");
//   - a loaded model has the width of its schema, an encoding exactly when
//     it is a V2 model, and serves: for every horizon, with and without
//     features, its row has that width, the horizon's scale is positive
//     and finite, and the predictor answers one value per row.
func FuzzLoadModel(f *testing.F) {
	enc := (&features.Encoding{RegionLevels: map[string]float64{"berlin": 2, "paris": 3.5}, Holidays: features.Calendar{"2026-12-25"}}).String()
	f.Add(fuzzArtifact(f, features.V1, "", nil))
	f.Add(fuzzArtifact(f, features.V1, model.LinkExp, map[string]string{model.ParamDataSource: model.DataGenerated}))
	f.Add(fuzzArtifact(f, features.V2, model.LinkExp, map[string]string{features.EncodingParam: enc, model.ParamDataSource: model.DataReal}))
	f.Add(fuzzArtifact(f, features.V2, "", map[string]string{features.EncodingParam: `{"regionLevels":{"berlin":"x"}}`}))
	f.Add(fuzzArtifact(f, features.V2, "", nil)) // V2 without an encoding
	f.Add([]byte{})
	ctx := context.Background()
	at := time.Date(2026, 11, 25, 21, 50, 0, 0, time.UTC)
	full := features.Online{features.Searches1m: 3, features.WindowEndField: float64(at.UnixMilli())}
	for _, h := range features.Horizons {
		full[features.HorizonKey(features.DemandLast, h)] = 20
		full[features.HorizonKey(features.DemandWeekNext, h)] = 18
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := LoadModel(b, RuntimeGo)
		if err != nil {
			if !errors.Is(err, model.ErrInvalidModel) && !errors.Is(err, features.ErrSchemaMismatch) && !strings.Contains(err.Error(), "model encoding: ") {
				t.Fatalf("refusal %v says no reason", err)
			}
			return
		}
		defer m.Close()
		if m.Ensemble.NumFeatures != m.Schema.Len() || (m.Encoding != nil) != m.Schema.LongMemory() {
			t.Fatalf("loaded a model of %d inputs, schema %q of %d, encoding %v", m.Ensemble.NumFeatures, features.Version(m.Ensemble.Meta.SchemaHash), m.Schema.Len(), m.Encoding)
		}
		var rows [][]float32
		for _, h := range []int{1, 5, 15, 30, 60, 240} {
			for _, on := range []features.Online{nil, full} {
				row, scale, _ := m.Row(Request{RegionID: "berlin", HorizonMinutes: h, At: at, Features: features.Values{Online: on, UpdatedAt: at}})
				if len(row) != m.Ensemble.NumFeatures || !(scale > 0) || math.IsInf(scale, 0) {
					t.Fatalf("horizon %d: row of %d values (model has %d), scale %v", h, len(row), m.Ensemble.NumFeatures, scale)
				}
				rows = append(rows, row)
			}
		}
		out, err := m.Predictor.Predict(ctx, rows)
		if err != nil || len(out) != len(rows) {
			t.Fatalf("predict %d rows: %d values, %v", len(rows), len(out), err)
		}
	})
}
