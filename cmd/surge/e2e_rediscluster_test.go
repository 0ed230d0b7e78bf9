package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/features"
)

// TestE2ERedisClusterFailover runs the whole service on a Redis Cluster of
// 3 masters and 3 replicas and kills (SIGKILL) the master of berlin's slot
// while prices are asked and event batches posted without pause. Prices
// stay served throughout (degraded answers allowed while the slot has no
// master); event batches may be refused with 503 meanwhile, and a client
// that resends them as the intake's contract says (on 503 and 429, after
// Retry-After) gets every event counted exactly once in ClickHouse. Once a
// replica has taken over, prices and events recover by themselves, the
// features consumer writes every region again, and the quote path's Redis
// round trips and /ready succeed. Figures in docs/redis-cluster.md.
func TestE2ERedisClusterFailover(t *testing.T) {
	s := newStack(t, stackOptions{redisCluster: true, consumers: true,
		// Inference timeouts on a busy machine are another fallback.
		config: func(c *config) { c.InferenceTimeout = time.Second }})
	begin := time.Now()

	type priceObs struct {
		at, end       time.Time
		region        string
		status        int
		ok, degraded  bool
		source, error string // forecast source; warnings or what went wrong
	}
	type batchObs struct {
		first, end time.Time // first attempt sent, 202 received
		attempts   int
		refused    []int // statuses before the 202
		accepted   int   // over all attempts
		region     map[string]int
	}
	var (
		mu      sync.Mutex
		prices  []priceObs
		batches []batchObs
		failure error // a request the contract does not allow
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failure == nil {
			failure = err
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup

	priceBody := func(region string) []byte {
		b, _ := json.Marshal(map[string]any{"query": priceQuery, "variables": map[string]any{"in": map[string]any{"regionId": region, "productType": "ride"}}})
		return b
	}
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				region := []string{"berlin", demoRegions[i%len(demoRegions)]}[w]
				o := priceObs{at: time.Now(), region: region}
				resp, err := s.client.Post(s.base+"/graphql", "application/json", bytes.NewReader(priceBody(region)))
				if err != nil {
					fail(fmt.Errorf("price %s: %w", region, err))
					return
				}
				var r struct {
					Data   struct{ Price *quoteJSON } `json:"data"`
					Errors []gqlError                 `json:"errors"`
				}
				o.status = resp.StatusCode
				err = json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				o.end = time.Now()
				if err == nil && r.Data.Price != nil && r.Data.Price.Price > 0 && len(r.Errors) == 0 {
					o.ok, o.degraded, o.source = true, r.Data.Price.Degraded, r.Data.Price.ForecastSource
					o.error = strings.Join(r.Data.Price.Warnings, "; ")
				} else {
					o.error = fmt.Sprintf("decode %v, errors %v", err, r.Errors)
				}
				mu.Lock()
				prices = append(prices, o)
				mu.Unlock()
			}
		})
	}

	// Three clients post batches of 20 searches over the demo regions, each
	// from its own user (so that the rate-limit buckets spread over every
	// slot), and a supply update (through the supply guard's script).
	for w := range 3 {
		wg.Go(func() {
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				default:
				}
				now := time.Now().UTC()
				o := batchObs{first: now, region: map[string]int{}}
				var events []map[string]any
				for j := range 20 {
					region := demoRegions[j%len(demoRegions)]
					events = append(events, map[string]any{"eventId": fmt.Sprintf("c%d-%d-%d", w, b, j), "type": "search",
						"regionId": region, "timestamp": now.Format(time.RFC3339Nano), "userId": fmt.Sprintf("u%d-%d-%d", w, b, j)})
					o.region[region]++
				}
				events = append(events, map[string]any{"eventId": fmt.Sprintf("s%d-%d", w, b), "type": "supply_update",
					"regionId": demoRegions[b%len(demoRegions)], "timestamp": now.Format(time.RFC3339Nano), "availableSupply": 30})
				body, _ := json.Marshal(map[string]any{"events": events})
				for {
					o.attempts++
					req, _ := http.NewRequest(http.MethodPost, s.base+"/v1/events", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Api-Key", testIngestKey)
					resp, err := s.client.Do(req)
					if err != nil {
						fail(fmt.Errorf("batch %d: %w", b, err))
						return
					}
					raw, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					var r struct{ Accepted, Duplicates, Rejected int }
					_ = json.Unmarshal(raw, &r)
					o.accepted += r.Accepted
					if resp.StatusCode == http.StatusAccepted {
						if r.Rejected != 0 || r.Accepted+r.Duplicates != len(events) {
							fail(fmt.Errorf("batch %d: 202 with %s", b, raw))
							return
						}
						break
					}
					if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
						fail(fmt.Errorf("batch %d: %d %s", b, resp.StatusCode, raw))
						return
					}
					o.refused = append(o.refused, resp.StatusCode)
					// The contract: send the whole request again after Retry-After.
					wait, err := strconv.Atoi(resp.Header.Get("Retry-After"))
					if err != nil || wait < 1 {
						fail(fmt.Errorf("batch %d: %d without Retry-After", b, resp.StatusCode))
						return
					}
					select {
					case <-stop: // the batch is finished even so
					case <-time.After(time.Duration(wait) * time.Second):
					}
				}
				o.end = time.Now()
				mu.Lock()
				batches = append(batches, o)
				mu.Unlock()
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// snapshot copies the observations; it fails the test on a request
	// the contract does not allow.
	snapshot := func() ([]priceObs, []batchObs) {
		mu.Lock()
		defer mu.Unlock()
		if failure != nil {
			t.Fatal(failure)
		}
		return slices.Clone(prices), slices.Clone(batches)
	}
	waitCond(t, "traffic before the failover", func() bool {
		p, b := snapshot()
		return len(p) >= 40 && len(b) >= 5
	})

	masterOf := map[string]*devenv.Process{} // region → master of its slot
	for _, r := range demoRegions {
		m, err := s.cluster.Master(t.Context(), features.Key(r))
		if err != nil {
			t.Fatal(err)
		}
		masterOf[r] = m
	}
	killAt := time.Now()
	killed, promoted, err := s.cluster.FailMaster(t.Context(), features.Key("berlin"))
	if err != nil {
		t.Fatal(err)
	}
	failedOver := time.Now()
	var hit []string // the regions on the killed master
	for _, r := range demoRegions {
		if masterOf[r] == killed {
			hit = append(hit, r)
		}
	}
	t.Logf("killed master %s of berlin's slot (regions %v); replica %s took over after %s", killed.Addr, hit, promoted.Addr, failedOver.Sub(killAt).Round(time.Millisecond))

	// Recovered: 20 berlin prices in a row not degraded,
	// and a batch accepted at its first attempt, all started after the
	// failover.
	waitCond(t, "prices and events to recover after the failover", func() bool {
		p, b := snapshot()
		run := 0
		for _, o := range p {
			switch {
			case o.region != "berlin" || o.at.Before(failedOver):
			case o.ok && !o.degraded:
				run++
			default:
				run = 0
			}
		}
		firstTry := slices.ContainsFunc(b, func(o batchObs) bool { return o.first.After(failedOver) && o.attempts == 1 })
		return run >= 20 && firstTry
	})
	recovered := time.Now()
	close(stop)
	wg.Wait()
	p, b := snapshot()

	// Prices: always served. Degraded for want of Redis — connection
	// refused by the dead master, or the price path's 25 ms Redis budget
	// spent in the client's retries — only after the kill and only in the
	// regions of the killed master. A timeout elsewhere is the busy
	// machine (it happens without a kill too) and is counted apart, as are
	// other fallbacks.
	var failed, otherwise int
	degraded := map[string]int{} // by region/forecast source
	var firstBad, lastBad time.Time
	var slowest time.Duration
	for _, o := range p {
		slowest = max(slowest, o.end.Sub(o.at))
		if !o.ok {
			failed++
			t.Errorf("price %s at %+.2fs: HTTP %d %s", o.region, o.at.Sub(killAt).Seconds(), o.status, o.error)
			continue
		}
		if !o.degraded {
			continue
		}
		noRedis := strings.Contains(o.error, "online store unavailable")
		timeout := strings.Contains(o.error, "context deadline exceeded")
		byKill := slices.Contains(hit, o.region) && !o.end.Before(killAt)
		switch {
		case noRedis && !timeout && !byKill:
			t.Errorf("price %s without Redis at %+.2fs, its slot's master alive: %s", o.region, o.at.Sub(killAt).Seconds(), o.error)
		case noRedis && byKill:
			degraded[o.region+"/"+o.source]++
			if firstBad.IsZero() {
				firstBad = o.at
			}
			lastBad = o.end
		default:
			otherwise++
		}
	}
	if len(degraded) == 0 {
		t.Error("no price was degraded by the kill: the test missed the failover window")
	}
	window := func(from, to time.Time) string {
		if from.IsZero() {
			return "none"
		}
		return fmt.Sprintf("from %+.2fs to %+.2fs after the kill", from.Sub(killAt).Seconds(), to.Sub(killAt).Seconds())
	}
	t.Logf("prices: %d answered (%d not served; degraded by the kill, by region/forecast source: %v, %s; %d degraded otherwise), slowest %s",
		len(p), failed, degraded, window(firstBad, lastBad), otherwise, slowest.Round(time.Millisecond))

	// Events: refused (503/429) only around the failover, then resent; each
	// counted exactly once in ClickHouse.
	sent := map[string]int{}
	var refused, resent, reaccepted int
	var took []time.Duration // of the batches accepted at once
	firstBad, lastBad = time.Time{}, time.Time{}
	for _, o := range b {
		for r, n := range o.region {
			sent[r] += n
		}
		refused += len(o.refused)
		if len(o.refused) == 0 {
			took = append(took, o.end.Sub(o.first))
		}
		if len(o.refused) > 0 {
			resent++
			if firstBad.IsZero() {
				firstBad = o.first
			}
			lastBad = o.end
		}
		reaccepted += o.accepted - 21 // an event accepted twice: its dedup key died unreplicated with the master
	}
	slices.Sort(took)
	t.Logf("events: %d batches of 21 (accepted at once in %s median, %s max; %d refused attempts in %d batches, %s; %d events re-accepted after lost dedup keys); recovered %s after the kill",
		len(b), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		refused, resent, window(firstBad, lastBad), reaccepted, recovered.Sub(killAt).Round(time.Millisecond))

	// The features consumer writes every region's features again, from the
	// events received after the failover.
	for _, region := range demoRegions {
		waitCond(t, "online features of "+region+" from the events after the failover", func() bool {
			var f struct {
				Features struct {
					Values []struct {
						Name  string
						Value float64
					}
				}
			}
			s.mustData(t, `query($region: ID!) { features(regionId: $region) { values { name value } } }`, map[string]any{"region": region}, &f)
			got := map[string]float64{}
			for _, v := range f.Features.Values {
				got[v.Name] = v.Value
			}
			return got["supply_current"] == 30 && got[features.LastEventReceivedField] >= float64(failedOver.UnixMilli())
		})
	}

	// The quote path's Redis round trips all succeed again: its reads and
	// its background writes (quote cache, smoothing state, surge changes,
	// one pipeline over every slot).
	// /ready pings a master; the dead one holds no slot any more.
	for range 20 {
		if code, r := s.ready(t); code != http.StatusOK {
			t.Fatalf("/ready after the recovery: %d %+v", code, r)
		}
	}
	quoteErrors := func() float64 {
		v, ok := metricValue(s.metrics(t), "surge_quote_redis_errors_total", "")
		if !ok {
			t.Fatal("no surge_quote_redis_errors_total in /metrics")
		}
		return v
	}
	before := quoteErrors()
	var last quoteJSON
	for _, r := range demoRegions {
		last = s.price(t, r, "ride")
	}
	waitCond(t, "the last quote in Redis", func() bool {
		return s.a.rdb.Exists(t.Context(), "quote:{"+last.QuoteID+"}").Val() == 1
	})
	if after := quoteErrors(); after != before {
		t.Errorf("quote path: %v failed Redis round trips after the recovery", after-before)
	}

	vars := map[string]any{"from": begin.Add(-time.Hour).Format(time.RFC3339), "to": time.Now().Add(time.Hour).Format(time.RFC3339)}
	for _, region := range demoRegions {
		want := sent[region]
		waitCond(t, fmt.Sprintf("%d searches of %s in ClickHouse", want, region), func() bool {
			var h struct{ DemandHistory []struct{ Searches int } }
			s.mustData(t, `query($region: ID!, $from: Time!, $to: Time!) { demandHistory(regionId: $region, from: $from, to: $to, granularity: HOUR) { searches } }`,
				map[string]any{"region": region, "from": vars["from"], "to": vars["to"]}, &h)
			n := 0
			for _, p := range h.DemandHistory {
				n += p.Searches
			}
			if n > want {
				t.Fatalf("ClickHouse counts %d searches of %s, want %d: an event was counted twice", n, region, want)
			}
			return n == want
		})
	}
}
