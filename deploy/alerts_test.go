package deploy

import (
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"sigs.k8s.io/yaml"
)

const alertsFile = "prometheus/alerts.yaml"

// externalMetrics are the metrics alerts use that surge does not export,
// with their labels: kube-state-metrics'.
var externalMetrics = map[string][]string{
	"kube_pod_container_status_restarts_total": {"namespace", "pod", "container", "uid"},
}

// targetLabels are added to every scraped series by the Kubernetes service
// discovery and relabelling, whatever the metric.
var targetLabels = []string{"instance", "job", "namespace", "pod", "container"}

var promParser = parser.NewParser(parser.Options{})

func parseAlerts(t *testing.T) []rulefmt.Rule {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	var rules []rulefmt.Rule
	for _, g := range groups.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// TestAlertRules is `promtool check rules` (rulefmt's parse and validation,
// the PromQL parser) and more: every alert the issue asks for is there
// with its severity, and every metric and label a rule names exists.
func TestAlertRules(t *testing.T) {
	rules := parseAlerts(t)
	src := mustSource(t)
	byName := map[string]rulefmt.Rule{}
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("recording rule %s: this file holds alerts only", r.Record)
			continue
		}
		byName[r.Alert] = r
		if s := r.Labels["severity"]; s != "high" && s != "warning" {
			t.Errorf("%s: severity %q, want high or warning", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: want a summary and a description", r.Alert)
		}
		expr, err := promParser.ParseExpr(r.Expr)
		if err != nil {
			t.Errorf("%s: %v", r.Alert, err)
			continue
		}
		for _, err := range checkNames(expr, src) {
			t.Errorf("%s: %v", r.Alert, err)
		}
	}
	for alert, severity := range map[string]string{
		"SurgePodRestarting":      "high",
		"SurgeAPIHighLatency":     "high",
		"SurgeAPIErrorRate":       "high",
		"SurgeIntakeErrorRate":    "high",
		"SurgeForecastMAPEHigh":   "warning",
		"SurgeDegradedPrices":     "warning",
		"SurgeCircuitBreakerOpen": "high",
		"SurgeConsumerLag":        "warning",
		"SurgeSinkLag":            "warning",
	} {
		r, ok := byName[alert]
		if !ok {
			t.Errorf("alert %s missing", alert)
		} else if r.Labels["severity"] != severity {
			t.Errorf("%s: severity %s, want %s", alert, r.Labels["severity"], severity)
		}
	}
}

// checkNames returns an error for each metric the expression selects that
// neither the code nor externalMetrics defines, and for each label that it
// matches on or groups by that such a metric does not have.
func checkNames(expr parser.Expr, src *source) []error {
	var errs []error
	// labelsOf is the label set of the selectors under a node.
	labelsOf := func(n parser.Node) map[string]bool {
		out := map[string]bool{}
		for _, l := range targetLabels {
			out[l] = true
		}
		parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				for l := range metricLabels(vs.Name, src) {
					out[l] = true
				}
			}
			return nil
		})
		return out
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			ls := metricLabels(n.Name, src)
			if ls == nil {
				errs = append(errs, fmt.Errorf("metric %s is not defined by the code (nor an external metric)", n.Name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != labels.MetricName && !ls[m.Name] && !slices.Contains(targetLabels, m.Name) {
					errs = append(errs, fmt.Errorf("%s has no label %s", n.Name, m.Name))
				}
			}
		case *parser.AggregateExpr:
			have := labelsOf(n.Expr)
			for _, l := range n.Grouping {
				if !have[l] {
					errs = append(errs, fmt.Errorf("%s by (%s): no series under it has label %s", n.Op, strings.Join(n.Grouping, ", "), l))
				}
			}
		}
		return nil
	})
	return errs
}

// metricLabels is the label set of a series name: a metric of the code
// (with le for a histogram's buckets, quantile for a summary), or an
// external one; nil when there is none.
func metricLabels(name string, src *source) map[string]bool {
	if ls, ok := externalMetrics[name]; ok {
		out := map[string]bool{}
		for _, l := range ls {
			out[l] = true
		}
		return out
	}
	if m, ok := src.metrics[name]; ok {
		out := map[string]bool{}
		for l := range m.labels {
			out[l] = true
		}
		if m.kind == "Summary" {
			out["quantile"] = true
		}
		return out
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		m, defined := src.metrics[base]
		if !ok || !defined || (m.kind != "Histogram" && m.kind != "Summary") || (suffix == "_bucket" && m.kind != "Histogram") {
			continue
		}
		out := map[string]bool{}
		for l := range m.labels {
			out[l] = true
		}
		if suffix == "_bucket" {
			out["le"] = true
		}
		return out
	}
	return nil
}

