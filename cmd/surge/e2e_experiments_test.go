package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/surgeworks/surge/auditrecord"
)

const experimentFields = `id status layer version winner ruleVersions dayLengthSeconds minDays
	variants { name weight control strategy { basePriceAdjustmentPercent maxMultiplier } }`

type experimentJSON struct {
	ID               string   `json:"id"`
	Status           string   `json:"status"`
	Layer            string   `json:"layer"`
	Version          int      `json:"version"`
	Winner           *string  `json:"winner"`
	RuleVersions     []string `json:"ruleVersions"`
	DayLengthSeconds int      `json:"dayLengthSeconds"`
	MinDays          float64  `json:"minDays"`
}

type resultsJSON struct {
	ExperimentID string  `json:"experimentId"`
	Verdict      string  `json:"verdict"`
	Reason       string  `json:"verdictReason"`
	DaysElapsed  float64 `json:"daysElapsed"`
	Variants     []struct {
		Name           string  `json:"name"`
		Users          int     `json:"users"`
		ConvertedUsers int     `json:"convertedUsers"`
		Conversions    int     `json:"conversions"`
		Revenue        float64 `json:"revenue"`
	} `json:"variants"`
	Metrics []struct {
		Metric      string `json:"metric"`
		Comparisons []struct {
			Variant          string  `json:"variant"`
			RelativeLift     float64 `json:"relativeLift"`
			PValue           float64 `json:"pValue"`
			SequentialPValue float64 `json:"sequentialPValue"`
		} `json:"comparisons"`
	} `json:"metrics"`
	SampleRatio struct {
		PValue float64 `json:"pValue"`
	} `json:"sampleRatio"`
}

const resultsFields = `experimentId verdict verdictReason daysElapsed
	variants { name users convertedUsers conversions revenue }
	metrics { metric comparisons { variant relativeLift pValue sequentialPValue } }
	sampleRatio { pValue }`

