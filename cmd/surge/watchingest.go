package main

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/loadtest"
)

func newWatchIngestCmd() *cobra.Command {
	var (
		base     string
		duration time.Duration
		drain    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch-ingest",
		Short: "Measure the ingestion pipeline of a running server from its /metrics",
		Long: `watch-ingest samples a running server's /metrics every second for --duration (while a
load such as "surge simulate --rate 50000" runs), then waits up to --drain for the
consumers to catch up, and prints: events accepted per second, the consumer lag (max
and at the end) of the feature stream and the ClickHouse sink, ClickHouse rows per
second, and the freshness p50/p99 from the intake's acceptance of an event to its
reflection in the Redis features (the surge_stream_feature_freshness_seconds histogram,
interpolated within its buckets).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return loadtest.WatchIngest(cmd.Context(), cmd.OutOrStdout(), strings.TrimSuffix(base, "/")+"/metrics", duration, drain)
		},
	}
	cmd.Flags().StringVar(&base, "url", "http://127.0.0.1:8000", "server base URL")
	cmd.Flags().DurationVar(&duration, "duration", 30*time.Second, "how long to sample")
	cmd.Flags().DurationVar(&drain, "drain", 60*time.Second, "how long to wait afterwards for the lag to reach 0")
	return cmd
}
