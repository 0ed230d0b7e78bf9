// Package loadtest owns the service's HTTP load generator: an open-loop
// constant-rate load (latency measured from each request's scheduled send
// time, so a slow server cannot hide queueing) against one endpoint, and a
// step search for the highest rate that keeps p99 under a bound; the cost
// of a query (cost.go), websocket subscribers (live.go), and a watcher of a
// running server's ingestion metrics (watchingest.go).
package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Options configures a run. Zero values take the defaults.
type Options struct {
	URL         string            // target, e.g. http://127.0.0.1:8000/graphql
	Body        []byte            // POST body; nil sends GET
	Headers     map[string]string // extra headers
	Rate        float64           // requests per second (default 1000)
	Duration    time.Duration     // default 10 s
	Concurrency int               // in-flight bound (default 256)
	// Check validates a response body; a non-nil error counts the request as failed.
	Check func(status int, body []byte) error
}

// Result summarises a run.
type Result struct {
	Rate          float64 // offered
	Sent, Errors  int
	OK            int     // completed without error
	Achieved      float64 // completed requests per second
	P50, P90, P99 time.Duration
	Max           time.Duration
	FirstError    string
}

func (r Result) String() string {
	s := fmt.Sprintf("offered %6.0f/s  achieved %6.0f/s  sent %7d  errors %d  p50 %7s  p90 %7s  p99 %7s  max %7s",
		r.Rate, r.Achieved, r.Sent, r.Errors, round(r.P50), round(r.P90), round(r.P99), round(r.Max))
	if r.FirstError != "" {
		s += "  first error: " + r.FirstError
	}
	return s
}

func round(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	default:
		return d.Round(10 * time.Microsecond)
	}
}

// Run offers opts.Rate requests per second for opts.Duration. It stops
// early when ctx ends.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Rate <= 0 {
		opts.Rate = 1000
	}
	if opts.Duration <= 0 {
		opts.Duration = 10 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 256
	}
	client := newClient(opts.Concurrency)
	n := int(opts.Rate * opts.Duration.Seconds())
	interval := time.Duration(float64(time.Second) / opts.Rate)
	type job struct{ scheduled time.Time }
	jobs := make(chan job, opts.Concurrency)
	lat := make([]time.Duration, 0, n)
	var (
		mu       sync.Mutex
		errs     int
		firstErr string
		wg       sync.WaitGroup
	)
	record := func(d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		lat = append(lat, d)
		if err != nil {
			errs++
			if firstErr == "" {
				firstErr = err.Error()
			}
		}
	}
	for range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				err := do(ctx, client, opts)
				record(time.Since(j.scheduled), err)
			}
		}()
	}
	start := time.Now()
	sent := 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		jobs <- job{scheduled: at}
		sent++
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	res := summarize(lat, elapsed, errs, firstErr)
	res.Rate, res.Sent = opts.Rate, sent
	return res, ctx.Err()
}

func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute},
	}
}

// summarize makes the Result of the latencies of the completed requests
// (sorted in place) over elapsed.
func summarize(lat []time.Duration, elapsed time.Duration, errs int, firstErr string) Result {
	slices.Sort(lat)
	res := Result{Errors: errs, OK: len(lat) - errs, FirstError: firstErr, Achieved: float64(len(lat)) / elapsed.Seconds()}
	if len(lat) > 0 {
		q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		res.P50, res.P90, res.P99, res.Max = q(0.50), q(0.90), q(0.99), lat[len(lat)-1]
	}
	return res
}

func do(ctx context.Context, client *http.Client, opts Options) error {
	method := http.MethodGet
	var body io.Reader
	if opts.Body != nil {
		method, body = http.MethodPost, bytes.NewReader(opts.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, opts.URL, body)
	if err != nil {
		return err
	}
	if opts.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range opts.Headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if opts.Check != nil {
		return opts.Check(resp.StatusCode, b)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// FindMax offers increasing rates (each for step) and returns every result
// and the highest rate whose p99 stayed within bound without errors.
func FindMax(ctx context.Context, opts Options, rates []float64, bound time.Duration) (results []Result, best float64, err error) {
	for _, r := range rates {
		o := opts
		o.Rate = r
		res, err := Run(ctx, o)
		results = append(results, res)
		if err != nil {
			return results, best, err
		}
		if res.Errors > 0 || res.P99 > bound || res.Achieved < 0.95*r {
			break
		}
		best = r
	}
	return results, best, nil
}
