package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/intakeclient"
	"github.com/surgeworks/surge/replay"
)

func newReplayCmd() *cobra.Command {
	var (
		cfg      config
		sender   senderFlags
		file     string
		speed    float64
		maxSpeed bool
		backfill string
		lateness time.Duration
		strict   bool
	)
	cmd := &cobra.Command{
		Use:   "replay --file events.csv|events.jsonl",
		Short: "Feed a recorded event history through the ingestion API",
		Long: `replay reads a recorded history and posts its events to the intake (POST /v1/events)
in batches of up to 1,000 with several concurrent senders, retrying with backoff (and the
server's Retry-After) on 429, 503 and connection errors. Retries resend the same eventIds,
which the intake deduplicates, so a replay — or the same replay twice — counts each event once.

Formats, by file name (.gz for gzip):
  .csv             a header, then one event per line. Required columns: timestamp,
                   regionId, type. Optional: eventId, userId, productType, price,
                   availableSupply, signal, value, quoteId, experimentId,
                   experimentVariant (any order; case and "_" ignored: region_id works;
                   other columns are skipped). timestamp is RFC 3339, "2006-01-02
                   15:04:05" (UTC) or Unix seconds (milliseconds above 10^12).
  .jsonl, .ndjson  one event object per line, as POST /v1/events takes them.
An event without eventId gets one derived from its line number and content (the first
16 bytes, in hex, of sha256 of "<line number>\n<content>"; the content of a CSV line is
its fields joined by 0x1f), so replaying the same file again is deduplicated.

Pace: --speed N replays N times faster than recorded (event-time gaps divided by N;
default 1, the recorded pace); --max sends as fast as the intake takes them.

Backfill: the intake refuses live events older than its accepted lateness (24 h by
default). With --backfill auto, events older than --lateness when they are sent go as
backfill (they skip the live features and land in ClickHouse only); true marks every
event, false none.

Malformed lines are reported with their line numbers, counted and skipped (--strict
stops at the first). On a terminal a progress bar shows the rate and ETA; otherwise a
log line every 10 s. The summary counts accepted, duplicate and rejected events.`,
		Example: `  surge simulate --history --days 14 --out history.csv
  surge replay --file history.csv --max
  INGEST_API_KEY=sk_… surge replay --file events.jsonl --speed 60`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			mode, err := replay.ParseBackfill(backfill)
			if err != nil {
				return err
			}
			if speed <= 0 {
				return fmt.Errorf("--speed %v: want a positive factor (or --max)", speed)
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()

			total, err := replay.CountRecords(file)
			if err != nil {
				return fmt.Errorf("history %s: %w", file, err)
			}
			rd, closer, err := replay.Open(file)
			if err != nil {
				return fmt.Errorf("history: %w", err)
			}
			defer closer.Close()
			if ign := rd.Ignored(); len(ign) > 0 {
				logger.Warn("replay: columns that name no event field are skipped", "columns", strings.Join(ign, ","))
			}
			client, err := sender.client(logger)
			if err != nil {
				return err
			}
			pace := fmt.Sprintf("at %g× the recorded pace", speed)
			if maxSpeed {
				pace = "as fast as possible"
			}
			fmt.Fprintf(out, "replaying %s (about %d events) to %s %s, backfill %s (lateness %s)\n",
				file, total, sender.url, pace, mode, lateness)

			started := time.Now()
			stream := client.Stream(ctx)
			stop := startProgress(out, logger, "replay", total, func() int64 { return client.Stats().Done() })
			sum, runErr := replay.Run(ctx, rd, stream, replay.Options{
				Speed: speed, Max: maxSpeed, Backfill: mode, Lateness: lateness, Strict: strict, Logger: logger,
			})
			closeErr := stream.Close()
			stop()
			elapsed := time.Since(started)

			fmt.Fprintf(out, "read %d events", sum.Events)
			if sum.Events > 0 {
				fmt.Fprintf(out, " from %s to %s", sum.First.Format(time.RFC3339), sum.Last.Format(time.RFC3339))
			}
			fmt.Fprintf(out, ", %d sent as backfill; %d malformed lines skipped\n", sum.Backfill, sum.Malformed)
			for _, le := range sum.MalformedLines {
				fmt.Fprintf(out, "  %s: %v\n", file, le)
			}
			p50, p99 := client.Latency()
			printSendSummary(out, client.Stats(), p50, p99, elapsed)
			if err := cmp.Or(runErr, closeErr); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("replay interrupted: %w", err)
				}
				return fmt.Errorf("replay: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "history to replay: .csv, .jsonl or .ndjson, optionally .gz")
	f.Float64Var(&speed, "speed", 1, "replay N times faster than recorded (event-time gaps divided by N)")
	f.BoolVar(&maxSpeed, "max", false, "send as fast as the intake takes the events")
	f.StringVar(&backfill, "backfill", "auto", "mark events as backfill: auto (those older than --lateness), true or false")
	f.DurationVar(&lateness, "lateness", replay.DefaultLateness, "the intake's accepted lateness: older events go as backfill (--backfill auto)")
	f.BoolVar(&strict, "strict", false, "stop at the first malformed line")
	sender.add(f)
	cfg.addToolLogFlags(f)
	_ = cmd.MarkFlagRequired("file")
	cmd.MarkFlagsMutuallyExclusive("speed", "max")
	return cmd
}

// senderFlags are the intake client settings shared by replay and simulate.
type senderFlags struct {
	url, keyFile   string
	senders, batch int
	attempts       int
	requestTimeout time.Duration
}

func (s *senderFlags) add(f *pflag.FlagSet) {
	f.StringVar(&s.url, "url", intakeclient.DefaultIntakeURL, help("event intake endpoint", "INGEST_URL"))
	f.StringVar(&s.keyFile, "api-key-file", "data/ingest-api-key", help("file holding the API key sent in X-Api-Key, used when it exists and INGEST_API_KEY is not set (the key needs the ingest role; supply for supply and signal events); surge dev writes data/ingest-api-key", "INGEST_API_KEY_FILE"))
	f.IntVar(&s.senders, "senders", 4, "concurrent requests")
	f.IntVar(&s.batch, "batch", 1000, "events per request (at most 1,000)")
	f.IntVar(&s.attempts, "attempts", 30, "attempts per batch before giving up (429, 503, 5xx, connection errors); enough to outlast an attempt still in flight at the intake")
	f.DurationVar(&s.requestTimeout, "request-timeout", 30*time.Second, "timeout of one request")
}

func (s *senderFlags) client(logger *slog.Logger) (*intakeclient.Client, error) {
	if s.batch < 1 || s.batch > 1000 {
		return nil, fmt.Errorf("--batch %d: want 1 to 1,000", s.batch)
	}
	if s.senders < 1 {
		return nil, fmt.Errorf("--senders %d: want at least 1", s.senders)
	}
	key, err := s.apiKey()
	if err != nil {
		return nil, err
	}
	return intakeclient.NewClient(intakeclient.ClientOptions{
		URL: s.url, APIKey: key, Senders: s.senders, BatchSize: s.batch,
		MaxAttempts: s.attempts, RequestTimeout: s.requestTimeout, Logger: logger,
	})
}

// apiKey is INGEST_API_KEY, else the key in --api-key-file when that file
// exists (a secret never travels in a flag, which shows in ps).
func (s *senderFlags) apiKey() (string, error) {
	if k := os.Getenv("INGEST_API_KEY"); k != "" {
		return k, nil
	}
	if s.keyFile == "" {
		return "", nil
	}
	k, err := auth.ReadKey(s.keyFile)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return k, err
}

// addToolLogFlags registers the log flags of the client tools (replay,
// simulate), which log as text by default.
func (c *config) addToolLogFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.LogFormat, "log-format", "text", help("log format: json or text", "LOG_FORMAT"))
	fs.StringVar(&c.LogLevel, "log-level", "info", help("log level: debug, info, warn, error", "LOG_LEVEL"))
}

