package resolvers

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/graph/model"
	ensemble "github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/rollout"
)

// RolloutAdmin lists model versions and runs canary rollouts;
// rollout.Controller implements it.
type RolloutAdmin interface {
	Models(ctx context.Context) ([]registry.Entry, error)
	Serving() (stable, candidate string)
	Status() (rollout.Status, bool)
	Start(ctx context.Context, version string, shadow bool) (rollout.Status, error)
	Promote(ctx context.Context, version string) (registry.Entry, error)
	Rollback(ctx context.Context, reason string) (rollout.Status, error)
}

// errNoRollouts is returned when the process runs no rollout controller.
var errNoRollouts = errors.New("model rollouts are not available in this process")

// checkVersion refuses what cannot be a version name before any look-up.
func checkVersion(version string) error {
	if _, err := registry.ParseVersion(version); err != nil {
		return &quotes.InputError{Field: "version", Msg: "want v1, v2, …, got " + quoteString(version), Err: quotes.ErrInvalidInput}
	}
	return nil
}

func quoteString(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return `"` + s + `"`
}

func toModelVersion(e registry.Entry, stable, candidate string, shadow bool) *model.ModelVersion {
	mv := &model.ModelVersion{
		Name: e.Name, Version: e.Version, Status: model.ModelStatus(strings.ToUpper(string(e.Status))),
		HorizonMinutes: int(e.HorizonMinutes), CreatedAt: e.CreatedAt, StatusChangedAt: e.StatusChangedAt,
		SchemaHash: e.SchemaHash, Metrics: []*model.Metric{},
	}
	if v := features.Version(e.SchemaHash); v != "" {
		mv.SchemaVersion = &v
	}
	var params map[string]any
	if json.Unmarshal(e.Params, &params) == nil {
		s, _ := params[ensemble.ParamDataSource].(string)
		mv.TrainingData = trainingData(s)
	}
	names := make([]string, 0, len(e.Metrics))
	for k := range e.Metrics {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		mv.Metrics = append(mv.Metrics, &model.Metric{Name: k, Value: e.Metrics[k]})
	}
	var serving string
	switch {
	case e.Version == stable:
		serving = "STABLE"
	case e.Version == candidate && shadow:
		serving = "SHADOW"
	case e.Version == candidate:
		serving = "CANDIDATE"
	}
	if serving != "" {
		mv.Serving = &serving
	}
	return mv
}

func toRollout(s rollout.Status) *model.Rollout {
	out := &model.Rollout{
		Candidate: s.Candidate, Stable: s.Stable, State: model.RolloutState(strings.ToUpper(string(s.State))),
		Phase: s.Phase, Phases: s.Phases, Percent: s.Percent, Shadow: s.Shadow, StartedAt: s.StartedAt,
		PhaseEndsAt: timePtr(s.PhaseEndsAt), FinishedAt: timePtr(s.FinishedAt),
		History:        []*model.RolloutPhase{},
		CandidateStats: toVersionStats(s.CandidateStats, s.Candidate),
		StableStats:    toVersionStats(s.StableStats, s.Stable),
	}
	if s.Waiting != "" {
		out.Waiting = &s.Waiting
	}
	if s.Reason != "" {
		out.Reason = &s.Reason
	}
	for _, p := range s.History {
		out.History = append(out.History, &model.RolloutPhase{Phase: p.Phase, Percent: p.Percent, StartedAt: p.StartedAt})
	}
	return out
}

func toVersionStats(v rollout.VersionStats, version string) *model.RolloutVersionStats {
	out := &model.RolloutVersionStats{Version: version, Requests: int(v.Requests), Errors: int(v.Errors),
		ErrorRate: v.ErrorRate, InferenceCalls: v.Calls, MapeSamples: v.MAPESamples}
	if v.Calls > 0 {
		ms := float64(v.P99) / float64(time.Millisecond)
		out.P99LatencyMs = &ms
	}
	if v.MAPESamples > 0 {
		out.Mape = &v.MAPE
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
