package loadtest

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ingestSample is what one scrape tells.
type ingestSample struct {
	at                 time.Time
	accepted, rows     float64
	streamLag, sinkLag float64
	freshness          *dto.Histogram
}

func scrapeIngest(ctx context.Context, url string) (ingestSample, error) {
	s := ingestSample{at: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return s, fmt.Errorf("parse %s: %w", url, err)
	}
	sum := func(name string, match func(*dto.Metric) bool) float64 {
		f := fams[name]
		if f == nil {
			return 0
		}
		t := 0.0
		for _, m := range f.Metric {
			if match != nil && !match(m) {
				continue
			}
			switch {
			case m.Counter != nil:
				t += m.Counter.GetValue()
			case m.Gauge != nil:
				if v := m.Gauge.GetValue(); v > 0 {
					t += v
				}
			}
		}
		return t
	}
	label := func(name, value string) func(*dto.Metric) bool {
		return func(m *dto.Metric) bool {
			for _, l := range m.Label {
				if l.GetName() == name {
					return l.GetValue() == value
				}
			}
			return false
		}
	}
	s.accepted = sum("surge_intake_events_total", label("status", "accepted"))
	s.rows = sum("surge_sink_rows_total", label("table", "events_raw"))
	s.streamLag = sum("surge_stream_consumer_lag", nil)
	s.sinkLag = sum("surge_sink_lag", nil)
	if f := fams["surge_stream_feature_freshness_seconds"]; f != nil && len(f.Metric) > 0 {
		s.freshness = f.Metric[0].Histogram
	}
	return s, nil
}

// WatchIngest samples the ingestion metrics of a running server (url is its
// /metrics) every second for duration, waits up to drain for the consumer
// lag to reach 0, and prints events accepted per second, the lag of the
// feature stream and the sink, ClickHouse rows per second and the
// freshness p50/p99 (accepted → Redis features) to out.
func WatchIngest(ctx context.Context, out io.Writer, url string, duration, drain time.Duration) error {
	first, err := scrapeIngest(ctx, url)
	if err != nil {
		return err
	}
	last, maxStream, maxSink := first, 0.0, 0.0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := first.at.Add(duration)
	drained := time.Time{}
	// The send window: from the last sample before events were accepted to
	// the sample in which the last ones were (a load that falls behind its
	// schedule sends for longer than --duration).
	sendFrom, sendTo := first.at, first.at
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		s, err := scrapeIngest(ctx, url)
		if err != nil {
			return err
		}
		maxStream, maxSink = math.Max(maxStream, s.streamLag), math.Max(maxSink, s.sinkLag)
		if s.accepted > last.accepted {
			if last.accepted == first.accepted {
				sendFrom = last.at
			}
			sendTo = s.at
		}
		fmt.Fprintf(out, "%5.0fs  accepted %9.0f  (+%6.0f/s)  stream lag %8.0f  sink lag %8.0f  ClickHouse rows %9.0f\n",
			s.at.Sub(first.at).Seconds(), s.accepted-first.accepted, (s.accepted-last.accepted)/s.at.Sub(last.at).Seconds(),
			s.streamLag, s.sinkLag, s.rows-first.rows)
		last = s
		if s.at.After(end) {
			if s.streamLag == 0 && s.sinkLag == 0 && s.rows-first.rows >= s.accepted-first.accepted {
				drained = s.at
				break
			}
			if s.at.After(end.Add(drain)) {
				break
			}
		}
	}
	sent := last.accepted - first.accepted
	window := math.Max(sendTo.Sub(sendFrom).Seconds(), 1e-9)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nmeasure\tvalue")
	fmt.Fprintf(tw, "events accepted\t%.0f in %.0f s: %.0f events/s\n", sent, window, sent/window)
	fmt.Fprintf(tw, "ClickHouse rows (events_raw)\t%.0f: %.0f rows/s over the send window\n", last.rows-first.rows, (last.rows-first.rows)/window)
	fmt.Fprintf(tw, "consumer lag, max\tfeatures %.0f, sink %.0f\n", maxStream, maxSink)
	if drained.IsZero() {
		fmt.Fprintf(tw, "consumer lag, end\tfeatures %.0f, sink %.0f (not drained within %s)\n", last.streamLag, last.sinkLag, drain)
	} else {
		fmt.Fprintf(tw, "drained\t%.1f s after the load ended; end-to-end %.0f events/s\n", drained.Sub(end).Seconds(), sent/drained.Sub(first.at).Seconds())
	}
	if p50, p99, ok := histQuantiles(first.freshness, last.freshness); ok {
		fmt.Fprintf(tw, "freshness (accepted → in Redis features)\tp50 %.2f s, p99 %.2f s\n", p50, p99)
	}
	return tw.Flush()
}

// histQuantiles returns p50 and p99 of the observations between two scrapes
// of a cumulative histogram, interpolating linearly within buckets.
func histQuantiles(before, after *dto.Histogram) (p50, p99 float64, ok bool) {
	if after == nil {
		return 0, 0, false
	}
	prev := map[float64]uint64{}
	var prevCount uint64
	if before != nil {
		for _, b := range before.Bucket {
			prev[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		prevCount = before.GetSampleCount()
	}
	total := after.GetSampleCount() - prevCount
	if total == 0 {
		return 0, 0, false
	}
	type bucket struct{ upper, cum float64 }
	var bs []bucket
	for _, b := range after.Bucket {
		bs = append(bs, bucket{b.GetUpperBound(), float64(b.GetCumulativeCount() - prev[b.GetUpperBound()])})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	q := func(p float64) float64 {
		rank := p * float64(total)
		lower, below := 0.0, 0.0
		for _, b := range bs {
			if b.cum >= rank {
				if b.cum == below {
					return b.upper
				}
				return lower + (b.upper-lower)*(rank-below)/(b.cum-below)
			}
			lower, below = b.upper, b.cum
		}
		return math.Inf(1)
	}
	return q(0.50), q(0.99), true
}
