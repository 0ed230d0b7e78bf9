package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/surgeworks/surge/resolvers"
)

// TestPprofLoopbackOnly: pprof binds loopback addresses only, unless
// allowed explicitly.
func TestPprofLoopbackOnly(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		addr  string
		allow bool
		ok    bool
	}{
		{"127.0.0.1:0", false, true},
		{"[::1]:0", false, true},
		{"localhost:0", false, true},
		{"0.0.0.0:0", false, false},
		{":0", false, false},
		{"0.0.0.0:0", true, true},
	} {
		a, err := Pprof(c.addr, c.allow, logger)
		if (err == nil) != c.ok {
			t.Errorf("Pprof(%q, allow %v): %v", c.addr, c.allow, err)
		}
		if a != nil {
			a.ln.Close()
		}
	}
	a, err := Pprof("127.0.0.1:0", false, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	res, err := http.Get("http://" + a.Addr() + "/debug/pprof/cmdline")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("pprof: %v %v", res, err)
	}
	res.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestMetricsListener: with MetricsAddr, /metrics is served there and not
// on the API's listener.
func TestMetricsListener(t *testing.T) {
	s := New(&resolvers.Resolver{}, testAuth(), nil, Options{Addr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	get := func(url string) (int, string) {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("http://" + s.aux.Addr() + "/metrics"); code != http.StatusOK || !strings.Contains(body, "promhttp_metric_handler_errors_total") {
		t.Errorf("metrics listener: %d %.200s", code, body)
	}
	if code, body := get("http://" + s.Addr() + "/metrics"); strings.Contains(body, "promhttp_metric_handler_errors_total") {
		t.Errorf("the API listener serves metrics too: %d", code)
	}
	if code, _ := get("http://" + s.Addr() + "/health"); code != http.StatusOK {
		t.Errorf("health: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
