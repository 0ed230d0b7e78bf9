package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunOffersTheRateAndCountsErrors(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1)%10 == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		time.Sleep(2 * time.Millisecond)
		_, _ = w.Write([]byte(`{"data":{}}`))
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Options{URL: srv.URL, Body: []byte(`{}`), Rate: 500, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 500 || hits.Load() != 500 {
		t.Fatalf("sent %d, server saw %d, want 500", res.Sent, hits.Load())
	}
	if res.Errors != 50 {
		t.Fatalf("errors %d, want 50 (every 10th answered 500)", res.Errors)
	}
	if res.P50 < 2*time.Millisecond || res.P99 < res.P50 || res.Max < res.P99 {
		t.Fatalf("latencies p50 %s p99 %s max %s: want ≥ 2ms and ordered", res.P50, res.P99, res.Max)
	}
}

func TestFindMaxStopsAtTheBound(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond)
	}))
	defer srv.Close()
	check := func(status int, _ []byte) error {
		if status != 200 {
			return errors.New("bad status")
		}
		return nil
	}
	// 5 ms per request: a bound of 1 ms fails at once, a bound of 1 s passes
	// every step. The rates are low and the steps long, so that a busy
	// machine still achieves 95 % of each rate (the last request of a step
	// has about 100 ms to complete).
	opts := Options{URL: srv.URL, Duration: 2 * time.Second, Check: check}
	_, best, err := FindMax(context.Background(), opts, []float64{5, 10}, time.Millisecond)
	if err != nil || best != 0 {
		t.Fatalf("best %v err %v, want 0: no rate meets a 1 ms p99 at 5 ms per request", best, err)
	}
	results, best, err := FindMax(context.Background(), opts, []float64{5, 10}, time.Second)
	if err != nil || best != 10 || len(results) != 2 {
		t.Fatalf("best %v after %d steps (%v) err %v, want 10 after 2", best, len(results), results, err)
	}
}

// TestClosedAndCost: the closed loop keeps its connections busy for the
// duration; the CPU time of a process grows with the work it does.
func TestClosedAndCost(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"data":{}}`))
	}))
	defer srv.Close()
	res, err := Closed(context.Background(), Options{URL: srv.URL, Body: []byte(`{}`), Concurrency: 4, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK == 0 || res.Errors != 0 || res.Achieved <= 0 || int64(res.OK) > hits.Load() {
		t.Fatalf("closed loop: %+v, server saw %d", res, hits.Load())
	}
	pid := os.Getpid()
	before, err := ProcessCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	after := before
	for round := 0; after-before < 30*time.Millisecond; round++ {
		if round == 1000 {
			t.Fatalf("CPU time stuck at %s after 1,000 rounds of work", after)
		}
		for i := range 100_000 {
			_ = fmt.Sprint(i)
		}
		if after, err = ProcessCPU(pid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("ProcessCPU of no process succeeded")
	}
}
