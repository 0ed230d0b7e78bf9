package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/loadtest"
	"github.com/surgeworks/surge/redisconn"
)

// defaultLoadQuery is the README's price query.
const defaultLoadQuery = `{ price(input: {regionId: "berlin", productType: "ride"}) { quoteId price surgeMultiplier degraded } }`

func newLoadtestCmd() *cobra.Command {
	var (
		url, query, pid string
		rate            float64
		duration        time.Duration
		findMax         bool
		bound           time.Duration
		rates           []float64
		live, hold      int
		cost            bool
		runs, conns     int
		liveRate        float64
		redisAddr       string
	)
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Offer a constant GraphQL price load to a running server and print latency percentiles",
		Long: `loadtest sends the price query at a constant rate (open loop: latency counts from each
request's scheduled time) to a server on this machine and prints p50/p90/p99. With
--find-max it steps through --rates and reports the highest rate whose p99 stays within
--p99-bound without errors. With --pid it also prints the server's peak RSS.

--live N connects N surgeUpdated subscribers (10 per websocket), publishes --live-rate
surge changes per second of berlin/ride on Redis (--redis-addr) for --duration, as a
replica's quote service does, and prints the delay from publication to each subscriber.
--hold-subscriptions N opens N subscriptions of berlin first (printing the server's RSS
before and after with --pid) and keeps them open during the price load; --rate 0 then
only holds them for --duration.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, _ := json.Marshal(map[string]string{"query": query})
			opts := loadtest.Options{URL: url, Body: body, Rate: rate, Duration: duration, Check: checkGraphQL}
			out := cmd.OutOrStdout()
			printRSS := func(when string) error {
				if pid == "" {
					return nil
				}
				rss, err := peakRSS(pid)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "server RSS %s %s, peak %s\n", when, rss[0], rss[1])
				return nil
			}
			if cost {
				n, err := strconv.Atoi(pid)
				if err != nil {
					return fmt.Errorf("--cost needs the server's --pid: %w", err)
				}
				if err := runCost(cmd.Context(), out, opts, n, runs, conns); err != nil {
					return err
				}
				return printRSS("after")
			}
			if live > 0 {
				rdb := redisconn.New(redis.UniversalOptions{Addrs: splitList(redisAddr)})
				defer rdb.Close()
				res, err := loadtest.RunLive(cmd.Context(), loadtest.LiveOptions{URL: url, Subscribers: live, Rate: liveRate, Duration: duration, Redis: rdb})
				if err != nil {
					return err
				}
				fmt.Fprintln(out, res)
				return printRSS("after")
			}
			if hold > 0 {
				if err := printRSS("before the subscriptions"); err != nil {
					return err
				}
				subs, err := loadtest.Subscribe(cmd.Context(), url, hold, max(1, hold/50), []string{"berlin"}, nil)
				if err != nil {
					return err
				}
				defer subs.Close()
				fmt.Fprintf(out, "%d subscriptions open\n", hold)
				if err := printRSS("with them"); err != nil {
					return err
				}
				if rate <= 0 {
					time.Sleep(duration)
					return printRSS("after holding them")
				}
			}
			if !findMax {
				res, err := loadtest.Run(cmd.Context(), opts)
				fmt.Fprintln(out, res)
				if err != nil {
					return err
				}
			} else {
				results, best, err := loadtest.FindMax(cmd.Context(), opts, rates, bound)
				for _, r := range results {
					fmt.Fprintln(out, r)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "highest rate with p99 ≤ %s and no errors: %.0f/s\n", bound, best)
			}
			if pid != "" {
				rss, err := peakRSS(pid)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "server RSS now %s, peak %s\n", rss[0], rss[1])
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:8000/graphql", "GraphQL endpoint")
	f.StringVar(&query, "query", defaultLoadQuery, "GraphQL query to send")
	f.Float64Var(&rate, "rate", 1000, "requests per second offered")
	f.DurationVar(&duration, "duration", 10*time.Second, "duration of a run (of each step with --find-max)")
	f.BoolVar(&findMax, "find-max", false, "step through --rates to find the highest rate meeting --p99-bound")
	f.DurationVar(&bound, "p99-bound", 20*time.Millisecond, "p99 bound for --find-max")
	f.Float64SliceVar(&rates, "rates", []float64{1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000}, "rates for --find-max")
	f.StringVar(&pid, "pid", "", "server process id whose peak RSS to print")
	f.IntVar(&live, "live", 0, "measure surge change delivery to this many subscribers instead of the price load")
	f.Float64Var(&liveRate, "live-rate", 20, "surge changes published per second with --live")
	f.StringVar(&redisAddr, "redis-addr", "127.0.0.1:6379", "Redis the server reads surge changes from (--live); several comma-separated for a cluster")
	f.IntVar(&hold, "hold-subscriptions", 0, "surgeUpdated subscriptions to open and hold during the price load")
	f.BoolVar(&cost, "cost", false, "measure the cost of the query (needs --pid): closed-loop throughput against { __typename }, then --runs open-loop runs at --rate with the server's CPU time per request")
	f.IntVar(&runs, "runs", 3, "open-loop runs of --cost (medians are reported)")
	f.IntVar(&conns, "connections", 32, "connections of the closed-loop runs of --cost")
	return cmd
}

// checkGraphQL counts non-2xx answers and GraphQL errors as failures.
func checkGraphQL(status int, body []byte) error {
	if status/100 != 2 {
		return fmt.Errorf("status %d", status)
	}
	var r struct {
		Errors []struct{ Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	if len(r.Errors) > 0 {
		return errors.New(r.Errors[0].Message)
	}
	return nil
}

// peakRSS reads the resident memory of a process from /proc: VmRSS (now)
// and VmHWM (peak).
func peakRSS(pid string) ([2]string, error) {
	var out [2]string
	if _, err := strconv.Atoi(pid); err != nil {
		return out, fmt.Errorf("--pid %q: not a process id", pid)
	}
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return out, fmt.Errorf("read server memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			out[0] = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			out[1] = strings.TrimSpace(v)
		}
	}
	if out[1] == "" {
		return out, errors.New("VmHWM not found")
	}
	return out, nil
}

// runCost prints what the query costs the server: first the open-loop runs
// (so the closed loop's backlog in the consumers does not count in them), (issue targets: ≤ 100 µs
// of CPU per quote, ≥ 0.6 × the { __typename } throughput, p99 ≤ 5 ms at
// 1,000/s as the median of the runs).
func runCost(ctx context.Context, out io.Writer, opts loadtest.Options, pid, runs, conns int) error {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	answered := 0
	fmt.Fprintf(out, "== open loop at %.0f/s, %d runs of %s\n", opts.Rate, runs, opts.Duration)
	var costs []loadtest.Cost
	for i := range runs {
		c, err := loadtest.MeasureCost(ctx, opts, pid)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "run %d  %s\n", i+1, c)
		answered += c.OK
		costs = append(costs, c)
	}
	closed := opts
	closed.Concurrency, closed.Duration = conns, min(opts.Duration, 5*time.Second)
	typename := closed
	typename.Body = []byte(`{"query":"{ __typename }"}`)
	fmt.Fprintf(out, "== closed loop, %d connections, %s each\n", conns, closed.Duration)
	tn, err := loadtest.Closed(ctx, typename)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "{ __typename }  %s\n", tn)
	pr, err := loadtest.Closed(ctx, closed)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "price           %s\n", pr)
	answered += pr.OK
	ratio := pr.Achieved / tn.Achieved
	median := func(f func(loadtest.Cost) time.Duration) time.Duration {
		v := make([]time.Duration, len(costs))
		for i, c := range costs {
			v[i] = f(c)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	per := median(func(c loadtest.Cost) time.Duration { return c.PerRequest })
	p50 := median(func(c loadtest.Cost) time.Duration { return c.P50 })
	p99 := median(func(c loadtest.Cost) time.Duration { return c.P99 })
	fmt.Fprintf(out, "== cost (medians of %d runs)\n", runs)
	fmt.Fprintf(out, "server CPU per request  %s  (target ≤ 100µs: %s)\n", per.Round(time.Microsecond), verdict(per <= 100*time.Microsecond))
	fmt.Fprintf(out, "price / { __typename }  %.2f  (%.0f/s against %.0f/s; target ≥ 0.6: %s)\n", ratio, pr.Achieved, tn.Achieved, verdict(ratio >= 0.6))
	fmt.Fprintf(out, "latency at %.0f/s        p50 %s  p99 %s  (target p99 ≤ 5ms: %s)\n", opts.Rate, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), verdict(p99 <= 5*time.Millisecond))
	fmt.Fprintf(out, "answered without error  %d\n", answered)
	return nil
}
