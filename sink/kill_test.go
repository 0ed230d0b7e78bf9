package sink

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// child is a sink running in a re-executed test binary (childMain).
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited, err set
	err  error
	log  string
}

// wait waits for the exit and returns its error.
func (c *child) wait() error {
	<-c.done
	return c.err
}

func startChild(t *testing.T, e *env, group string, extra ...string) *child {
	t.Helper()
	log := filepath.Join(t.TempDir(), "child.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		"SURGE_SINK_TEST_BROKERS="+strings.Join(e.brokers, ","),
		"SURGE_SINK_TEST_CLICKHOUSE="+e.chAddr,
		"SURGE_SINK_TEST_DB="+e.db,
		"SURGE_SINK_TEST_GROUP="+group,
		"SURGE_SINK_TEST_BATCH=250",
	)
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = c.wait()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("child log:\n%s", b)
		}
	})
	return c
}

// killedBySIGKILL reports whether the child's exit was a SIGKILL.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestSIGKILLMidBatch kills a sink process with SIGKILL again and again —
// from outside while it inserts, right after an insert landed but before
// its offsets were committed, right before an insert was sent — and
// restarts it in the same consumer group each time. ClickHouse must end up
// with every event exactly once, in events_raw and in the views.
func TestSIGKILLMidBatch(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := genEvents(24_000, 11)
	half := len(evs) / 2
	produceEvents(t, e.brokers, evs[:half])
	const group = "killed-sink"

	cycles := []struct {
		name string
		env  []string // empty: killed from outside once rows arrive
	}{
		{"from outside while inserting", nil},
		{"after an insert, before its commit", []string{"SURGE_SINK_TEST_KILL_AFTER_SEND=3"}},
		{"before an insert is sent", []string{"SURGE_SINK_TEST_KILL_BEFORE_SEND=2"}},
		{"from outside again", nil},
	}
	for i, c := range cycles {
		if i == 2 {
			produceEvents(t, e.brokers, evs[half:]) // new records while the sink is down
		}
		before := rawCount(t, ctx, e.conn)
		ch := startChild(t, e, group, c.env...)
		if c.env == nil {
			// Only once this child has inserted: a member killed before it
			// ever heard back from the coordinator would hold its
			// partitions forever on kfake (no session timer until its first
			// response; real Kafka starts one at the join).
			waitFor(t, "an insert of the child", func() bool {
				b, _ := os.ReadFile(ch.log)
				return strings.Contains(string(b), "child: inserted")
			})
			if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		err := ch.wait()
		if !killedBySIGKILL(err) {
			b, _ := os.ReadFile(ch.log)
			t.Fatalf("cycle %q: child exited with %v, want SIGKILL; log:\n%s", c.name, err, b)
		}
		rows, positions, _ := rawCounts(t, ctx, e.conn)
		t.Logf("cycle %q: %d rows before, %d after the kill", c.name, before, rows)
		if rows == uint64(len(evs)) {
			t.Fatalf("cycle %q: the child finished everything before it was killed", c.name)
		}
		if rows != positions {
			t.Fatalf("cycle %q: %d rows for %d distinct offsets: duplicates", c.name, rows, positions)
		}
	}

	// The last run finishes the job, commits its offsets to Kafka (lag as
	// Kafka tools see it drops to 0) and stops cleanly.
	ch := startChild(t, e, group)
	waitFor(t, "every event", func() bool { return rawCount(t, ctx, e.conn) >= uint64(len(evs)) })
	waitFor(t, "committed offsets at the end of the topics", func() bool {
		var total int64
		for p, off := range committedOffsets(t, e.brokers, group) {
			if off > 0 && p.topic != "pricing-decisions" {
				total += off
			}
		}
		return total == int64(len(evs))
	})
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ch.wait(); err != nil {
		t.Fatalf("child after SIGTERM: %v", err)
	}
	checkExact(t, ctx, e.conn, evs)
}

// TestStalledMemberReplaced: a sink stops (SIGSTOP: a VM freeze, a long
// pause) past its session timeout while it holds partitions; another
// member takes them over and inserts everything. When the stalled one
// wakes up with its batch at hand, it inserts nothing twice: its next
// insert is checked against what events_raw holds.
func TestStalledMemberReplaced(t *testing.T) {
	ctx := ctxT(t)
	e := newEnv(t)
	evs := genEvents(6000, 31)
	produceEvents(t, e.brokers, evs[:3000])
	const group = "stalled-sink"
	a := startChild(t, e, group, "SURGE_SINK_TEST_STALL_AFTER_SEND=2")
	waitFor(t, "the first member stalled", func() bool {
		b, _ := os.ReadFile(a.log)
		return strings.Contains(string(b), "child: SIGSTOP") && processState(a.cmd.Process.Pid) == "T"
	})
	produceEvents(t, e.brokers, evs[3000:])
	b := startChild(t, e, group)
	waitFor(t, "the second member inserting everything", func() bool { return rawCount(t, ctx, e.conn) >= uint64(len(evs)) })
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The woken member learns it lost its partitions and joins again.
	waitFor(t, "the first member back in the group", func() bool {
		l, _ := os.ReadFile(a.log)
		return strings.Count(string(l), "sink generation") >= 2
	})
	for _, c := range []*child{a, b} {
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := c.wait(); err != nil {
			t.Fatalf("child after SIGTERM: %v", err)
		}
	}
	checkExact(t, ctx, e.conn, evs)
}

// processState is the state letter of a process in /proc (T: stopped).
func processState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}