// printSendSummary prints what the intake answered.
func printSendSummary(w io.Writer, st intakeclient.ClientStats, p50, p99, elapsed time.Duration) {
	rate := float64(st.Sent) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "sent %d events in %s (%.0f events/s): %d accepted, %d duplicate, %d rejected",
		st.Sent, elapsed.Round(time.Millisecond), rate, st.Accepted, st.Duplicate, st.Rejected)
	if st.Unconfirmed > 0 {
		fmt.Fprintf(w, ", %d without a status", st.Unconfirmed)
	}
	fmt.Fprintln(w)
	if st.Failed > 0 {
		fmt.Fprintf(w, "%d events in refused requests:\n", st.Failed)
		for _, e := range st.RequestErrors {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	if unsent := st.Queued - st.Done(); unsent > 0 {
		fmt.Fprintf(w, "%d events not delivered\n", unsent)
	}
	refused := float64(st.RateLimited+st.Unavailable) / float64(max(st.Requests, 1))
	fmt.Fprintf(w, "%d requests, %d retries (%d rate limited, %d unavailable: %.2f %% refused in whole or part; %d connection errors); request latency p50 %s, p99 %s\n",
		st.Requests, st.Retries, st.RateLimited, st.Unavailable, 100*refused, st.ConnErrors, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond))
	if len(st.Reasons) == 0 {
		return
	}
	type reason struct {
		kind string
		n    int64
	}
	var reasons []reason
	for k, n := range st.Reasons {
		reasons = append(reasons, reason{k, n})
	}
	slices.SortFunc(reasons, func(a, b reason) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.kind, b.kind)) })
	fmt.Fprintln(w, "rejections by reason:")
	for i, r := range reasons {
		if i == 10 {
			fmt.Fprintf(w, "  … %d more reasons\n", len(reasons)-10)
			break
		}
		fmt.Fprintf(w, "  %8d  %s\n", r.n, r.kind)
	}
	fmt.Fprintln(w, "first rejected events:")
	for _, r := range st.Rejections {
		fmt.Fprintf(w, "  %s: %s\n", r.EventID, strings.Join(r.Reasons, "; "))
	}
}

