package resolvers

import (
	"sort"
	"strings"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/graph/model"
	"github.com/surgeworks/surge/ingest"
)

func fromEventInput(e *model.EventInput) ingest.Event {
	ev := ingest.Event{
		EventID:         e.EventID,
		Type:            e.Type,
		RegionID:        e.RegionID,
		Timestamp:       e.Timestamp,
		UserID:          deref(e.UserID),
		ProductType:     deref(e.ProductType),
		Price:           e.Price,
		AvailableSupply: e.AvailableSupply,
		Signal:          deref(e.Signal),
		Value:           e.Value,
		QuoteID:         deref(e.QuoteID),
	}
	if e.Experiment != nil {
		ev.Experiment = &ingest.Experiment{ID: e.Experiment.ID, Variant: e.Experiment.Variant}
	}
	return ev
}

func toIngestResult(r ingest.Response) *model.IngestResult {
	out := &model.IngestResult{Accepted: r.Accepted, Duplicates: r.Duplicates, Rejected: r.Rejected,
		Results: make([]*model.EventResult, len(r.Events))}
	for i, e := range r.Events {
		res := &model.EventResult{Index: e.Index, Status: model.EventStatus(strings.ToUpper(string(e.Status))), Errors: []*model.EventFieldError{}}
		if e.EventID != "" {
			id := e.EventID
			res.EventID = &id
		}
		for _, fe := range e.Errors {
			res.Errors = append(res.Errors, &model.EventFieldError{Field: fe.Field, Message: fe.Message})
		}
		out.Results[i] = res
	}
	return out
}

func (r *Resolver) maxFeatureAge() time.Duration {
	if r.MaxFeatureAge > 0 {
		return r.MaxFeatureAge
	}
	return 5 * time.Minute
}

// toOnlineFeatures lists the model's features in schema order, then any other
// field of the hash (the streaming consumer's *_current and *_ms fields).
func toOnlineFeatures(regionID string, v features.Values, maxAge time.Duration) *model.OnlineFeatures {
	out := &model.OnlineFeatures{RegionID: regionID, Stale: true, Values: []*model.FeatureValue{}}
	if v.Found() {
		at := v.UpdatedAt
		age := time.Since(at).Seconds()
		out.UpdatedAt, out.AgeSeconds = &at, &age
		out.Stale = time.Since(at) > maxAge
	}
	seen := map[string]bool{}
	for _, f := range features.V1 {
		if x, ok := v.Online[f.Name]; ok {
			out.Values = append(out.Values, &model.FeatureValue{Name: f.Name, Value: x, Description: f.Description})
			seen[f.Name] = true
		}
	}
	var rest []string
	for name := range v.Online {
		if !seen[name] {
			rest = append(rest, name)
		}
	}
	sort.Strings(rest)
	for _, name := range rest {
		out.Values = append(out.Values, &model.FeatureValue{Name: name, Value: v.Online[name], Description: "streaming state (not a model input)"})
	}
	return out
}

func toIngestionStatus(s IngestionStatus) *model.IngestionStatus {
	out := &model.IngestionStatus{
		LateEvents: int(s.LateEvents), BackfillEvents: int(s.BackfillEvents), SinkRowsInserted: int(s.SinkRowsInserted),
		Partitions: make([]*model.PartitionLag, len(s.Partitions)),
	}
	if s.LastSinkError != "" {
		msg, at := s.LastSinkError, s.LastSinkErrorAt
		out.LastSinkError, out.LastSinkErrorAt = &msg, &at
	}
	for i, p := range s.Partitions {
		out.Partitions[i] = &model.PartitionLag{Group: p.Group, Topic: p.Topic, Partition: p.Partition,
			NextOffset: int(p.NextOffset), HighWatermark: int(p.HighWatermark), Lag: int(p.Lag)}
	}
	return out
}
