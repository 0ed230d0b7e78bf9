package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/replay"
	"github.com/surgeworks/surge/simulate"
	"github.com/surgeworks/surge/training"
)

func newSimulateCmd() *cobra.Command {
	var (
		cfg         config
		sender      senderFlags
		regions     int
		rate        float64
		duration    time.Duration
		seed        uint64
		users       int
		supplyEvery time.Duration
		signalEvery time.Duration
		burstEvery  time.Duration
		experiment  string
		history     bool
		days        int
		outPath     string
		shop        shopperFlags
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Send realistic synthetic live traffic to the intake, or write a synthetic history file",
		Long: `simulate sends synthetic marketplace events, timestamped now, to the intake
(POST /v1/events) with the same client as replay (batches, concurrent senders, retries).

Demand per region follows the generator the bootstrap model was trained on: daily and
weekly seasonality in the region's local time, regional base rates, weather, traffic and
local-event episodes (sent as external_signal events every --signal-every), and supply
following demand about 15 minutes late (supply_update events every --supply-every).
Searches come from a pool of users; some convert into bookings a few seconds later, a few
bookings are cancelled. On top come bursts: 1-4 minutes of 1.5-3× demand in one region
(about one per region every --burst-every) that supply cannot follow — that is what moves
prices.

--rate 0 (the default) keeps the generator's own scale: the five demo regions send about
3-12 events/s together depending on the hour, the scale the bootstrap model learned, so
prices react to the traffic. --rate R holds the total at R events/s (seasonality, episodes
and bursts then decide how it is shared among regions): for benchmarks, e.g.
--rate 50000 --senders 8. Regions are berlin, paris, london, nyc, sf, then
region-6, region-7, … for --regions above 5.

With --history, simulate writes --days of history ending at the current hour to --out
(.csv, .jsonl or .ndjson, .gz to compress) instead of sending: per minute and region
exactly the generator's searches, bookings, cancellations, one supply update and three
signals, ready for "surge replay --file F --max". --seed 0 and --days 14 give the events
of the bootstrap model's history.

With --shoppers, simulate sends customers instead of events: each session asks for a price
with a userId from a pool of --users shoppers (5,000 by default), so running experiments
enrol them, and books it through POST /v1/book with a probability that depends on the
shopper (a propensity that stays with them), on the price against the market's recent
mean (--elasticity) and on the variant that priced it (--lift cheaper=0.15: that variant's
shoppers book 15 % more, the ground truth the experiment results should find); a few
bookings are cancelled (--cancel-rate). The API is the --url without /v1/events; the
shoppers send the key in CLIENT_API_KEY (the client role; none needed on surge dev).`,
		Example: `  surge simulate                               # demo traffic until Ctrl-C
  surge simulate --rate 50000 --senders 8 --duration 60s
  surge simulate --history --days 14 --out history.csv.gz
  surge simulate --shoppers --shop-rate 50 --lift cheaper=0.15 --duration 10m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			if regions < 1 {
				return fmt.Errorf("--regions %d: want at least 1", regions)
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			specs := simulate.Regions(regions)
			if shop.on {
				return shop.run(ctx, out, logger, &sender, specs, users, seed, duration)
			}

			if history {
				h, err := simulate.NewHistory(simulate.HistoryOptions{
					Regions: specs, Days: days, Seed: seed, Users: users, Experiment: experiment,
				})
				if err != nil {
					return err
				}
				w, closer, err := replay.Create(outPath)
				if err != nil {
					return fmt.Errorf("history file: %w", err)
				}
				fmt.Fprintf(out, "writing %d days of history of %d regions (%d events, from %s) to %s\n",
					days, regions, h.Events(), h.Start().Format(time.RFC3339), outPath)
				var n atomic.Int64
				stop := startProgress(out, logger, "history", h.Events(), n.Load)
				werr := h.Write(ctx, func(ev ingest.Event) error {
					n.Add(1)
					return w.Write(ev)
				})
				ferr := w.Flush()
				cerr := closer.Close()
				stop()
				if err := cmp.Or(werr, ferr, cerr); err != nil {
					return fmt.Errorf("write history %s: %w", outPath, err)
				}
				size := ""
				if fi, err := os.Stat(outPath); err == nil {
					size = fmt.Sprintf(" (%.1f MB)", float64(fi.Size())/1e6)
				}
				fmt.Fprintf(out, "wrote %d events to %s%s; load them with: surge replay --file %s --max\n", n.Load(), outPath, size, outPath)
				return nil
			}

			g, err := simulate.New(simulate.Options{
				Regions: specs, Start: time.Now(), Seed: seed, Rate: rate, Users: users,
				SupplyInterval: supplyEvery, SignalInterval: signalEvery, BurstEvery: burstEvery, Experiment: experiment,
			})
			if err != nil {
				return err
			}
			client, err := sender.client(logger)
			if err != nil {
				return err
			}
			ids := make([]string, len(specs))
			for i, r := range specs {
				ids[i] = r.ID
			}
			opts := g.Options()
			scale := fmt.Sprintf("%.0f events/s", rate)
			if rate == 0 {
				scale = fmt.Sprintf("the generator's own rate (now about %.1f events/s)", g.ExpectedRate())
			}
			until := "until interrupted"
			var total int64
			if duration > 0 {
				until = "for " + duration.String()
				total = int64(g.ExpectedRate() * duration.Seconds())
			}
			fmt.Fprintf(out, "simulating %s at %s %s to %s (seed %d, %d users, ids %s-…)\n",
				strings.Join(ids, ", "), scale, until, sender.url, seed, opts.Users, opts.IDPrefix)

			started := opts.Start // the schedule's start: the rate is measured against it
			deadline := opts.Start.Add(duration)
			stream := client.Stream(ctx)
			stop := startProgress(out, logger, "simulate", total, func() int64 { return client.Stats().Done() })
			var (
				buf     []ingest.Event
				at      time.Time
				sendErr error
				byType  = map[string]int64{}
				lastTS  time.Time
			)
		generate:
			for {
				buf, at = g.Next(buf[:0])
				if duration > 0 && !at.Before(deadline) {
					break
				}
				for _, ev := range buf {
					if time.Until(ev.Timestamp) > 2*time.Millisecond {
						if sendErr = sleepUntil(ctx, ev.Timestamp); sendErr != nil {
							break generate
						}
					}
					if sendErr = stream.Send(ctx, ev); sendErr != nil {
						break generate
					}
					byType[ev.Type]++
					lastTS = ev.Timestamp
				}
			}
			behind := time.Since(lastTS)
			closeErr := stream.Close()
			stop()
			elapsed := time.Since(started)

			var parts []string
			for _, typ := range []string{ingest.TypeSearch, ingest.TypeBooking, ingest.TypeCancel, ingest.TypeSupplyUpdate, ingest.TypeExternalSignal} {
				parts = append(parts, fmt.Sprintf("%d %s", byType[typ], typ))
			}
			fmt.Fprintf(out, "generated %s\n", strings.Join(parts, ", "))
			if !lastTS.IsZero() && behind > 2*time.Second {
				fmt.Fprintf(out, "sending fell %s behind the schedule: the intake (or this machine) did not keep up\n", behind.Round(time.Millisecond))
			}
			p50, p99 := client.Latency()
			printSendSummary(out, client.Stats(), p50, p99, elapsed)
			if ctx.Err() != nil { // Ctrl-C: the usual end of an unbounded run
				return nil
			}
			if err := cmp.Or(sendErr, closeErr); err != nil {
				return fmt.Errorf("simulate: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&regions, "regions", 5, "number of regions: the demo regions, then region-6, region-7, …")
	f.Float64Var(&rate, "rate", 0, "total events/s across regions; 0: the generator's own scale (about 3-12/s for the demo regions)")
	f.DurationVar(&duration, "duration", 0, "how long to send; 0: until interrupted")
	f.Uint64Var(&seed, "seed", 0, "random seed: the same seed and start give the same traffic")
	f.IntVar(&users, "users", 0, "size of the user pool; 0: ten seconds of traffic (at least 200; history: a twentieth of its user events, at least 1,000; --shoppers: 5,000)")
	f.DurationVar(&supplyEvery, "supply-every", 5*time.Second, "time between a region's supply updates")
	f.DurationVar(&signalEvery, "signal-every", time.Minute, "time between a region's external signals (weather, traffic, event)")
	f.DurationVar(&burstEvery, "burst-every", 15*time.Minute, "mean time between demand bursts of a region; negative: none")
	f.StringVar(&experiment, "experiment", "", "experiment id put on searches and bookings (variants control and treatment, by user)")
	f.BoolVar(&history, "history", false, "write a history file (--days, --out) instead of sending live traffic")
	f.IntVar(&days, "days", 14, "days of history (--history)")
	f.StringVar(&outPath, "out", "", "history file to write (--history): .csv, .jsonl or .ndjson, optionally .gz")
	shop.add(f)
	sender.add(f)
	cfg.addToolLogFlags(f)
	cmd.MarkFlagsRequiredTogether("history", "out")
	for _, live := range []string{"rate", "duration", "supply-every", "signal-every", "burst-every", "url", "api-key-file", "senders", "batch"} {
		cmd.MarkFlagsMutuallyExclusive("history", live)
	}
	for _, events := range []string{"history", "rate", "supply-every", "signal-every", "burst-every", "experiment"} {
		cmd.MarkFlagsMutuallyExclusive("shoppers", events)
	}
	return cmd
}

// shopperFlags are the flags of simulate --shoppers.
type shopperFlags struct {
	on                                 bool
	rate, conversion, elasticity, canc float64
	lift                               map[string]string
}

func (s *shopperFlags) add(f *pflag.FlagSet) {
	f.BoolVar(&s.on, "shoppers", false, "simulate shoppers (price queries with a userId, bookings, cancellations) instead of events")
	f.Float64Var(&s.rate, "shop-rate", 20, "shopping sessions per second (--shoppers)")
	f.Float64Var(&s.conversion, "conversion", 0.10, "probability that an average shopper books at the market's mean price (--shoppers)")
	f.Float64Var(&s.elasticity, "elasticity", 1, "price elasticity of booking: p ∝ (price/mean price)^-elasticity; negative: blind to the price (--shoppers)")
	f.StringToStringVar(&s.lift, "lift", nil, "extra booking probability of the shoppers a variant prices, by variant name, e.g. cheaper=0.15 (--shoppers)")
	f.Float64Var(&s.canc, "cancel-rate", 0.05, "probability that a booking is cancelled; negative: none (--shoppers)")
}

func (s *shopperFlags) run(ctx context.Context, out io.Writer, logger *slog.Logger, sender *senderFlags,
	specs []training.RegionSpec, users int, seed uint64, duration time.Duration) error {
	lift := map[string]float64{}
	for name, v := range s.lift {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("--lift %s=%s: want a number", name, v)
		}
		lift[name] = f
	}
	events, err := sender.client(logger)
	if err != nil {
		return err
	}
	regions := make([]string, len(specs))
	for i, r := range specs {
		regions[i] = r.ID
	}
	api := strings.TrimSuffix(strings.TrimRight(sender.url, "/"), "/v1/events")
	sh, err := simulate.NewShoppers(simulate.ShopperOptions{
		APIURL: api, APIKey: os.Getenv("CLIENT_API_KEY"), Events: events, Regions: regions, Users: users, Rate: s.rate,
		Conversion: s.conversion, Elasticity: s.elasticity, Lift: lift, CancelRate: s.canc, Seed: seed, Logger: logger,
	})
	if err != nil {
		return err
	}
	until := "until interrupted"
	if duration > 0 {
		until = "for " + duration.String()
	}
	fmt.Fprintf(out, "shopping in %s at %g sessions/s %s against %s (seed %d, user ids %s…)\n",
		strings.Join(regions, ", "), s.rate, until, api, seed, sh.UserID(0))
	started := time.Now()
	st := sh.Run(ctx, duration)
	keys := slices.Sorted(maps.Keys(st.Variants))
	fmt.Fprintf(out, "%d sessions in %s, %d failed\n", st.Sessions, time.Since(started).Round(time.Second), st.Errors)
	for _, k := range keys {
		v, name := st.Variants[k], k
		if name == "" {
			name = "(not enrolled)"
		}
		conv := 0.0
		if v.Quotes > 0 {
			conv = float64(v.Bookings) / float64(v.Quotes)
		}
		fmt.Fprintf(out, "  %-24s %7d quotes %6d bookings (%.1f %% of quotes) %5d cancelled, revenue %.2f\n",
			name, v.Quotes, v.Bookings, 100*conv, v.Cancels, v.Revenue)
	}
	return nil
}
