package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
)

// consumeProcess is one `surge consume` (newConsumers, run) of a test.
type consumeProcess struct {
	c      *consumers
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (s *stack) consume(t *testing.T, name string) *consumeProcess {
	t.Helper()
	cfg := s.cfg
	cfg.ListenAddr = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := newConsumers(ctx, cfg, s.logger.With("consumer", name))
	if err != nil {
		t.Fatalf("consumer %s: %v", name, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	p := &consumeProcess{c: c, cancel: stop, done: make(chan error, 1)}
	go func() { p.done <- c.run(runCtx) }()
	t.Cleanup(p.stop(t))
	return p
}

// stop returns the function that stops the process (once) and checks it
// stopped cleanly.
func (p *consumeProcess) stop(t *testing.T) func() {
	return func() {
		p.once.Do(func() {
			p.cancel()
			if err := <-p.done; err != nil {
				t.Errorf("consume run: %v", err)
			}
		})
	}
}

// partitions lists the partitions the process holds, per consumer group.
func (p *consumeProcess) partitions() map[string][]string {
	out := map[string][]string{}
	st := p.c.stream.Status()
	for _, q := range st.Partitions {
		out[st.GroupID] = append(out[st.GroupID], fmt.Sprintf("%s/%d", q.Topic, q.Partition))
	}
	sk := p.c.sink.Status()
	for _, q := range sk.Partitions {
		out[sk.Group] = append(out[sk.Group], fmt.Sprintf("%s/%d", q.Topic, q.Partition))
	}
	return out
}

// TestE2EReplicas runs issue 13's replicas on one machine: two API
// processes and two `surge consume` processes against the same Redis,
// ClickHouse and broker. Events sent to either API (and resent to the
// other) are counted once; the consumer groups split the partitions and
// the survivor takes them all when one consumer stops, still counting
// each event once; a rollout started on one API is served and reported by
// the other, and rolled back there for both; an experiment's users get the
// same variant from both; and a key's rate limit is one budget across
// them. (Surge changes reaching the subscribers of both replicas:
// TestE2ELive.)
func TestE2EReplicas(t *testing.T) {
	s := newStack(t, stackOptions{config: func(c *config) {
		c.RolloutCheck = 100 * time.Millisecond
		c.RatePerClient = 5 // burst 10: the admin key's budget, tested last
	}})
	b := s.replica(t)
	c1 := s.consume(t, "1")
	c2 := s.consume(t, "2")

	// Events through both APIs; the batch sent to A is resent to B.
	now := time.Now().UTC().Truncate(time.Second)
	batch := func(prefix string, n int) []byte {
		var evs []map[string]any
		for i := range n {
			evs = append(evs, map[string]any{"eventId": fmt.Sprintf("%s-%d", prefix, i), "type": "search", "regionId": "paris",
				"timestamp": now.Add(-time.Duration(i) * time.Second).Format(time.RFC3339), "userId": fmt.Sprintf("u%d", i%7)})
		}
		body, _ := json.Marshal(map[string]any{"events": evs})
		return body
	}
	send := func(api *stack, body []byte) (accepted, duplicates int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, api.base+"/v1/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Api-Key", testIngestKey)
		r := api.do(t, req)
		var out struct{ Accepted, Duplicates int }
		if r.Status != http.StatusAccepted || json.Unmarshal(r.Body, &out) != nil {
			t.Fatalf("POST /v1/events to %s: %d %s", api.base, r.Status, r.Body)
		}
		return out.Accepted, out.Duplicates
	}
	fromA := batch("a", 40)
	if acc, _ := send(s, fromA); acc != 40 {
		t.Fatalf("A accepted %d of 40", acc)
	}
	if acc, _ := send(b, batch("b", 40)); acc != 40 {
		t.Fatalf("B accepted %d of 40", acc)
	}
	if acc, dup := send(b, fromA); acc != 0 || dup != 40 {
		t.Fatalf("A's batch resent to B: %d accepted, %d duplicates; want 0 and 40", acc, dup)
	}
	searches := func() int {
		var h struct{ DemandHistory []struct{ Searches int } }
		vars := map[string]any{"from": now.Add(-time.Hour).Format(time.RFC3339), "to": now.Add(time.Hour).Format(time.RFC3339)}
		b.mustData(t, `query($from: Time!, $to: Time!) { demandHistory(regionId: "paris", from: $from, to: $to, granularity: HOUR) { searches } }`, vars, &h)
		n := 0
		for _, p := range h.DemandHistory {
			n += p.Searches
		}
		return n
	}
	waitCounted := func(want int) {
		t.Helper()
		waitCond(t, fmt.Sprintf("%d searches in ClickHouse", want), func() bool {
			n := searches()
			if n > want {
				t.Fatalf("ClickHouse counts %d searches, want %d: an event was counted twice", n, want)
			}
			return n == want
		})
	}
	waitCounted(80)

	// Both consumers hold partitions of both groups.
	waitCond(t, "both consumers hold partitions of both groups", func() bool {
		p1, p2 := c1.partitions(), c2.partitions()
		return len(p1["features"]) > 0 && len(p2["features"]) > 0 && len(p1["clickhouse-sink"]) > 0 && len(p2["clickhouse-sink"]) > 0
	})
	union := map[string]map[string]bool{}
	for _, p := range []*consumeProcess{c1, c2} {
		for g, ps := range p.partitions() {
			if union[g] == nil {
				union[g] = map[string]bool{}
			}
			for _, q := range ps {
				union[g][q] = true
			}
		}
	}
	total := map[string]int{"features": len(union["features"]), "clickhouse-sink": len(union["clickhouse-sink"])}
	// One consumer stops: the other takes every partition, and the events
	// sent since are counted, once.
	c1.stop(t)()
	if acc, _ := send(s, batch("c", 20)); acc != 20 {
		t.Fatalf("A accepted %d of 20 after a consumer stopped", acc)
	}
	waitCond(t, "the surviving consumer holds every partition", func() bool {
		p2 := c2.partitions()
		return len(p2["features"]) == total["features"] && len(p2["clickhouse-sink"]) == total["clickhouse-sink"]
	})
	waitCounted(100)
	// B runs no consumer: its ingestionStatus reads the groups' positions
	// from Kafka, caught up.
	waitCond(t, "B's ingestionStatus shows both groups caught up", func() bool {
		var st struct {
			IngestionStatus struct {
				Partitions []struct {
					Group      string
					NextOffset int
					Lag        int
				}
			}
		}
		b.mustData(t, `{ ingestionStatus { partitions { group nextOffset lag } } }`, nil, &st)
		n := map[string]int{}
		for _, p := range st.IngestionStatus.Partitions {
			if p.Lag != 0 {
				return false
			}
			n[p.Group]++
		}
		return n["features"] == total["features"] && n["clickhouse-sink"] == total["clickhouse-sink"]
	})

	// A rollout started on A is the rollout of B.
	v2 := registerConstant(t, s, 20, features.V1.Hash())
	var started struct{ StartRollout rolloutJSON }
	s.admin(t, `mutation($v: String!) { startRollout(version: $v) { `+rolloutFields+` } }`, map[string]any{"v": v2.Version}, &started)
	waitCond(t, "B reports and serves A's rollout", func() bool {
		r := b.rollout(t)
		m := b.models(t)[v2.Version]
		return r != nil && r.Candidate == v2.Version && r.State == "RUNNING" && r.Phase == 1 && r.Percent == 10 &&
			m.Serving != nil && *m.Serving == "CANDIDATE"
	})
	var rolled struct{ RollbackModel rolloutJSON }
	b.admin(t, `mutation { rollbackModel(reason: "checked on B") { `+rolloutFields+` } }`, nil, &rolled)
	waitCond(t, "A reports B's rollback", func() bool {
		r := s.rollout(t)
		_, serving := s.models(t)[v2.Version]
		return r.State == "ROLLED_BACK" && r.Reason != nil && *r.Reason == "checked on B" && serving && s.models(t)[v2.Version].Serving == nil
	})

	// An experiment started on A assigns every user the same variant on B.
	create := `mutation($in: CreateExperimentInput!) { createExperiment(input: $in) { id } }`
	var created struct{ CreateExperiment struct{ ID string } }
	s.admin(t, create, map[string]any{"in": map[string]any{"id": "split", "hypothesis": "replicas agree",
		"variants": []map[string]any{{"name": "control", "weight": 50}, {"name": "cheaper", "weight": 50, "strategy": map[string]any{"basePriceAdjustmentPercent": -10}}},
		"regions":  []string{"berlin"}, "products": []string{"ride"}, "minDays": 1}}, &created)
	var startedExp struct{ StartExperiment struct{ Status string } }
	s.admin(t, `mutation { startExperiment(id: "split") { status } }`, nil, &startedExp)
	variant := func(api *stack, user string) string {
		var d struct {
			Price struct {
				Experiment *struct{ ID, Variant string }
			}
		}
		api.mustData(t, `query($in: PriceInput!) { price(input: $in) { experiment { id variant } } }`,
			map[string]any{"in": map[string]any{"regionId": "berlin", "productType": "ride", "userId": user}}, &d)
		if d.Price.Experiment == nil {
			return ""
		}
		return d.Price.Experiment.Variant
	}
	waitCond(t, "both replicas enrol users in the experiment", func() bool {
		return variant(s, "probe") != "" && variant(b, "probe") != ""
	})
	seen := map[string]int{}
	for i := range 30 {
		u := fmt.Sprintf("user-%d", i)
		va, vb := variant(s, u), variant(b, u)
		if va == "" || va != vb {
			t.Fatalf("user %s: variant %q on A, %q on B", u, va, vb)
		}
		seen[va]++
	}
	if len(seen) != 2 {
		t.Fatalf("30 users all in one variant: %v", seen)
	}

	// The admin key's budget (5/s, burst 10) is one across the replicas:
	// alternating between them does not double it.
	begin := time.Now()
	allowed := 0
	for i := range 40 {
		api := []*stack{s, b}[i%2]
		if r := api.gql(t, `{ __typename }`, nil, adminHeader); r.Status == http.StatusOK {
			allowed++
		} else if r.Status != http.StatusTooManyRequests || r.code() != "RATE_LIMITED" {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
	}
	// The budget left after the admin calls above, plus what refilled while
	// the 40 requests ran; separate per-replica budgets would allow 20+.
	if limit := 10 + int(5*time.Since(begin).Seconds()) + 1; allowed > limit {
		t.Fatalf("%d of 40 admin requests allowed across two replicas; one shared budget allows at most %d", allowed, limit)
	}
}
