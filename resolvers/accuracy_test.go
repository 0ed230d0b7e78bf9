package resolvers

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/monitoring"
	"github.com/surgeworks/surge/pricing"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// accuracyConn is a migrated database holding, two hours ago, a berlin v1
// forecast of 120 against 100 searches (MAPE 0.2, not above the 20 %
// threshold) and a paris v1 forecast of 100 against 50 (MAPE 1).
func accuracyConn(t *testing.T) driver.Conn {
	t.Helper()
	ctx := ctxT(t)
	conn, _, _ := chtest.Migrated(t)
	base := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Hour)
	h := analytics.NewHistory(conn, analytics.HistoryOptions{})
	for region, per := range map[string]float64{"berlin": 20, "paris": 10} {
		rows := make([]features.Minute, 5)
		for i := range rows {
			rows[i] = features.Minute{Start: base.Add(time.Duration(i+1) * time.Minute), Searches: per}
		}
		rows = append(rows, features.Minute{Start: base.Add(time.Hour), Searches: 1})
		if err := h.InsertDemandMinutes(ctx, region, rows); err != nil {
			t.Fatal(err)
		}
	}
	b, err := conn.PrepareBatch(ctx, `INSERT INTO pricing_decisions
		(quote_id, at, region_id, product_type, model_version, forecast_source, record, kafka_topic, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range []inference.Forecast{
		{RegionID: "berlin", HorizonMinutes: 5, Demand: 120, ModelVersion: "v1", Source: inference.SourceModel, GeneratedAt: base.Add(10 * time.Second)},
		{RegionID: "paris", HorizonMinutes: 5, Demand: 100, ModelVersion: "v1", Source: inference.SourceModel, GeneratedAt: base.Add(20 * time.Second)},
	} {
		rec, err := json.Marshal(struct {
			QuoteID  string             `json:"quoteId"`
			At       time.Time          `json:"at"`
			RegionID string             `json:"regionId"`
			Input    pricing.Input      `json:"input"`
			Forecast inference.Forecast `json:"forecast"`
		}{f.RegionID, f.GeneratedAt, f.RegionID, pricing.Input{DemandForecast: f.Demand * 7, HorizonMinutes: 5}, f})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append("q"+f.RegionID, f.GeneratedAt, f.RegionID, "ride", f.ModelVersion, string(f.Source), string(rec),
			"pricing-decisions", uint32(0), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	return conn
}

type gqlResponse struct {
	Data struct {
		ForecastAccuracy []struct {
			Region       string
			ModelVersion string
			Points       int
			Mape         *float64
			MapePoints   int
			Wape         *float64
			Bias         *float64
			Alert        bool
			Threshold    float64
		}
	}
	Errors []struct {
		Message    string
		Extensions map[string]any
	}
}

func query(t *testing.T, res *Resolver, q string) gqlResponse {
	t.Helper()
	h := handler.New(NewSchema(res))
	h.AddTransport(transport.POST{})
	h.SetErrorPresenter(ErrorPresenter(slog.Default()))
	body, _ := json.Marshal(map[string]string{"query": q})
	req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(string(body))).WithContext(
		auth.WithPrincipal(ctxT(t), auth.Principal{ID: "test", Name: "test", Roles: auth.RoleAnalyst | auth.RoleClient}))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out gqlResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%v: %s", err, rec.Body.String())
	}
	return out
}

func TestForecastAccuracyQuery(t *testing.T) {
	acc, err := monitoring.New(accuracyConn(t), monitoring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := &Resolver{Accuracy: acc}
	const fields = `{ region modelVersion points mape mapePoints wape bias alert threshold }`
	type row struct {
		region     string
		mape, bias float64
		alert      bool
	}
	tests := []struct {
		name string
		args string
		want []row
	}{
		{"default window", ``, []row{{"berlin", 0.2, 0.2, false}, {"paris", 1, 1, true}}},
		{"one region", `(regionId: "paris")`, []row{{"paris", 1, 1, true}}},
		{"one version", `(modelVersion: "v1", windowHours: 720)`, []row{{"berlin", 0.2, 0.2, false}, {"paris", 1, 1, true}}},
		{"unknown version", `(modelVersion: "v9")`, nil},
		{"window too short to hold the forecasts", `(windowHours: 1)`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := query(t, res, `{ forecastAccuracy`+tc.args+` `+fields+` }`)
			if len(out.Errors) > 0 {
				t.Fatalf("errors: %+v", out.Errors)
			}
			got := out.Data.ForecastAccuracy
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Region != w.region || g.ModelVersion != "v1" || g.Points != 1 || g.MapePoints != 1 ||
					g.Mape == nil || math.Abs(*g.Mape-w.mape) > 1e-9 || g.Wape == nil || math.Abs(*g.Wape-w.mape) > 1e-9 ||
					g.Bias == nil || math.Abs(*g.Bias-w.bias) > 1e-9 || g.Alert != w.alert || g.Threshold != 0.2 {
					t.Errorf("row %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestForecastAccuracyBadInput(t *testing.T) {
	acc, err := monitoring.New(accuracyConn(t), monitoring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, args  string
		res         *Resolver
		code, field string
	}{
		{"window zero", `(windowHours: 0)`, &Resolver{Accuracy: acc}, CodeBadUserInput, "windowHours"},
		{"window over 30 days", `(windowHours: 721)`, &Resolver{Accuracy: acc}, CodeBadUserInput, "windowHours"},
		{"bad region id", `(regionId: "berlin mitte")`, &Resolver{Accuracy: acc}, CodeBadUserInput, "regionId"},
		{"empty version", `(modelVersion: "")`, &Resolver{Accuracy: acc}, CodeBadUserInput, "modelVersion"},
		{"not monitored", ``, &Resolver{}, CodeUnavailable, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := query(t, tc.res, `{ forecastAccuracy`+tc.args+` { region } }`)
			if len(out.Errors) != 1 {
				t.Fatalf("errors: %+v", out.Errors)
			}
			ext := out.Errors[0].Extensions
			if ext["code"] != tc.code || (tc.field != "" && ext["field"] != tc.field) {
				t.Errorf("extensions %v, want code %s field %q", ext, tc.code, tc.field)
			}
		})
	}
}