// TestE2EExperiments drives issue 8 as an outside client: an admin creates
// and starts an experiment, users get prices with their variant, book some
// of them through POST /v1/book and the book mutation, the bookings and
// exposures reach ClickHouse through Kafka, experimentResults counts them,
// and rolloutWinner changes the default price.
func TestE2EExperiments(t *testing.T) {
	s := newStack(t, stackOptions{consumers: true, experimentDay: time.Second})
	admin := map[string]string{"X-Admin-Key": testAdminKey}
	create := `mutation($in: CreateExperimentInput!) { createExperiment(input: $in) { ` + experimentFields + ` } }`
	def := func(id string, weights ...float64) map[string]any {
		var vs []map[string]any
		for i, w := range weights {
			v := map[string]any{"name": []string{"control", "cheaper", "dearer"}[i], "weight": w}
			if i == 1 {
				v["strategy"] = map[string]any{"basePriceAdjustmentPercent": -10}
			}
			vs = append(vs, v)
		}
		return map[string]any{"id": id, "hypothesis": "10 % off converts more", "variants": vs,
			"regions": []string{"berlin"}, "products": []string{"ride"}, "minDays": 1, "minSamplePerVariant": 5}
	}

	// Bad input: clear codes, nothing created.
	for _, c := range []struct {
		name   string
		in     map[string]any
		header map[string]string
		code   string
		field  string
	}{
		{"no admin key", def("x1", 50, 50), nil, "UNAUTHENTICATED", ""},
		{"weights 60+50", def("x2", 60, 50), admin, "BAD_USER_INPUT", "variants"},
		{"one variant", def("x3", 100), admin, "BAD_USER_INPUT", "variants"},
	} {
		r := s.gql(t, create, map[string]any{"in": c.in}, c.header)
		if r.code() != c.code || (c.field != "" && r.field() != c.field) {
			t.Errorf("%s: code %q field %q, want %q %q: %s", c.name, r.code(), r.field(), c.code, c.field, r.Body)
		}
	}
	var list struct{ Experiments []experimentJSON }
	s.mustData(t, `{ experiments { id } }`, nil, &list)
	if len(list.Experiments) != 0 {
		t.Fatalf("refused creates left experiments: %+v", list.Experiments)
	}
	if r := s.gql(t, `mutation { startExperiment(id: "nope") { id } }`, nil, admin); r.code() != "NOT_FOUND" {
		t.Errorf("start unknown: %s", r.Body)
	}

	var created struct{ CreateExperiment experimentJSON }
	s.mustDataH(t, create, map[string]any{"in": def("cut", 50, 50)}, admin, &created)
	if e := created.CreateExperiment; e.Status != "DRAFT" || e.Layer != "default" || e.DayLengthSeconds != 1 || e.Version != 1 {
		t.Fatalf("created: %+v", e)
	}
	var started struct{ StartExperiment experimentJSON }
	s.mustDataH(t, `mutation { startExperiment(id: "cut") { `+experimentFields+` } }`, nil, admin, &started)
	if started.StartExperiment.Status != "RUNNING" {
		t.Fatalf("started: %+v", started.StartExperiment)
	}
	s.mustDataH(t, create, map[string]any{"in": def("overlap", 50, 50)}, admin, &created)
	if r := s.gql(t, `mutation { startExperiment(id: "overlap") { id } }`, nil, admin); r.code() != "CONFLICT" {
		t.Errorf("overlapping start: %s", r.Body)
	}

	// Prices: users are enrolled, the variant's strategy prices, a request
	// without a user is not enrolled.
	type quote struct {
		QuoteID    string  `json:"quoteId"`
		Price      float64 `json:"price"`
		BasePrice  float64 `json:"basePrice"`
		Experiment *struct {
			ID      string `json:"id"`
			Variant string `json:"variant"`
		} `json:"experiment"`
	}
	priceFor := func(user string) quote {
		var d struct{ Price quote }
		in := map[string]any{"regionId": "berlin", "productType": "ride"}
		if user != "" {
			in["userId"] = user
		}
		s.mustData(t, `query($in: PriceInput!) { price(input: $in) { quoteId price basePrice experiment { id variant } } }`,
			map[string]any{"in": in}, &d)
		return d.Price
	}
	anon := priceFor("")
	if anon.Experiment != nil {
		t.Fatalf("a request without userId was enrolled: %+v", anon.Experiment)
	}
	rule := defaultRule(t, "berlin", "ride")
	type userRec struct {
		variant string
		q       quote
		booked  bool
	}
	users := map[string]*userRec{}
	want := map[string]struct{ users, converted int }{}
	for i := range 40 {
		u := fmt.Sprintf("user-%d", i)
		q := priceFor(u)
		if q.Experiment == nil || q.Experiment.ID != "cut" {
			t.Fatalf("user %s not enrolled: %+v", u, q)
		}
		if again := priceFor(u); again.Experiment.Variant != q.Experiment.Variant {
			t.Fatalf("user %s switched variant %s → %s", u, q.Experiment.Variant, again.Experiment.Variant)
		}
		wantBase := rule.BasePrice
		if q.Experiment.Variant == "cheaper" {
			wantBase = math.Round(rule.BasePrice*0.9*1e4) / 1e4
		}
		if q.BasePrice != wantBase {
			t.Fatalf("user %s in %s: base price %g, want %g", u, q.Experiment.Variant, q.BasePrice, wantBase)
		}
		users[u] = &userRec{variant: q.Experiment.Variant, q: q}
		w := want[q.Experiment.Variant]
		w.users++
		want[q.Experiment.Variant] = w
	}
	if len(want) != 2 {
		t.Fatalf("40 users all in one variant: %v", want)
	}

	// Bookings: half through POST /v1/book, half through the mutation.
	book := `mutation($in: BookingInput!) { book(input: $in) { bookingId duplicate amount experiments { id variant } } }`
	postBook := func(body map[string]any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		resp, err := s.client.Post(s.base+"/v1/book", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	revenue := map[string]float64{}
	i := 0
	for u, r := range users {
		i++
		if i%3 == 0 {
			continue
		}
		in := map[string]any{"quoteId": r.q.QuoteID, "userId": u, "amount": r.q.Price, "bookingId": "bk-" + u}
		if i%2 == 0 {
			if code, out := postBook(in); code != http.StatusCreated {
				t.Fatalf("POST /v1/book: %d %v", code, out)
			}
		} else {
			var d struct {
				Book struct {
					Duplicate   bool
					Experiments []struct{ ID, Variant string }
				}
			}
			s.mustData(t, book, map[string]any{"in": in}, &d)
			if d.Book.Duplicate || len(d.Book.Experiments) != 1 || d.Book.Experiments[0].Variant != r.variant {
				t.Fatalf("book: %+v", d.Book)
			}
		}
		r.booked = true
		w := want[r.variant]
		w.converted++
		want[r.variant] = w
		revenue[r.variant] += r.q.Price
	}

	// Retries and bad bookings.
	var some string
	for u, r := range users {
		if r.booked {
			some = u
			break
		}
	}
	r0 := users[some]
	same := map[string]any{"quoteId": r0.q.QuoteID, "userId": some, "amount": r0.q.Price, "bookingId": "bk-" + some}
	if code, out := postBook(same); code != http.StatusOK || out["duplicate"] != true {
		t.Errorf("booking retry: %d %v", code, out)
	}
	var dup struct{ Book struct{ Duplicate bool } }
	s.mustData(t, book, map[string]any{"in": same}, &dup)
	if !dup.Book.Duplicate {
		t.Error("booking retry through the mutation is not a duplicate")
	}
	other := map[string]any{"quoteId": r0.q.QuoteID, "userId": some, "amount": r0.q.Price + 1, "bookingId": "bk-" + some}
	if r := s.gql(t, book, map[string]any{"in": other}, nil); r.code() != "CONFLICT" || r.field() != "bookingId" {
		t.Errorf("bookingId reused with another amount: %s", r.Body)
	}
	if code, out := postBook(other); code != http.StatusConflict {
		t.Errorf("POST /v1/book reused id: %d %v", code, out)
	}
	for _, c := range []struct {
		name  string
		in    map[string]any
		code  string
		field string
		http  int
	}{
		{"unknown quote", map[string]any{"quoteId": "00000000-0000-7000-8000-000000000000", "userId": "x", "amount": 1, "bookingId": "b-unknown"}, "NOT_FOUND", "quoteId", 404},
		{"negative amount", map[string]any{"quoteId": anon.QuoteID, "amount": -1, "bookingId": "b-neg"}, "BAD_USER_INPUT", "amount", 400},
		{"wrong user", map[string]any{"quoteId": r0.q.QuoteID, "userId": "someone-else", "amount": 1, "bookingId": "b-wrong"}, "BAD_USER_INPUT", "userId", 400},
		{"bad booking id", map[string]any{"quoteId": anon.QuoteID, "amount": 1, "bookingId": "a b"}, "BAD_USER_INPUT", "bookingId", 400},
	} {
		if r := s.gql(t, book, map[string]any{"in": c.in}, nil); r.code() != c.code || r.field() != c.field {
			t.Errorf("%s: %s", c.name, r.Body)
		}
		code, out := postBook(c.in)
		fields, _ := out["error"].(map[string]any)["fields"].([]any)
		if code != c.http || len(fields) == 0 || fields[0].(map[string]any)["field"] != c.field {
			t.Errorf("POST /v1/book %s: %d %v", c.name, code, out)
		}
	}
	if code, _ := postBook(map[string]any{"quoteId": anon.QuoteID, "amount": "NaN", "bookingId": "b-nan"}); code != http.StatusBadRequest {
		t.Errorf("amount as a string: %d", code)
	}

	// Exposures and bookings reach ClickHouse through Kafka; the results
	// count each user and each booking once.
	var res resultsJSON
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var d struct{ ExperimentResults resultsJSON }
		s.mustData(t, `{ experimentResults(experimentId: "cut", refresh: true) { `+resultsFields+` } }`, nil, &d)
		res = d.ExperimentResults
		ok := len(res.Variants) == 2
		for _, v := range res.Variants {
			ok = ok && v.Users == want[v.Name].users && v.ConvertedUsers == want[v.Name].converted
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("results never matched %v: %+v", want, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, v := range res.Variants {
		if v.Conversions != want[v.Name].converted || math.Abs(v.Revenue-revenue[v.Name]) > 1e-6 {
			t.Errorf("variant %s: %d bookings, revenue %g; want %d, %g", v.Name, v.Conversions, v.Revenue, want[v.Name].converted, revenue[v.Name])
		}
	}
	if len(res.Metrics) == 0 || res.Metrics[0].Metric != "CONVERSION_RATE" || len(res.Metrics[0].Comparisons) != 1 {
		t.Fatalf("metrics: %+v", res.Metrics)
	}
	t.Logf("results: verdict %s (%s), %+v", res.Verdict, res.Reason, res.Variants)

	// The audit record carries the variant.
	var record string
	if err := s.a.ch.QueryRow(t.Context(), `SELECT record FROM pricing_decisions WHERE quote_id = ?`, r0.q.QuoteID).Scan(&record); err != nil {
		t.Fatalf("audit record of %s: %v", r0.q.QuoteID, err)
	}
	var rec struct {
		Experiments []struct{ ID, Variant string } `json:"experiments"`
	}
	if err := auditrecord.Unmarshal([]byte(record), &rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.Experiments) != 1 || rec.Experiments[0].ID != "cut" || rec.Experiments[0].Variant != r0.variant {
		t.Errorf("audit record without the variant: %+v", rec.Experiments)
	}

	// Results of several experiments in one request: one batch.
	before, _ := metricValue(s.metrics(t), "surge_experiment_results_duration_seconds_count", "")
	var batch struct {
		Experiments []struct {
			ID      string
			Results *struct{ Verdict string }
		}
	}
	s.mustData(t, `{ experiments { id results { verdict } } }`, nil, &batch)
	after, _ := metricValue(s.metrics(t), "surge_experiment_results_duration_seconds_count", "")
	if len(batch.Experiments) != 2 || after-before != 1 {
		t.Errorf("experiments { results }: %+v, %g result batches (want 1)", batch.Experiments, after-before)
	}

	// Roll-out: refused without a winner, then the chosen variant becomes
	// the default price.
	if res.Verdict == "WINNER" {
		t.Fatalf("equal booking rates gave a winner: %+v", res)
	}
	if r := s.gql(t, `mutation { rolloutWinner(experimentId: "cut") { id } }`, nil, admin); r.code() != "BAD_USER_INPUT" {
		t.Errorf("roll out without a winner: %s", r.Body)
	}
	var rolled struct{ RolloutWinner experimentJSON }
	s.mustDataH(t, `mutation { rolloutWinner(experimentId: "cut", variant: "cheaper") { `+experimentFields+` } }`, nil, admin, &rolled)
	if e := rolled.RolloutWinner; e.Status != "ROLLED_OUT" || e.Winner == nil || *e.Winner != "cheaper" || len(e.RuleVersions) != 1 {
		t.Fatalf("rolled out: %+v", e)
	}
	after2 := priceFor("user-0")
	if after2.Experiment != nil || after2.BasePrice != math.Round(rule.BasePrice*0.9*1e4)/1e4 {
		t.Fatalf("after roll-out: %+v (old base %g)", after2, rule.BasePrice)
	}
}

// mustDataH is mustData with headers.
func (s *stack) mustDataH(t *testing.T, query string, vars map[string]any, header map[string]string, out any) {
	t.Helper()
	r := s.gql(t, query, vars, header)
	if len(r.Errors) > 0 {
		t.Fatalf("%s: %s", query, r.Body)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatal(err)
	}
}
