package server

import (
	"context"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics records GraphQL operations: rate, errors and latency, labelled
// by operation type and first root field (schema-bounded, unlike client-chosen
// operation names).
type httpMetrics struct {
	requests    *prometheus.CounterVec
	errors      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	rateLimited prometheus.Counter
	// rateLimitFailOpen counts requests admitted because the limiter failed.
	rateLimitFailOpen prometheus.Counter
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_graphql_requests_total", Help: "GraphQL operations, by type and first root field.",
		}, []string{"type", "field"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_graphql_errors_total", Help: "GraphQL operations answered with errors, by type, first root field and error code.",
		}, []string{"type", "field", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_graphql_request_duration_seconds",
			Help:    "Duration of GraphQL operations, by type and first root field.",
			Buckets: []float64{.0002, .0005, .001, .002, .003, .005, .01, .02, .05, .1, .25, .5, 1},
		}, []string{"type", "field"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_http_rate_limited_total", Help: "Requests (and websocket operations) refused by the rate limits.",
		}),
	}
	m.rateLimitFailOpen = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "surge_http_ratelimit_fail_open_total", Help: "Requests admitted without a rate limit because the limiter (Redis) failed.",
	})
	reg.MustRegister(m.requests, m.errors, m.duration, m.rateLimited, m.rateLimitFailOpen)
	return m
}

func (*httpMetrics) ExtensionName() string                   { return "Metrics" }
func (*httpMetrics) Validate(graphql.ExecutableSchema) error { return nil }

func (m *httpMetrics) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	oc := graphql.GetOperationContext(ctx)
	typ, field := "unknown", "unknown"
	if oc.Operation != nil {
		typ = string(oc.Operation.Operation)
		if fs := graphql.CollectFields(oc, oc.Operation.SelectionSet, nil); len(fs) > 0 {
			field = fs[0].Name
		}
	}
	start := time.Now()
	resp := next(ctx)
	m.duration.WithLabelValues(typ, field).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(typ, field).Inc()
	if resp != nil && len(resp.Errors) > 0 {
		code := "UNKNOWN"
		if c, ok := resp.Errors[0].Extensions["code"].(string); ok {
			code = c
		}
		m.errors.WithLabelValues(typ, field, code).Inc()
	}
	return resp
}
