//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/intakeclient"
)

var (
	report    = flag.String("report", "", "write the figures as Markdown to this file (make test-faults: docs/reliability.md)")
	nEvents   = flag.Int("events", 60_000, "events the careful client sends during the faults")
	eventRate = flag.Int("event-rate", 600, "events per second the client sends")
	slowEvery = flag.Int("slow-produce-every", 150, "the broker holds every n-th produce request past its client's timeout (a lost acknowledgement)")
)

var regions = []string{"berlin", "london", "nyc", "paris", "sf"}

// proc is a surge process (the broker or the service) in its own process
// group, killed with SIGKILL and started again with the same arguments.
type proc struct {
	name string
	args []string
	env  []string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
}

func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

func (p *proc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// system is the whole stack, each part a process of its own.
type system struct {
	redis, clickhouse *devenv.Process
	broker, service   *proc
	api               string
	ch                driver.Conn
	http              *http.Client
}

// ready reports whether the service answers /ready with 200.
func (s *system) ready() bool {
	resp, err := s.http.Get(s.api + "/ready")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > within {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(begin)
}

// price asks for one price; ok when the answer holds a price (degraded
// answers count).
func (s *system) price(region string) bool {
	_, ok := s.quote(region)
	return ok
}

// quote asks for one price and returns its quote id.
func (s *system) quote(region string) (string, bool) {
	body, _ := json.Marshal(map[string]any{
		"query":     `query($in: PriceInput!) { price(input: $in) { quoteId price degraded } }`,
		"variables": map[string]any{"in": map[string]any{"regionId": region, "productType": "ride"}},
	})
	resp, err := s.http.Post(s.api+"/graphql", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var r struct {
		Data *struct {
			Price *struct{ QuoteID string } `json:"price"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&r) != nil || r.Data == nil || r.Data.Price == nil {
		return "", false
	}
	return r.Data.Price.QuoteID, r.Data.Price.QuoteID != ""
}

// faultsKey is the service's ingest key (INGEST_API_KEYS).
const faultsKey = "faults-ingest-key"

// probe sends one event (region "probe", outside the counted ones) and
// reports whether the intake acknowledged it (202).
func (s *system) probe(n int) bool {
	body, _ := json.Marshal(map[string]any{"events": []map[string]any{{
		"eventId": "probe-" + strconv.Itoa(n), "type": "search", "regionId": "probe", "timestamp": time.Now().UTC().Format(time.RFC3339Nano),
	}}})
	req, err := http.NewRequest(http.MethodPost, s.api+ingest.EventsPath, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Api-Key", faultsKey)
	resp, err := s.http.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusAccepted
}

// priceLoad is an outside client asking for prices: a request that fails
// is retried every 200 ms for up to 60 s, as an app would.
type priceLoad struct {
	requests, firstTry, answered, unanswered atomic.Int64
	mu                                       sync.Mutex
	quotes                                   []any // ids of the quotes answered
}

func (l *priceLoad) answer(id string) {
	l.answered.Add(1)
	l.mu.Lock()
	l.quotes = append(l.quotes, id)
	l.mu.Unlock()
}

func (l *priceLoad) run(ctx context.Context, s *system, workers int, interval time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				region := regions[(w+i)%len(regions)]
				l.requests.Add(1)
				if id, ok := s.quote(region); ok {
					l.firstTry.Add(1)
					l.answer(id)
					continue
				}
				give := time.Now().Add(time.Minute)
				for {
					time.Sleep(200 * time.Millisecond)
					if id, ok := s.quote(region); ok {
						l.answer(id)
						break
					}
					if time.Now().After(give) {
						l.unanswered.Add(1)
						break
					}
				}
			}
		})
	}
	return &wg
}

// sent is what the event client had acknowledged, by type.
type sent struct {
	acked, searches, bookings, exposures, conversions int64
	retries                                           int64
	err                                               error
}

// sendEvents sends n events at rate/s through the careful client, each
// batch's timestamps taken when it is built.
func sendEvents(ctx context.Context, api string, n, rate int) sent {
	c, err := intakeclient.NewClient(intakeclient.ClientOptions{
		URL: api + ingest.EventsPath, APIKey: faultsKey, MaxAttempts: 1000, MaxBackoff: 2 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return sent{err: err}
	}
	var out sent
	rng := rand.New(rand.NewPCG(7, 7))
	const batch = 500
	begin := time.Now()
	for lo := 0; lo < n; lo += batch {
		if d := time.Until(begin.Add(time.Duration(lo) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		now := time.Now().UTC()
		var evs []ingest.Event
		var searches, bookings, exposures, conversions int64
		for i := lo; i < min(lo+batch, n); i++ {
			e := ingest.Event{EventID: "fault-" + strconv.Itoa(i), Type: ingest.TypeSearch, RegionID: regions[rng.IntN(len(regions))],
				Timestamp: now, UserID: "u" + strconv.Itoa(rng.IntN(500))}
			if rng.IntN(5) == 0 {
				p := float64(5 + rng.IntN(30))
				e.Type, e.Price = ingest.TypeBooking, &p
				bookings++
			} else {
				searches++
			}
			if rng.IntN(10) == 0 {
				e.Experiment = &ingest.Experiment{ID: "fault-exp", Variant: []string{"A", "B"}[rng.IntN(2)]}
				if e.Type == ingest.TypeSearch {
					exposures++
				} else {
					conversions++
				}
			}
			evs = append(evs, e)
		}
		r, err := c.Send(ctx, evs)
		if err != nil {
			out.err = fmt.Errorf("batch at %d: %w", lo, err)
			return out
		}
		if got := r.Accepted + r.Duplicate; got != len(evs) {
			out.err = fmt.Errorf("batch at %d: %d of %d acknowledged (%+v)", lo, got, len(evs), r)
			return out
		}
		out.acked += int64(len(evs))
		out.searches += searches
		out.bookings += bookings
		out.exposures += exposures
		out.conversions += conversions
	}
	out.retries = c.Stats().Retries
	return out
}

type step struct {
	name     string
	kill     func()
	restart  func(t *testing.T)
	recovery time.Duration
}

// TestFaults is the suite: the stack under load, each part killed in turn
// and then all at once, with lost produce acknowledgements throughout.
func TestFaults(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "surge")
	build := exec.Command("go", "build", "-o", bin, "./cmd/surge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)

	s := &system{http: &http.Client{Timeout: 10 * time.Second}}
	if s.redis, err = devenv.StartRedis(ctx, devenv.RedisOptions{Dir: filepath.Join(dir, "redis"), Persist: true, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.redis.Stop() })
	if s.clickhouse, err = devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{Dir: filepath.Join(dir, "clickhouse"), Logger: logger}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.clickhouse.Stop() })
	brokerAddr := freeAddr(t)
	s.broker = &proc{name: "broker", log: filepath.Join(dir, "broker.log"), args: []string{bin, "broker",
		"--data-dir", filepath.Join(dir, "broker"), "--addr", brokerAddr, "--fault-slow-produce-every", strconv.Itoa(*slowEvery)}}
	s.broker.start(t)
	t.Cleanup(s.broker.stop)
	waitFor(t, "the broker", time.Minute, func() bool {
		c, err := net.Dial("tcp", brokerAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	apiAddr := freeAddr(t)
	s.api = "http://" + apiAddr
	s.service = &proc{name: "service", log: filepath.Join(dir, "service.log"),
		args: []string{bin, "dev", "--data-dir", filepath.Join(dir, "service"), "--listen", apiAddr},
		env: []string{"REDIS_ADDR=" + s.redis.Addr, "CLICKHOUSE_ADDR=" + s.clickhouse.Addr, "KAFKA_BROKERS=" + brokerAddr,
			"LOG_FORMAT=text", "LIVE_REPRICE_INTERVAL=-1s", "INGEST_API_KEYS=" + faultsKey}}
	s.service.start(t)
	t.Cleanup(s.service.stop)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{s.service.log, s.broker.log} {
				b, _ := os.ReadFile(f)
				t.Logf("%s (last 4 KB):\n%s", f, b[max(0, len(b)-4096):])
			}
		}
	})
	waitFor(t, "the service ready", 5*time.Minute, s.ready)
	if s.ch, err = analytics.Open(ctx, analytics.Options{Addr: s.clickhouse.Addr, Database: "surge"}); err != nil {
		t.Fatal(err)
	}

	// What the generated history of `surge dev` already put in the views.
	before, err := readCounts(ctx, s.ch)
	if err != nil {
		t.Fatal(err)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	prices := &priceLoad{}
	priceWG := prices.run(loadCtx, s, 4, 40*time.Millisecond) // 100 prices/s
	sentCh := make(chan sent, 1)
	begin := time.Now()
	go func() { sentCh <- sendEvents(ctx, s.api, *nEvents, *eventRate) }()

	restartDev := func(p *devenv.Process) func(t *testing.T) {
		return func(t *testing.T) {
			if err := p.Restart(ctx); err != nil {
				t.Fatalf("restart %s: %v", p.Name, err)
			}
		}
	}
	steps := []step{
		{name: "Redis", kill: func() { _ = s.redis.Kill() }, restart: restartDev(s.redis)},
		{name: "ClickHouse", kill: func() { _ = s.clickhouse.Kill() }, restart: restartDev(s.clickhouse)},
		{name: "broker", kill: s.broker.kill, restart: s.broker.start},
		{name: "service", kill: s.service.kill, restart: s.service.start},
		{name: "all at once", kill: func() {
			s.service.kill()
			s.broker.kill()
			_ = s.clickhouse.Kill()
			_ = s.redis.Kill()
		}, restart: func(t *testing.T) {
			restartDev(s.redis)(t)
			restartDev(s.clickhouse)(t)
			s.broker.start(t)
			s.service.start(t)
		}},
	}
	time.Sleep(10 * time.Second) // load under way before the first fault
	probes := 0
	for i := range steps {
		st := &steps[i]
		st.kill()
		time.Sleep(3 * time.Second)
		restarted := time.Now()
		st.restart(t)
		// Recovered: the service ready again, a price answered and an
		// event acknowledged.
		waitFor(t, "recovery after killing "+st.name, 3*time.Minute, func() bool {
			probes++
			return s.ready() && s.price("berlin") && s.probe(probes)
		})
		st.recovery = time.Since(restarted)
		t.Logf("%s killed with SIGKILL for 3 s: recovered %s after the restart", st.name, st.recovery.Round(100*time.Millisecond))
		time.Sleep(5 * time.Second)
	}

	var got sent
	select {
	case got = <-sentCh:
	case <-ctx.Done():
		t.Fatal("the event client did not finish")
	}
	if got.err != nil {
		t.Fatalf("event client: %v", got.err)
	}
	sendTook := time.Since(begin)
	stopLoad()
	priceWG.Wait()

	// Every acknowledged event lands once, in events_raw and in each view.
	read := func() (counts, error) {
		c, err := readCounts(ctx, s.ch)
		return c.minus(before), err
	}
	var c counts
	drained := waitFor(t, "every acknowledged event in ClickHouse", 5*time.Minute, func() bool {
		var err error
		c, err = read()
		return err == nil && c.rows >= uint64(got.acked)
	})
	time.Sleep(3 * time.Second) // anything more would be a duplicate: let it land
	if c, err = read(); err != nil {
		t.Fatal(err)
	}
	// Every quote answered is in the audit trail, once.
	var audited, auditRows uint64
	waitFor(t, "every answered quote in pricing_decisions", 5*time.Minute, func() bool {
		audited, auditRows, err = auditedQuotes(ctx, s.ch, prices.quotes)
		return err == nil && audited == uint64(len(prices.quotes))
	})
	t.Logf("audit: %d quotes answered, %d in pricing_decisions (%d rows)", len(prices.quotes), audited, auditRows)
	if auditRows != audited {
		t.Errorf("pricing_decisions holds %d rows for %d answered quotes: some twice", auditRows, audited)
	}
	onKafka, err := eventRecords(ctx, brokerAddr)
	if err != nil {
		t.Fatal(err)
	}
	copies := onKafka - got.acked - int64(probes)
	t.Logf("Kafka holds %d event records for %d acknowledged events and %d probes: at most %d copies, dropped by the sink", onKafka, got.acked, probes, copies)
	want := counts{uint64(got.acked), uint64(got.acked), uint64(got.searches), uint64(got.bookings), uint64(got.bookings), uint64(got.exposures), uint64(got.conversions)}
	answeredShare := float64(prices.answered.Load()) / float64(max(1, prices.requests.Load()))
	firstShare := float64(prices.firstTry.Load()) / float64(max(1, prices.requests.Load()))
	t.Logf("events: %d acknowledged in %s (%d client retries); ClickHouse %+v, want %+v", got.acked, sendTook.Round(time.Second), got.retries, c, want)
	t.Logf("prices: %d requests, %.2f %% answered at the first try, %.2f %% with retries, %d unanswered",
		prices.requests.Load(), 100*firstShare, 100*answeredShare, prices.unanswered.Load())

	if *report != "" {
		writeReport(t, *report, steps, got, c, want, prices, sendTook, drained, onKafka, copies, audited, auditRows)
	}
	if c != want {
		t.Errorf("ClickHouse counts %+v, want %+v (acknowledged events, each once)", c, want)
	}
	if prices.unanswered.Load() > 0 {
		t.Errorf("%d price requests never answered", prices.unanswered.Load())
	}
	for _, st := range steps {
		if st.recovery > 30*time.Second {
			t.Errorf("%s: recovery took %s, target ≤ 30 s", st.name, st.recovery)
		}
	}
}

// counts are what ClickHouse holds of the suite's events: events_raw rows
// and distinct ids, and the sums of the views over the counted regions.
type counts struct{ rows, ids, searches, bookings, userBookings, exposures, conversions uint64 }

func (c counts) minus(o counts) counts {
	return counts{c.rows - o.rows, c.ids - o.ids, c.searches - o.searches, c.bookings - o.bookings,
		c.userBookings - o.userBookings, c.exposures - o.exposures, c.conversions - o.conversions}
}

func readCounts(ctx context.Context, ch driver.Conn) (c counts, err error) {
	q := func(sql string, dst ...any) {
		if err == nil {
			err = ch.QueryRow(ctx, sql).Scan(dst...)
		}
	}
	q("SELECT count(), uniqExact(event_id) FROM surge.events_raw WHERE event_id LIKE '%:fault-%'", &c.rows, &c.ids)
	q("SELECT sum(searches), sum(bookings) FROM surge.demand_minute WHERE region_id != 'probe'", &c.searches, &c.bookings)
	q("SELECT sum(bookings) FROM surge.user_activity_minute", &c.userBookings)
	q("SELECT sum(exposures), sum(conversions) FROM surge.experiment_metrics_daily WHERE experiment_id = 'fault-exp'", &c.exposures, &c.conversions)
	return c, err
}

// eventRecords is the number of records on the event topics.
func eventRecords(ctx context.Context, broker string) (int64, error) {
	cl := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 10 * time.Second}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: ingest.EventTopics})
	if err != nil {
		return 0, err
	}
	req := map[string][]kafka.OffsetRequest{}
	for _, tp := range md.Topics {
		for _, p := range tp.Partitions {
			req[tp.Name] = append(req[tp.Name], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
		}
	}
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return 0, p.Error
			}
			n += p.LastOffset - p.FirstOffset
		}
	}
	return n, nil
}

// auditedQuotes counts the quotes of ids found in pricing_decisions, and
// their rows.
func auditedQuotes(ctx context.Context, ch driver.Conn, ids []any) (found, rows uint64, err error) {
	for lo := 0; lo < len(ids); lo += 1000 {
		var f, r uint64
		if err := ch.QueryRow(ctx, "SELECT uniqExact(quote_id), count() FROM surge.pricing_decisions WHERE quote_id IN ?",
			clickhouse.GroupSet{Value: ids[lo:min(lo+1000, len(ids))]}).Scan(&f, &r); err != nil {
			return 0, 0, err
		}
		found, rows = found+f, rows+r
	}
	return found, rows, nil
}

func writeReport(t *testing.T, path string, steps []step, got sent, c, want counts, prices *priceLoad, sendTook, drained time.Duration, onKafka, copies int64, audited, auditRows uint64) {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Reliability: the fault-injection suite\n\n")
	fmt.Fprintf(&b, "`make test-faults` (`go test -tags faults ./faults/ -args -report docs/reliability.md`) runs Redis, ClickHouse,\n")
	fmt.Fprintf(&b, "the broker (`surge broker`, holding every %d-th produce request past its client's timeout: a\n", *slowEvery)
	fmt.Fprintf(&b, "lost acknowledgement, so the records are written and the client retries) and the service (`surge dev`\n")
	fmt.Fprintf(&b, "against them) as separate processes. Four outside GraphQL clients ask for 25 prices/s each (a failed\n")
	fmt.Fprintf(&b, "request is retried every 200 ms for up to a minute, the client waiting for it) and the careful\n")
	fmt.Fprintf(&b, "event client (`intakeclient.Client`) sends %d events at %d/s. Each part is killed with SIGKILL for 3 s\n", *nEvents, *eventRate)
	fmt.Fprintf(&b, "and restarted, one at a ")
	fmt.Fprintf(&b, "time, then all four at once.\n\n")
	fmt.Fprintf(&b, "Last run: %s on %s (%d cores), Go %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "| killed (SIGKILL, down 3 s) | recovery from the restart: ready, a price answered, an event acknowledged | target |\n|---|---:|---|\n")
	for _, st := range steps {
		verdict := "≤ 30 s: met"
		if st.recovery > 30*time.Second {
			verdict = "≤ 30 s: **missed**"
		}
		fmt.Fprintf(&b, "| %s | %.1f s | %s |\n", st.name, st.recovery.Seconds(), verdict)
	}
	fmt.Fprintf(&b, "\n| measure | figure | target |\n|---|---:|---|\n")
	fmt.Fprintf(&b, "| events acknowledged | %d of %d sent, in %s (%d client retries) | all |\n", got.acked, *nEvents, sendTook.Round(time.Second), got.retries)
	fmt.Fprintf(&b, "| records on the event topics | %d: %d copies of acknowledged events (resends after lost acks, Redis losing its last second, retries), dropped by the sink | |\n", onKafka, copies)
	fmt.Fprintf(&b, "| events_raw rows / distinct eventIds | %d / %d | %d / %d |\n", c.rows, c.ids, want.rows, want.ids)
	fmt.Fprintf(&b, "| demand_minute searches / bookings | %d / %d | %d / %d |\n", c.searches, c.bookings, want.searches, want.bookings)
	fmt.Fprintf(&b, "| user_activity_minute bookings | %d | %d |\n", c.userBookings, want.userBookings)
	fmt.Fprintf(&b, "| experiment_metrics_daily exposures / conversions | %d / %d | %d / %d |\n", c.exposures, c.conversions, want.exposures, want.conversions)
	fmt.Fprintf(&b, "| acknowledged → in ClickHouse after the last event | %s | |\n", drained.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "| price requests answered at the first try | %.2f %% of %d | |\n", 100*float64(prices.firstTry.Load())/float64(max(1, prices.requests.Load())), prices.requests.Load())
	fmt.Fprintf(&b, "| price requests answered (with the client's retries; degraded allowed) | %.2f %% (%d never) | 100 %% |\n",
		100*float64(prices.answered.Load())/float64(max(1, prices.requests.Load())), prices.unanswered.Load())
	fmt.Fprintf(&b, "| answered quotes in the audit trail (pricing_decisions) | %d of %d, %d rows | all, once |\n", audited, len(prices.quotes), auditRows)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Errorf("write the report: %v", err)
	}
}
