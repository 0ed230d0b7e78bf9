package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/registry"
)

// rolloutJSON is the Rollout type of the API.
type rolloutJSON struct {
	Candidate   string     `json:"candidate"`
	Stable      string     `json:"stable"`
	State       string     `json:"state"`
	Phase       int        `json:"phase"`
	Percent     int        `json:"percent"`
	Shadow      bool       `json:"shadow"`
	PhaseEndsAt *time.Time `json:"phaseEndsAt"`
	Reason      *string    `json:"reason"`
	History     []struct {
		Percent int `json:"percent"`
	} `json:"history"`
	CandidateStats struct {
		Version  string `json:"version"`
		Requests int    `json:"requests"`
	} `json:"candidateStats"`
}

const rolloutFields = `candidate stable state phase phases percent shadow startedAt phaseEndsAt finishedAt reason
	history { phase percent startedAt }
	candidateStats { version requests errors errorRate p99LatencyMs inferenceCalls mape mapeSamples }
	stableStats { version requests errors errorRate p99LatencyMs inferenceCalls mape mapeSamples }`

type modelJSON struct {
	Version    string  `json:"version"`
	Status     string  `json:"status"`
	SchemaHash string  `json:"schemaHash"`
	Serving    *string `json:"serving"`
	Metrics    []struct {
		Name  string  `json:"name"`
		Value float64 `json:"value"`
	} `json:"metrics"`
}

var adminHeader = map[string]string{"X-Admin-Key": testAdminKey}

// admin runs an admin operation that must succeed.
func (s *stack) admin(t *testing.T, query string, vars map[string]any, out any) {
	t.Helper()
	r := s.gql(t, query, vars, adminHeader)
	if len(r.Errors) > 0 {
		t.Fatalf("admin operation failed: %s\nquery: %s", r.Body, query)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatalf("decode: %v: %s", err, r.Data)
	}
}

func (s *stack) rollout(t *testing.T) *rolloutJSON {
	t.Helper()
	var d struct {
		Rollout *rolloutJSON `json:"rollout"`
	}
	s.mustData(t, `{ rollout { `+rolloutFields+` } }`, nil, &d)
	return d.Rollout
}

func (s *stack) models(t *testing.T) map[string]modelJSON {
	t.Helper()
	var d struct {
		Models []modelJSON `json:"models"`
	}
	s.mustData(t, `{ models { name version status horizonMinutes metrics { name value } createdAt statusChangedAt schemaHash serving } }`, nil, &d)
	out := map[string]modelJSON{}
	for _, m := range d.Models {
		out[m.Version] = m
	}
	return out
}

// registerConstant registers a real ONNX model of the serving schema that
// forecasts demand for every input, with the given schema hash.
func registerConstant(t *testing.T, s *stack, demand float32, schemaHash string) registry.Entry {
	t.Helper()
	ens := &model.Ensemble{NumFeatures: features.V1.Len(), Base: demand,
		Meta: model.Metadata{Name: s.cfg.ModelName, SchemaHash: schemaHash, FeatureNames: features.V1.Names()}}
	b, err := ens.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	return registerBytes(t, s, b, schemaHash)
}

