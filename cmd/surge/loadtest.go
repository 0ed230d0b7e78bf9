package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/loadtest"
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
			if live > 0 {
				rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
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
	f.StringVar(&redisAddr, "redis-addr", "127.0.0.1:6379", "Redis the server reads surge changes from (--live)")
	f.IntVar(&hold, "hold-subscriptions", 0, "surgeUpdated subscriptions to open and hold during the price load")
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
