// Package server owns the HTTP surface of the service: one port serving
// /graphql (POST, GET, websocket), the dashboard at / and the playground at
// /playground (package web), /health, /ready and /metrics,
// with the request limits (body size, query depth and complexity, per-client
// rate), trace ids and request metrics around them.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/graph"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/resolvers"
	"github.com/surgeworks/surge/web"
)

// Options configures a Server. Zero values take the defaults.
type Options struct {
	// Addr to listen on (default 127.0.0.1:8000: loopback only).
	Addr string
	// MaxBodyBytes refuses larger request bodies with 413 (default 1 MiB).
	MaxBodyBytes int64
	// MaxDepth bounds the nesting of a query (default 12).
	MaxDepth int
	// MaxComplexity bounds a query's field count, with lists counted (default 1000).
	MaxComplexity int
	// RatePerClient is the sustained requests/s allowed per client address,
	// and RateBurst the burst (defaults 5,000/s and 10,000).
	RatePerClient float64
	RateBurst     int
	// DisableIntrospection refuses __schema and __type queries, and
	// DisablePlayground serves no /playground (for production, where the
	// schema need not be browsable).
	DisableIntrospection bool
	DisablePlayground    bool
	// WSWriteTimeout bounds a websocket write: a client that reads nothing
	// for that long is disconnected (default 10 s). WSPingInterval is how
	// often the server pings a graphql-transport-ws client (and sends a
	// keep-alive to a legacy graphql-ws one); a client that does not answer
	// within twice the interval is disconnected (default 10 s).
	WSWriteTimeout time.Duration
	WSPingInterval time.Duration
	Logger         *slog.Logger
	// Registry is where /metrics reads from and request metrics register.
	Registry *prometheus.Registry
}

func (o *Options) defaults() {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8000"
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = 12
	}
	if o.MaxComplexity <= 0 {
		o.MaxComplexity = 1000
	}
	if o.RatePerClient <= 0 {
		o.RatePerClient = 5000
	}
	if o.RateBurst <= 0 {
		o.RateBurst = 10000
	}
	if o.WSWriteTimeout <= 0 {
		o.WSWriteTimeout = 10 * time.Second
	}
	if o.WSPingInterval <= 0 {
		o.WSPingInterval = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
}

// Check is one readiness check: nil when the part is ready.
type Check func(ctx context.Context) error

// Server is the HTTP server.
type Server struct {
	opts    Options
	handler http.Handler
	mux     *http.ServeMux
	checks  map[string]Check

	mu       sync.Mutex
	listener net.Listener
}