// startProgress shows progress until the returned stop is called: on a
// terminal a bar with count, rate and ETA (a spinner with count and rate
// when total ≤ 0 is unknown), otherwise a log line every 10 s.
func startProgress(w io.Writer, logger *slog.Logger, desc string, total int64, current func() int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		barMax := total
		if barMax <= 0 {
			barMax = -1 // a spinner
		}
		bar := progressbar.NewOptions64(barMax,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("events"),
			progressbar.OptionSetPredictTime(total > 0),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionSetRenderBlankState(true),
		)
		update := func() {
			v := current()
			if total > 0 && v > bar.GetMax64() {
				bar.ChangeMax64(v)
			}
			_ = bar.Set64(v)
		}
		wg.Go(func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					update()
					if total > 0 {
						_ = bar.Finish()
					} else {
						_ = bar.Exit()
					}
					fmt.Fprintln(w)
					return
				case <-t.C:
					update()
				}
			}
		})
	} else {
		wg.Go(func() {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			start := time.Now()
			last, lastAt := int64(0), start
			for {
				select {
				case <-done:
					return
				case now := <-t.C:
					v := current()
					rate := float64(v-last) / now.Sub(lastAt).Seconds()
					args := []any{"done", v, "rate", fmt.Sprintf("%.0f/s", rate), "elapsed", now.Sub(start).Round(time.Second)}
					if total > 0 {
						args = append(args, "total", total)
						if rate > 0 && v < total {
							args = append(args, "eta", time.Duration(float64(total-v)/rate*float64(time.Second)).Round(time.Second))
						}
					}
					logger.Info(desc+" progress", args...)
					last, lastAt = v, now
				}
			}
		})
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