func registerBytes(t *testing.T, s *stack, artifact []byte, schemaHash string) registry.Entry {
	t.Helper()
	store, err := registry.NewLocalStore(s.cfg.ModelDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, err := registry.New(s.a.ch, store).Register(ctx, registry.Entry{Name: s.cfg.ModelName, SchemaHash: schemaHash,
		Metrics: map[string]float64{"mape": 0.11, "wape": 0.09}}, artifact)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// servedVersions prices every demo region and returns the model version
// of each quote.
func (s *stack) servedVersions(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range demoRegions {
		// A busy machine can time a Redis read out (100 ms) and serve a
		// fallback: ask again until the model answers.
		var q quoteJSON
		waitCond(t, r+" priced by the model", func() bool {
			q = s.price(t, r, "ride")
			return q.ForecastSource == "MODEL"
		})
		out[r] = q.modelVersion()
	}
	return out
}

// TestE2ERollout drives canary rollouts through the admin GraphQL API of
// the real server: refusals of bad versions, a rollout that goes 10 % →
// 50 % → 100 % on its own and is promoted, a manual rollback, a shadow
// rollout that never serves and a manual promotion.
func TestE2ERollout(t *testing.T) {
	s := newStack(t, stackOptions{config: func(c *config) {
		c.RolloutPhase, c.RolloutCheck = 1500*time.Millisecond, 50*time.Millisecond
		// A phase ends once the candidate served a few forecasts; scores
		// on realised demand would need the horizon to elapse.
		c.RolloutMinServed, c.RolloutMinScored = 5, -1
		// Latency is not under test here (rollout's tests compare it): a
		// busy machine's GC pause must not roll a candidate back.
		c.RolloutSlack = time.Minute
	}})
	v2 := registerConstant(t, s, 400, features.V1.Hash())
	other := registerConstant(t, s, 500, "another-feature-schema")
	garbage := registerBytes(t, s, []byte("not an onnx model"), features.V1.Hash())
	tampered := registerConstant(t, s, 600, features.V1.Hash())
	if err := os.WriteFile(filepath.Join(s.cfg.ModelDir, s.cfg.ModelName, tampered.Version+".bin"), []byte("flipped"), 0o644); err != nil {
		t.Fatal(err)
	}

	if r := s.rollout(t); r != nil {
		t.Fatalf("rollout before any: %+v", r)
	}
	ms := s.models(t)
	if len(ms) != 5 || ms["v1"].Status != "ACTIVE" || ms["v1"].Serving == nil || *ms["v1"].Serving != "STABLE" ||
		ms["v2"].Status != "CANDIDATE" || ms["v2"].Serving != nil || ms["v2"].SchemaHash != features.V1.Hash() ||
		len(ms["v2"].Metrics) != 2 || ms["v2"].Metrics[0].Name != "mape" || ms["v2"].Metrics[0].Value != 0.11 {
		t.Fatalf("models: %+v", ms)
	}

	start := `mutation($v: String!, $shadow: Boolean) { startRollout(version: $v, shadow: $shadow) { ` + rolloutFields + ` } }`
	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name, query string
			vars        map[string]any
			header      map[string]string
			code, field string
			msg         string
		}{
			{"no key", start, map[string]any{"v": v2.Version}, nil, "UNAUTHENTICATED", "", ""},
			{"wrong key", start, map[string]any{"v": v2.Version}, map[string]string{"X-Admin-Key": "nope"}, "UNAUTHENTICATED", "", ""},
			{"a key without the admin role", start, map[string]any{"v": v2.Version}, ingestHeader, "FORBIDDEN", "", ""},
			{"promote without key", `mutation { promoteModel(version: "v2") { version } }`, nil, nil, "UNAUTHENTICATED", "", ""},
			{"rollback without key", `mutation { rollbackModel { state } }`, nil, nil, "UNAUTHENTICATED", "", ""},
			{"unknown version", start, map[string]any{"v": "v99"}, adminHeader, "NOT_FOUND", "version", "v99"},
			{"not a version", start, map[string]any{"v": "latest"}, adminHeader, "BAD_USER_INPUT", "version", "v1, v2"},
			{"other schema", start, map[string]any{"v": other.Version}, adminHeader, "BAD_USER_INPUT", "version", "feature schema"},
			{"artifact that does not load", start, map[string]any{"v": garbage.Version}, adminHeader, "BAD_USER_INPUT", "version", "does not load"},
			{"corrupt artifact", start, map[string]any{"v": tampered.Version}, adminHeader, "BAD_USER_INPUT", "version", "corrupt"},
			{"the active version", start, map[string]any{"v": "v1"}, adminHeader, "BAD_USER_INPUT", "version", "already"},
			{"promote corrupt", `mutation { promoteModel(version: "` + tampered.Version + `") { version } }`, nil, adminHeader, "BAD_USER_INPUT", "version", "corrupt"},
			{"promote unknown", `mutation { promoteModel(version: "v42") { version } }`, nil, adminHeader, "NOT_FOUND", "version", ""},
			{"rollback without rollout", `mutation { rollbackModel(reason: "x") { state } }`, nil, adminHeader, "CONFLICT", "", "no rollout"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := s.gql(t, tt.query, tt.vars, tt.header)
				if r.code() != tt.code || r.field() != tt.field || len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Message, tt.msg) {
					t.Fatalf("got code %q field %q: %s; want %s %q containing %q", r.code(), r.field(), r.Body, tt.code, tt.field, tt.msg)
				}
			})
		}
		for r, v := range s.servedVersions(t) {
			if v != "v1" {
				t.Fatalf("%s served by %s after refusals", r, v)
			}
		}
		if r := s.rollout(t); r != nil {
			t.Fatalf("a refused rollout shows: %+v", r)
		}
	})

	t.Run("automatic promotion", func(t *testing.T) {
		var d struct {
			StartRollout rolloutJSON `json:"startRollout"`
		}
		s.admin(t, start, map[string]any{"v": v2.Version}, &d)
		if r := d.StartRollout; r.State != "RUNNING" || r.Phase != 1 || r.Percent != 10 || r.Candidate != v2.Version || r.Stable != "v1" || r.PhaseEndsAt == nil {
			t.Fatalf("startRollout: %+v", r)
		}
		if r := s.gql(t, start, map[string]any{"v": v2.Version}, adminHeader); r.code() != "CONFLICT" {
			t.Fatalf("second startRollout: %s", r.Body)
		}
		if v, ok := metricValue(s.metrics(t), "surge_rollout_percent", ""); !ok || v != 10 {
			t.Fatalf("surge_rollout_percent = %v, %v", v, ok)
		}
		sawHalf := false
		waitCond(t, "the rollout to finish", func() bool {
			r := s.rollout(t)
			served := s.servedVersions(t)
			after := s.rollout(t)
			if r.State == "RUNNING" && after.State == "RUNNING" && r.Percent == after.Percent {
				// Every forecast is served by one of the two versions (the
				// split, by region, horizon and minute, is tested in the
				// inference package); at 50 % both serve.
				seen := map[string]bool{}
				for region, v := range served {
					if v != "v1" && v != v2.Version {
						t.Fatalf("at %d%% %s served by %s", r.Percent, region, v)
					}
					seen[v] = true
				}
				if r.Percent == 50 && seen["v1"] && seen[v2.Version] {
					sawHalf = true
				}
			}
			return after.State != "RUNNING"
		})
		r := s.rollout(t)
		var percents []int
		for _, p := range r.History {
			percents = append(percents, p.Percent)
		}
		if r.State != "PROMOTED" || !slices.Equal(percents, []int{10, 50, 100}) || r.CandidateStats.Requests == 0 {
			t.Fatalf("rollout ended: %+v (phases %v)", r, percents)
		}
		if !sawHalf {
			t.Fatal("never saw both versions serve during the 50 % phase")
		}
		for region, v := range s.servedVersions(t) {
			if v != v2.Version {
				t.Fatalf("after promotion %s served by %s", region, v)
			}
		}
		ms := s.models(t)
		if ms["v1"].Status != "RETIRED" || ms[v2.Version].Status != "ACTIVE" || *ms[v2.Version].Serving != "STABLE" {
			t.Fatalf("models after promotion: %+v", ms)
		}
		m := s.metrics(t)
		if v, ok := metricValue(m, "surge_rollout_phase", ""); !ok || v != 0 {
			t.Fatalf("surge_rollout_phase after promotion = %v, %v", v, ok)
		}
		if v, ok := metricValue(m, "surge_forecasts_by_version_total", `version="`+v2.Version+`"`); !ok || v < 1 {
			t.Fatalf("surge_forecasts_by_version_total{version=%q} = %v, %v", v2.Version, v, ok)
		}
		if !strings.Contains(m, `surge_inference_version_duration_seconds_count{role="candidate",version="`+v2.Version+`"}`) {
			t.Fatal("no candidate latency histogram in /metrics")
		}
	})

	v6 := registerConstant(t, s, 700, features.V1.Hash())
	t.Run("manual rollback", func(t *testing.T) {
		var d struct {
			StartRollout rolloutJSON `json:"startRollout"`
		}
		s.admin(t, start, map[string]any{"v": v6.Version}, &d)
		var rb struct {
			RollbackModel rolloutJSON `json:"rollbackModel"`
		}
		s.admin(t, `mutation { rollbackModel(reason: "forecasts look off") { `+rolloutFields+` } }`, nil, &rb)
		if r := rb.RollbackModel; r.State != "ROLLED_BACK" || r.Reason == nil || *r.Reason != "forecasts look off" || r.Candidate != v6.Version {
			t.Fatalf("rollbackModel: %+v", r)
		}
		if ms := s.models(t); ms[v6.Version].Status != "REJECTED" || ms[v2.Version].Status != "ACTIVE" {
			t.Fatalf("models after rollback: %+v", ms)
		}
		for region, v := range s.servedVersions(t) {
			if v != v2.Version {
				t.Fatalf("after rollback %s served by %s", region, v)
			}
		}
	})

	t.Run("shadow then manual promotion", func(t *testing.T) {
		var d struct {
			StartRollout rolloutJSON `json:"startRollout"`
		}
		s.admin(t, start, map[string]any{"v": v6.Version, "shadow": true}, &d)
		if !d.StartRollout.Shadow {
			t.Fatalf("startRollout shadow: %+v", d.StartRollout)
		}
		waitCond(t, "the shadow rollout to reach its last phase", func() bool {
			for region, v := range s.servedVersions(t) {
				if v != v2.Version {
					t.Fatalf("shadow rollout served %s from %s", region, v)
				}
			}
			r := s.rollout(t)
			if r.State != "RUNNING" {
				t.Fatalf("shadow rollout ended on its own: %+v", r)
			}
			// The last phase waits for an admin; the shadow ran.
			return r.Percent == 100 && r.PhaseEndsAt == nil && r.CandidateStats.Requests > 0
		})
		if ms := s.models(t); ms[v6.Version].Serving == nil || *ms[v6.Version].Serving != "SHADOW" {
			t.Fatalf("models during shadow: %+v", ms[v6.Version])
		}
		var p struct {
			PromoteModel modelJSON `json:"promoteModel"`
		}
		s.admin(t, `mutation($v: String!) { promoteModel(version: $v) { version status serving } }`, map[string]any{"v": v6.Version}, &p)
		if p.PromoteModel.Status != "ACTIVE" || p.PromoteModel.Serving == nil || *p.PromoteModel.Serving != "STABLE" {
			t.Fatalf("promoteModel: %+v", p.PromoteModel)
		}
		for region, v := range s.servedVersions(t) {
			if v != v6.Version {
				t.Fatalf("after promotion %s served by %s", region, v)
			}
		}
		if ms := s.models(t); ms[v2.Version].Status != "RETIRED" {
			t.Fatalf("models after manual promotion: %+v", ms)
		}
	})
}