// New builds the server around the root resolver. checks are run by /ready,
// by name.
func New(res *resolvers.Resolver, authn *auth.Authenticator, checks map[string]Check, opts Options) *Server {
	opts.defaults()
	s := &Server{opts: opts, checks: checks}
	m := newHTTPMetrics(opts.Registry)

	gql := handler.New(graph.NewExecutableSchema(graph.Config{Resolvers: res}))
	wsLimit := opts.MaxBodyBytes
	gql.AddTransport(transport.Websocket{
		Implementation:        wsImplementation{writeTimeout: opts.WSWriteTimeout},
		InitFunc:              wsInit(authn),
		InitTimeout:           10 * time.Second,
		KeepAlivePingInterval: opts.WSPingInterval,
		PingPongInterval:      opts.WSPingInterval,
		PayloadReadLimit:      &wsLimit,
	})
	gql.AddTransport(transport.Options{})
	gql.AddTransport(transport.GET{})
	gql.AddTransport(transport.POST{})
	gql.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	if opts.DisableIntrospection {
		gql.Use(noIntrospection{})
	} else {
		gql.Use(extension.Introspection{})
	}
	gql.Use(extension.FixedComplexityLimit(opts.MaxComplexity))
	gql.Use(depthLimit{max: opts.MaxDepth})
	gql.Use(m)
	gql.SetErrorPresenter(resolvers.ErrorPresenter(opts.Logger))
	gql.SetRecoverFunc(func(ctx context.Context, err any) error {
		opts.Logger.ErrorContext(ctx, "panic in resolver", "panic", fmt.Sprint(err), "trace_id", resolvers.TraceID(ctx))
		return errors.New("internal error")
	})

	limiter := newRateLimiter(opts.RatePerClient, opts.RateBurst, m.rateLimited)
	var api http.Handler = resolvers.Middleware(res, gql)
	api = authn.Middleware(api)
	api = limiter.middleware(api)
	api = limitBody(opts.MaxBodyBytes, api)

	mux := http.NewServeMux()
	mux.Handle("/graphql", api)
	if !opts.DisablePlayground {
		mux.Handle("/playground", web.Playground())
	}
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("/ready", s.ready)
	mux.Handle("/metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{Registry: opts.Registry}))
	mux.Handle("/", web.Handler()) // the dashboard and the pages' assets
	s.mux = mux
	s.handler = withTrace(mux)
	return s
}

// Mount serves another API on the same port (the event intake). The handler
// brings its own limits: the GraphQL body limit and rate limiter do not apply.
// Call it before Run.
func (s *Server) Mount(path string, h http.Handler) { s.mux.Handle(path, h) }

// Handler is the server's root handler (tests serve it with httptest).
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the address the server listens on, once Run has started it.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Listen binds the address, so that callers know the port before Run.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.opts.Addr, err)
	}
	s.mu.Lock()
	s.listener = ln
	s.mu.Unlock()
	return nil
}

// Run serves until ctx ends, then shuts down gracefully (10 s at most).
func (s *Server) Run(ctx context.Context) error {
	if s.Addr() == "" {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(s.listener) }()
	s.opts.Logger.Info("serving HTTP", "addr", s.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down HTTP: %w", err)
	}
	return nil
}

// ready answers 200 when every check passes, else 503 naming the failing parts.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(s.checks))
	for name, c := range s.checks {
		go func() { results <- result{name, c(ctx)} }()
	}
	status := map[string]string{}
	var failing []string
	for range s.checks {
		res := <-results
		if res.err != nil {
			status[res.name] = res.err.Error()
			failing = append(failing, res.name)
		} else {
			status[res.name] = "ok"
		}
	}
	sort.Strings(failing)
	w.Header().Set("Content-Type", "application/json")
	body := map[string]any{"status": "ready", "checks": status}
	if len(failing) > 0 {
		body["status"] = "unavailable"
		body["failing"] = failing
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

// limitBody refuses bodies over max bytes with 413: up front when
// Content-Length says so, and after reading at most max+1 bytes when the
// length is not declared (chunked), since gqlgen answers a failed body read
// with status 200.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			writeError(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("request body over %d bytes", max))
			return
		}
		if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
			body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
			if err != nil {
				writeError(w, http.StatusBadRequest, "BAD_REQUEST", "could not read the request body")
				return
			}
			if int64(len(body)) > max {
				writeError(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("request body over %d bytes", max))
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

// writeError answers a request refused before GraphQL ran, in GraphQL's shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{"message": msg, "extensions": map[string]any{"code": code}}},
	})
}

// withTrace gives every request a trace id: the W3C traceparent's when the
// caller sent one, else a new one. It is echoed in X-Trace-Id.
func withTrace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := ""
		if tp := r.Header.Get("traceparent"); tp != "" {
			if parts := strings.Split(tp, "-"); len(parts) == 4 && len(parts[1]) == 32 && isHex(parts[1]) {
				id = parts[1]
			}
		}
		if id == "" {
			id = quotes.NewTraceID()
		}
		w.Header().Set("X-Trace-Id", id)
		next.ServeHTTP(w, r.WithContext(resolvers.WithTraceID(r.Context(), id)))
	})
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

var _ graphql.HandlerExtension = depthLimit{}
