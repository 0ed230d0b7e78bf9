package simulate

import (
	"context"
	"log/slog"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/rules"
	"github.com/surgeworks/surge/training"
)

// DemoFeatures keeps the online features of the demo regions fresh from
// the same synthetic generator the bootstrap model learned from, so that a
// fresh `make run` prices from the model before any real event arrives. It
// writes every 5 seconds until ctx ends, and leaves alone a region whose
// features the streaming consumer wrote in the last two minutes (real events
// win over demo ones).
func DemoFeatures(ctx context.Context, store *features.Store, regions func() []rules.Region, logger *slog.Logger) {
	type series struct {
		minutes []features.Minute
		season  [168]float64
	}
	var (
		bySeries map[string]series
		start    time.Time
	)
	generate := func(now time.Time) {
		start = now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -14)
		bySeries = map[string]series{}
		for _, h := range training.GenerateHistory(training.HistoryOptions{Days: 16, Start: start}) {
			bySeries[h.Region.ID] = series{h.Minutes, training.SeasonalityIndex(h.Minutes[:14*24*60])}
		}
	}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		now := time.Now().UTC()
		if bySeries == nil || now.Sub(start) > 15*24*time.Hour {
			generate(now)
		}
		idx := int(now.Sub(start) / time.Minute) // the minute under way; the window ends before it
		known := map[string]bool{}
		for _, r := range regions() {
			known[r.ID] = true
		}
		for id, s := range bySeries {
			if !known[id] || idx < 15 || idx > len(s.minutes) {
				continue
			}
			if cur, err := store.Get(ctx, id); err == nil {
				if last, ok := cur.LastEventReceived(); ok && now.Sub(last) < 2*time.Minute {
					continue
				}
			}
			online := features.FromMinutes(s.minutes[idx-15:idx], s.season[training.HourOfWeek(now)])
			if err := store.Write(ctx, id, online, now); err != nil && ctx.Err() == nil {
				logger.Debug("demo features not written", "region", id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