// TestAlertsFire evaluates each alert's expression with the PromQL engine
// on series that should and should not make it fire (the `for` durations
// aside): the thresholds and selectors do what the summaries say.
func TestAlertsFire(t *testing.T) {
	exprs := map[string]string{}
	for _, r := range parseAlerts(t) {
		exprs[r.Alert] = r.Expr
	}
	engine := promqltest.NewTestEngine(t, false, 0, 1_000_000)
	for _, tc := range []struct {
		alert, name string
		series      string // promqltest load lines, one sample a minute
		fire        bool
	}{
		{"SurgePodRestarting", "4 restarts in 5 minutes", `kube_pod_container_status_restarts_total{namespace="surge",pod="surge-api-1",container="api"} 0+1x10`, true},
		{"SurgePodRestarting", "2 restarts in 5 minutes", `kube_pod_container_status_restarts_total{namespace="surge",pod="surge-api-1",container="api"} 0+0.4x10`, false},
		{"SurgePodRestarting", "another namespace", `kube_pod_container_status_restarts_total{namespace="kube-system",pod="dns",container="api"} 0+1x10`, false},
		{"SurgeAPIHighLatency", "p99 above 50 ms", `
			surge_graphql_request_duration_seconds_bucket{type="query",field="price",le="0.05"} 0+980x10
			surge_graphql_request_duration_seconds_bucket{type="query",field="price",le="0.1"} 0+1000x10
			surge_graphql_request_duration_seconds_bucket{type="query",field="price",le="+Inf"} 0+1000x10`, true},
		{"SurgeAPIHighLatency", "p99 below 50 ms", `
			surge_graphql_request_duration_seconds_bucket{type="query",field="price",le="0.02"} 0+995x10
			surge_graphql_request_duration_seconds_bucket{type="query",field="price",le="0.05"} 0+1000x10
			surge_graphql_request_duration_seconds_bucket{type="query",field="price",le="+Inf"} 0+1000x10`, false},
		{"SurgeAPIHighLatency", "slow subscriptions do not count", `
			surge_graphql_request_duration_seconds_bucket{type="subscription",field="surgeUpdated",le="0.05"} 0
			surge_graphql_request_duration_seconds_bucket{type="subscription",field="surgeUpdated",le="+Inf"} 0+1000x10`, false},
		{"SurgeAPIErrorRate", "2 % internal errors", `
			surge_graphql_requests_total{type="query",field="price"} 0+1000x10
			surge_graphql_errors_total{type="query",field="price",code="INTERNAL_SERVER_ERROR"} 0+20x10`, true},
		{"SurgeAPIErrorRate", "5 % client errors", `
			surge_graphql_requests_total{type="query",field="price"} 0+1000x10
			surge_graphql_errors_total{type="query",field="price",code="BAD_USER_INPUT"} 0+50x10`, false},
		{"SurgeAPIErrorRate", "0.5 % unavailable", `
			surge_graphql_requests_total{type="query",field="price"} 0+1000x10
			surge_graphql_errors_total{type="query",field="price",code="UNAVAILABLE"} 0+5x10`, false},
		{"SurgeIntakeErrorRate", "2 % 503", `
			surge_intake_http_requests_total{code="202"} 0+1000x10
			surge_intake_http_requests_total{code="503"} 0+20x10`, true},
		{"SurgeIntakeErrorRate", "5 % 400", `
			surge_intake_http_requests_total{code="202"} 0+1000x10
			surge_intake_http_requests_total{code="400"} 0+50x10`, false},
		{"SurgeForecastMAPEHigh", "above the threshold", `surge_forecast_accuracy_alert{region="berlin"} 1x10`, true},
		{"SurgeForecastMAPEHigh", "within", `surge_forecast_accuracy_alert{region="berlin"} 0x10`, false},
		{"SurgeDegradedPrices", "10 % from the cache", `
			surge_quotes_total{forecast_source="MODEL"} 0+900x10
			surge_quotes_total{forecast_source="CACHED"} 0+100x10`, true},
		{"SurgeDegradedPrices", "1 % static", `
			surge_quotes_total{forecast_source="MODEL"} 0+990x10
			surge_quotes_total{forecast_source="STATIC"} 0+10x10`, false},
		{"SurgeCircuitBreakerOpen", "open", `surge_inference_circuit_breaker_state{pod="surge-api-1"} 1x10`, true},
		{"SurgeCircuitBreakerOpen", "half-open", `surge_inference_circuit_breaker_state{pod="surge-api-1"} 2x10`, false},
		{"SurgeCircuitBreakerOpen", "closed", `surge_inference_circuit_breaker_state{pod="surge-api-1"} 0x10`, false},
		{"SurgeConsumerLag", "20,000 behind", `
			surge_stream_consumer_lag{topic="ride-events",partition="0"} 15000x10
			surge_stream_consumer_lag{topic="ride-events",partition="1"} 5000x10`, true},
		{"SurgeConsumerLag", "9,000 reported by two pods during a rebalance", `
			surge_stream_consumer_lag{topic="ride-events",partition="0",pod="surge-consumer-1"} 9000x10
			surge_stream_consumer_lag{topic="ride-events",partition="0",pod="surge-consumer-2"} 9000x10`, false},
		{"SurgeConsumerLag", "100 behind", `surge_stream_consumer_lag{topic="ride-events",partition="0"} 100x10`, false},
		{"SurgeSinkLag", "60,000 behind", `surge_sink_lag{topic="ride-events",partition="0"} 60000x10`, true},
		{"SurgeSinkLag", "100 behind", `surge_sink_lag{topic="ride-events",partition="0"} 100x10`, false},
	} {
		t.Run(tc.alert+"/"+tc.name, func(t *testing.T) {
			expr, ok := exprs[tc.alert]
			if !ok {
				t.Fatalf("no alert %s", tc.alert)
			}
			load := "load 1m\n"
			for _, l := range strings.Split(strings.TrimSpace(tc.series), "\n") {
				load += "  " + strings.TrimSpace(l) + "\n"
			}
			storage := promqltest.LoadedStorage(t, load)
			q, err := engine.NewInstantQuery(t.Context(), storage, nil, expr, time.Unix(0, 0).Add(10*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			res := q.Exec(t.Context())
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			v, err := res.Vector()
			if err != nil {
				t.Fatal(err)
			}
			if fired := len(v) > 0; fired != tc.fire {
				t.Errorf("fired %v (%v), want %v", fired, v, tc.fire)
			}
		})
	}
}

// adapterRules is deploy/prometheus/adapter-rules.yaml.
type adapterRules struct {
	Rules []struct {
		SeriesQuery string `json:"seriesQuery"`
		Resources   struct {
			Overrides map[string]struct {
				Resource string `json:"resource"`
			} `json:"overrides"`
		} `json:"resources"`
		Name struct {
			Matches string `json:"matches"`
			As      string `json:"as"`
		} `json:"name"`
		MetricsQuery string `json:"metricsQuery"`
	} `json:"rules"`
}

var readAdapter = sync.OnceValues(func() (*adapterRules, error) {
	b, err := os.ReadFile("prometheus/adapter-rules.yaml")
	if err != nil {
		return nil, err
	}
	var a adapterRules
	if err := yaml.UnmarshalStrict(b, &a); err != nil {
		return nil, fmt.Errorf("adapter-rules.yaml: %w", err)
	}
	return &a, nil
})

// adapterMetric is the custom metric the prometheus-adapter rule serves.
func adapterMetric(t *testing.T) string {
	t.Helper()
	a, err := readAdapter()
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Rules) != 1 {
		t.Fatalf("adapter-rules.yaml: %d rules, want the one the HPA uses", len(a.Rules))
	}
	return a.Rules[0].Name.As
}

// TestAdapterRules checks the prometheus-adapter rule: its series exist in
// the code with the pod and namespace labels it maps, and its query,
// filled in as the adapter does, is valid PromQL.
func TestAdapterRules(t *testing.T) {
	src := mustSource(t)
	a, err := readAdapter()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range a.Rules {
		ms, err := promParser.ParseMetricSelector(r.SeriesQuery)
		if err != nil {
			t.Fatalf("seriesQuery %s: %v", r.SeriesQuery, err)
		}
		var name string
		for _, m := range ms {
			if m.Name == labels.MetricName {
				name = m.Value
			}
		}
		if metricLabels(name, src) == nil || src.metrics[name].kind != "Counter" {
			t.Errorf("seriesQuery %s: %s is no counter of the code", r.SeriesQuery, name)
		}
		if !regexp.MustCompile(r.Name.Matches).MatchString(name) || r.Name.As == "" {
			t.Errorf("name %q as %q does not rename %s", r.Name.Matches, r.Name.As, name)
		}
		for l, o := range r.Resources.Overrides {
			if o.Resource != l || !slices.Contains(targetLabels, l) {
				t.Errorf("override %s → %s: want the scrape's namespace and pod labels", l, o.Resource)
			}
		}
		q := strings.NewReplacer("<<.Series>>", name, "<<.LabelMatchers>>", `namespace="surge",pod=~"surge-api-1|surge-api-2"`, "<<.GroupBy>>", "pod").Replace(r.MetricsQuery)
		expr, err := promParser.ParseExpr(q)
		if err != nil {
			t.Fatalf("metricsQuery %s: %v", q, err)
		}
		if expr.Type() != parser.ValueTypeVector {
			t.Errorf("metricsQuery %s gives a %s", q, expr.Type())
		}
		if !strings.Contains(q, "rate(") {
			t.Errorf("metricsQuery %s: want the rate of the counter (requests per second)", q)
		}
	}
}
