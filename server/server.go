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
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime/debug"
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
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/ratelimit"
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
	// MaxComplexity bounds a query's cost (default 5,000): each field costs
	// 1, and a list field its selection once per expected item (prices: per
	// input; regions: 10; see resolvers' complexity). Its fields, fragments
	// expanded, are counted first, in time linear in the document.
	MaxComplexity int
	// MaxAliases bounds the aliased fields of an operation, fragments'
	// counted as often as they are spread (default 30).
	MaxAliases int
	// MaxOperations bounds the operations a query document defines (default
	// 10), and MaxQueryBytes its size (default 64 KiB, as much as a GET's
	// request line can carry: http.Server.MaxHeaderBytes).
	MaxOperations int
	MaxQueryBytes int
	// RequestTimeout bounds the execution of a query or mutation, over any
	// transport; fields failing past it answer TIMEOUT. Subscriptions are not
	// bounded (default 10 s).
	RequestTimeout time.Duration
	// Limiter holds the request rate limits in Redis, shared by every
	// replica; nil: no rate limits. RatePerClient is the sustained
	// requests/s allowed per key or token subject, RateBurst its burst
	// (defaults 5,000/s and 10,000); AnonymousRate and AnonymousBurst the
	// same per address for callers without credentials (defaults 1,000 per
	// minute and 100).
	Limiter        *ratelimit.Limiter
	RatePerClient  float64
	RateBurst      int
	AnonymousRate  float64
	AnonymousBurst int
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
	// MetricsAddr serves /metrics on a listener of its own (for a scraper
	// on another network than the clients); empty: on Addr.
	MetricsAddr string
	Logger      *slog.Logger
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
		o.MaxComplexity = 5000
	}
	if o.MaxAliases <= 0 {
		o.MaxAliases = 30
	}
	if o.MaxOperations <= 0 {
		o.MaxOperations = 10
	}
	if o.MaxQueryBytes <= 0 {
		o.MaxQueryBytes = 64 << 10
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if !(o.RatePerClient > 0) || math.IsInf(o.RatePerClient, 0) {
		o.RatePerClient = 5000
	}
	if o.RateBurst <= 0 {
		o.RateBurst = 10000
	}
	if !(o.AnonymousRate > 0) || math.IsInf(o.AnonymousRate, 0) {
		o.AnonymousRate = 1000.0 / 60
	}
	if o.AnonymousBurst <= 0 {
		o.AnonymousBurst = 100
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
	authn   *auth.Authenticator
	metrics *http.ServeMux // nil: /metrics is on the main listener
	aux     *Aux

	mu       sync.Mutex
	listener net.Listener
}

// New builds the server around the root resolver. checks are run by /ready,
// by name.
func New(res *resolvers.Resolver, authn *auth.Authenticator, checks map[string]Check, opts Options) *Server {
	opts.defaults()
	s := &Server{opts: opts, authn: authn}
	m := newHTTPMetrics(opts.Registry)

	gql := handler.New(resolvers.NewSchema(res))
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
	// Before AutomaticPersistedQuery, which caches queries unparsed, and
	// before the extensions that walk an operation's fragments.
	gql.Use(operationLimit{maxBytes: opts.MaxQueryBytes, maxOps: opts.MaxOperations, maxFields: opts.MaxComplexity})
	// Per replica: a client whose hash is not known here resends the query.
	gql.Use(extension.AutomaticPersistedQuery{Cache: lru.New[string](1000)})
	if opts.DisableIntrospection {
		gql.Use(noIntrospection{})
	} else {
		gql.Use(extension.Introspection{})
		gql.Use(introspectionNeedsRole{})
	}
	gql.Use(extension.FixedComplexityLimit(opts.MaxComplexity))
	gql.Use(depthLimit{max: opts.MaxDepth})
	gql.Use(aliasLimit{max: opts.MaxAliases})
	gql.Use(requestTimeout{d: opts.RequestTimeout})
	gql.Use(getQueriesOnly{})
	gql.Use(m)
	gql.SetErrorPresenter(resolvers.ErrorPresenter(opts.Logger))
	gql.SetRecoverFunc(func(ctx context.Context, v any) error {
		id := resolvers.TraceID(ctx)
		opts.Logger.ErrorContext(ctx, "panic in resolver", "panic", fmt.Sprint(v), "trace_id", id, "stack", string(debug.Stack()))
		return &gqlerror.Error{Message: "internal error (trace id " + id + ")",
			Extensions: map[string]any{"code": resolvers.CodeInternal, "traceId": id}}
	})

	var api http.Handler = resolvers.Middleware(res, gql)
	if opts.Limiter != nil {
		rl := newRequestLimits(opts.Limiter, opts, m)
		gql.Use(operationRate{rl})
		api = rl.middleware(api)
	}
	api = authn.Middleware(api)
	api = limitBody(opts.MaxBodyBytes, markGET(api))

	mux := http.NewServeMux()
	mux.Handle("/graphql", api)
	if !opts.DisablePlayground {
		mux.Handle("/playground", web.Playground())
	}
	mux.HandleFunc("/health", health)
	mux.Handle("/ready", ready(checks))
	metrics := promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{Registry: opts.Registry})
	if opts.MetricsAddr == "" {
		mux.Handle("/metrics", metrics)
	} else {
		s.metrics = http.NewServeMux()
		s.metrics.Handle("/metrics", metrics)
	}
	mux.Handle("/", web.Handler()) // the dashboard and the pages' assets
	s.mux = mux
	s.handler = withTrace(recoverPanics(opts.Logger, mux))
	return s
}

// Mount serves another API on the same port (the event intake, bookings),
// for callers holding role: authenticated as /graphql is. The handler
// brings its own body limit; the GraphQL rate limiter does not apply.
// Call it before Run.
func (s *Server) Mount(path string, role auth.Role, h http.Handler) {
	s.mux.Handle(path, s.authn.Middleware(auth.RequireRole(role, h)))
}

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
	if s.metrics != nil {
		if s.aux, err = newAux("metrics", s.opts.MetricsAddr, s.metrics, s.opts.Logger); err != nil {
			ln.Close()
			return err
		}
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
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(s.listener) }()
	if s.aux != nil {
		go func() { errc <- s.aux.Run(ctx) }()
	}
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
// health answers /health: the process is up.
func health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// ready answers /ready: 200 when every check passes, 503 naming the
// failing ones otherwise.
func ready(checks map[string]Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		type result struct {
			name string
			err  error
		}
		results := make(chan result, len(checks))
		for name, c := range checks {
			go func() { results <- result{name, c(ctx)} }()
		}
		status := map[string]string{}
		var failing []string
		for range checks {
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
	})
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
