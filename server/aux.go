package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Aux is an auxiliary listener (pprof, or /metrics on its own port), with
// the timeouts of the main one.
type Aux struct {
	name    string
	ln      net.Listener
	handler http.Handler
	logger  *slog.Logger
}

// Pprof serves net/http/pprof's handlers at /debug/pprof/ on addr, which
// must be a loopback address unless allowRemote: profiles show the
// process's memory and code.
func Pprof(addr string, allowRemote bool, logger *slog.Logger) (*Aux, error) {
	if !allowRemote && !isLoopback(addr) {
		return nil, fmt.Errorf("pprof address %s is not a loopback address (set --pprof-allow-remote to serve it there)", addr)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return newAux("pprof", addr, mux, logger)
}

// Ops serves only the operational endpoints, /health, /ready (running
// checks) and /metrics (reg), on addr: the listener of a process without
// an API, such as `surge consume`.
func Ops(addr string, reg *prometheus.Registry, checks map[string]Check, logger *slog.Logger) (*Aux, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", health)
	mux.Handle("/ready", ready(checks))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return newAux("operational endpoints", addr, mux, logger)
}

func newAux(name, addr string, h http.Handler, logger *slog.Logger) (*Aux, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	return &Aux{name: name, ln: ln, handler: h, logger: logger}, nil
}

// isLoopback tells whether a listen address binds loopback only ("" or
// 0.0.0.0 bind every interface).
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Addr is the address listened on.
func (a *Aux) Addr() string { return a.ln.Addr().String() }

// Run serves until ctx ends. A profile may take a minute (seconds=60):
// writes are bounded at 90 s.
func (a *Aux) Run(ctx context.Context) error {
	hs := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(a.ln) }()
	a.logger.Info("serving "+a.name, "addr", a.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", a.name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return nil
}
