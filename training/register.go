package training

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/surgeworks/surge/registry"
)

// RegisterResult records a pipeline's model in the registry under name:
// as a candidate when the gate passed, otherwise as rejected (registered,
// then marked rejected, so the status history shows both). The entry's
// metrics are PipelineResult.Metrics; its params are the trainer and
// pipeline parameters plus "gate" ("passed" or "rejected") and
// "gate_reasons" (a list of strings). Training window: the data before the
// holdout, which the model was trained on.
func RegisterResult(ctx context.Context, reg *registry.Registry, name string, res *PipelineResult) (registry.Entry, error) {
	ens := res.Model
	ens.Meta.Name = name
	artifact, err := ens.MarshalONNX()
	if err != nil {
		return registry.Entry{}, fmt.Errorf("training: encode model: %w", err)
	}
	params := map[string]any{}
	for k, v := range ens.Meta.Params {
		params[k] = v
	}
	params["regions"] = strings.Join(res.Regions, ",")
	params["gate"] = "passed"
	if !res.Passed {
		params["gate"] = "rejected"
	}
	params["gate_reasons"] = append([]string{}, res.Reasons...)
	raw, err := json.Marshal(params)
	if err != nil {
		return registry.Entry{}, fmt.Errorf("training: encode params: %w", err)
	}
	e, err := reg.Register(ctx, registry.Entry{
		Name:              name,
		SchemaHash:        ens.Meta.SchemaHash,
		Metrics:           res.Metrics(),
		Params:            raw,
		FeatureImportance: ens.Meta.ImportanceGain(),
		TrainFrom:         res.TrainFrom,
		TrainTo:           res.TrainTo,
		Status:            registry.StatusCandidate,
	}, artifact)
	if err != nil {
		return registry.Entry{}, fmt.Errorf("training: register model: %w", err)
	}
	if !res.Passed {
		if err := reg.SetStatus(ctx, e.Name, e.Version, registry.StatusRejected); err != nil {
			return e, fmt.Errorf("training: mark %s %s rejected: %w", e.Name, e.Version, err)
		}
		e.Status = registry.StatusRejected
	}
	return e, nil
}
