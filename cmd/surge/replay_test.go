package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/ingest"
)

// recordingIntake answers POST /v1/events as the intake does (its Response
// types), deduplicating by eventId and validating with ingest.Validate.
type recordingIntake struct {
	mu       sync.Mutex
	seen     map[string]bool
	received []ingest.Event
	keys     map[string]bool
}

func (f *recordingIntake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Events []ingest.Event `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Events) == 0 || len(body.Events) > 1000 {
		http.Error(w, `{"error":{"code":"INVALID_REQUEST"}}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[r.Header.Get(auth.APIKeyHeader)] = true
	var resp ingest.Response
	now := time.Now()
	for i, ev := range body.Events {
		res := ingest.EventResult{Index: i, EventID: ev.EventID, Status: ingest.StatusAccepted}
		switch errs := ingest.Validate(&ev, now, 30*time.Second, time.Hour); {
		case len(errs) > 0:
			res.Status, res.Errors = ingest.StatusRejected, errs
			resp.Rejected++
		case f.seen[ev.EventID]:
			res.Status = ingest.StatusDuplicate
			resp.Duplicates++
		default:
			f.seen[ev.EventID] = true
			f.received = append(f.received, ev)
			resp.Accepted++
		}
		resp.Events = append(resp.Events, res)
	}
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(resp)
}

func run(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--log-level", "error"))
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

var summaryRE = regexp.MustCompile(`sent (\d+) events in .*: (\d+) accepted, (\d+) duplicate, (\d+) rejected`)

// summary reads sent, accepted, duplicate and rejected from an output.
func summary(t *testing.T, out string) [4]int {
	t.Helper()
	m := summaryRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in:\n%s", out)
	}
	var s [4]int
	for i := range s {
		s[i], _ = strconv.Atoi(m[i+1])
	}
	return s
}

// TestHistoryReplayTwice writes a history with simulate, replays it, and
// replays it again: every event arrives once, the second time as
// duplicates; events older than the lateness go as backfill.
func TestHistoryReplayTwice(t *testing.T) {
	intake := &recordingIntake{seen: map[string]bool{}, keys: map[string]bool{}}
	srv := httptest.NewServer(intake)
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "history.csv.gz")

	out, err := run(t, newSimulateCmd(), "--history", "--days", "1", "--regions", "2", "--seed", "3", "--out", path)
	if err != nil {
		t.Fatalf("simulate --history: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`wrote (\d+) events`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("simulate --history said:\n%s", out)
	}
	written, _ := strconv.Atoi(m[1])

	out, err = run(t, newReplayCmd(), "--file", path, "--max", "--url", srv.URL, "--api-key-file", replayKeyFile(t), "--lateness", "1h")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if s := summary(t, out); s != [4]int{written, written, 0, 0} {
		t.Errorf("first replay sent/accepted/duplicate/rejected %v, want all %d accepted\n%s", s, written, out)
	}
	if len(intake.received) != written || !intake.keys["replay-key"] {
		t.Errorf("intake received %d events (keys %v), want %d with the API key", len(intake.received), intake.keys, written)
	}
	now := time.Now()
	for _, ev := range intake.received {
		if old := now.Sub(ev.Timestamp) > time.Hour; old && !ev.Backfill {
			t.Fatalf("event from %v not sent as backfill", ev.Timestamp)
		} else if now.Sub(ev.Timestamp) < 58*time.Minute && ev.Backfill {
			t.Fatalf("recent event from %v sent as backfill", ev.Timestamp)
		}
	}

	out, err = run(t, newReplayCmd(), "--file", path, "--max", "--url", srv.URL, "--lateness", "1h")
	if err != nil {
		t.Fatalf("second replay: %v\n%s", err, out)
	}
	if s := summary(t, out); s != [4]int{written, 0, written, 0} {
		t.Errorf("second replay %v, want all %d duplicate\n%s", s, written, out)
	}
}

func TestReplayMalformedAndRejected(t *testing.T) {
	intake := &recordingIntake{seen: map[string]bool{}, keys: map[string]bool{}}
	srv := httptest.NewServer(intake)
	defer srv.Close()
	now := time.Now().UTC()
	path := filepath.Join(t.TempDir(), "events.csv")
	lines := []string{
		"timestamp,regionId,type,price",
		fmt.Sprintf("%s,berlin,search,", now.Format(time.RFC3339)),
		"not a time,berlin,search,",
		fmt.Sprintf("%s,berlin,booking,", now.Format(time.RFC3339)), // no price: the intake rejects it
		fmt.Sprintf("%s,berlin,booking,9.5", now.Format(time.RFC3339)),
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, newReplayCmd(), "--file", path, "--max", "--url", srv.URL)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if s := summary(t, out); s != [4]int{3, 2, 0, 1} {
		t.Errorf("sent/accepted/duplicate/rejected %v, want 3 2 0 1\n%s", s, out)
	}
	for _, want := range []string{"1 malformed lines skipped", "line 3: timestamp", "price: required", "price: a booking needs a price"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, newReplayCmd(), "--file", path, "--max", "--url", srv.URL, "--strict")
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("--strict: err %v, want one naming line 3\n%s", err, out)
	}
	if _, err := run(t, newReplayCmd(), "--file", path, "--max", "--speed", "2"); err == nil {
		t.Error("--max with --speed accepted")
	}
}

func TestSimulateLive(t *testing.T) {
	intake := &recordingIntake{seen: map[string]bool{}, keys: map[string]bool{}}
	srv := httptest.NewServer(intake)
	defer srv.Close()
	out, err := run(t, newSimulateCmd(), "--rate", "300", "--duration", "2s", "--regions", "6", "--url", srv.URL, "--senders", "2")
	if err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	s := summary(t, out)
	if s[0] < 300 || s[1] != s[0] || s[3] != 0 {
		t.Errorf("sent/accepted/duplicate/rejected %v, want ≥ 300 all accepted\n%s", s, out)
	}
	regions := map[string]bool{}
	for _, ev := range intake.received {
		regions[ev.RegionID] = true
	}
	if !regions["region-6"] || !regions["berlin"] {
		t.Errorf("regions %v, want the five demo regions and region-6", regions)
	}
	if _, err := run(t, newSimulateCmd(), "--history", "--rate", "5", "--out", "x.csv"); err == nil {
		t.Error("--history with --rate accepted")
	}
}

// replayKeyFile writes the replay's API key to a file (keys never travel
// in flags).
func replayKeyFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ingest-api-key")
	if err := os.WriteFile(path, []byte("replay-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
