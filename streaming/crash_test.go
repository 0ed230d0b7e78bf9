package streaming

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
)

// childEnv makes the test binary run a consumer instead of the tests (see
// runChild): brokers|redis address|group.
const childEnv = "SURGE_STREAMING_TEST_CHILD"

// runChild runs a consumer in this process until it is killed, printing
// "ready" once it has its partitions.
func runChild(spec string) {
	f := strings.Split(spec, "|")
	rdb := redis.NewClient(&redis.Options{Addr: f[1]})
	c := NewConsumer(strings.Split(f[0], ","), rdb, nil, Options{GroupID: f[2], SessionTimeout: 6 * time.Second})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		for len(c.Status().Partitions) == 0 || c.Status().Rebuilding {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Println("ready")
	}()
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestKilledMidStream kills (SIGKILL) a consumer process while events
// flow and it writes and commits, then lets a new instance of the group
// take over: the features are exactly those of all the events, each
// counted once.
func TestKilledMidStream(t *testing.T) {
	e := newEnv(t)
	const group = "features-crash"
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(e.brokers, ",")+"|"+e.redis.Addr+"|"+group)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if s.Text() == "ready" {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("child consumer exited before it was ready")
		}
	case <-time.After(waitLimit):
		t.Fatal("child consumer not ready")
	}

	// 12 minutes of events for two regions, in batches; minute i has
	// 40+i searches and i bookings for each region, supply 100+i.
	b := base()
	var batches [][]ingest.Event
	want := map[string][]features.Minute{}
	for i := 0; i <= 12; i++ {
		var batch []ingest.Event
		for _, region := range []string{"z", "y"} {
			m := features.Minute{Start: b.Add(time.Duration(i) * time.Minute), Supply: float64(100 + i)}
			batch = append(batch, ev(region, ingest.TypeSupplyUpdate, m.Start, withSupply(m.Supply)))
			for k := range 40 + i {
				batch = append(batch, ev(region, ingest.TypeSearch, m.Start.Add(time.Duration(k)*time.Second)))
				m.Searches++
			}
			for k := range i {
				batch = append(batch, ev(region, ingest.TypeBooking, m.Start.Add(52*time.Second+time.Duration(k)*500*time.Millisecond)))
				m.Bookings++
			}
			if i < 12 {
				want[region] = append(want[region], m)
			}
		}
		batches = append(batches, batch)
	}
	for i, batch := range batches {
		e.produce(batch...)
		if i == 7 {
			// Kill once the child has committed something, mid-stream.
			e.waitFor("a commit by the child", func() bool {
				_, committed := e.offsets(group)
				return committed[ingest.TopicUserEvents][0] > 0 || committed[ingest.TopicUserEvents][1] > 0 || committed[ingest.TopicUserEvents][2] > 0
			})
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			killed = true
		}
	}
	ends, committed := e.offsets(group)
	t.Logf("after the kill: committed %v of %v", committed, ends)

	c, _ := e.start(Options{GroupID: group}, nil)
	e.waitCommitted(c)
	for region, minutes := range want {
		got := e.features(region).Online
		checkOnline(t, got, features.FromMinutes(minutes, 1))
		checkOnline(t, got, map[string]float64{features.SearchesCurrent: 52, features.SupplyCurrent: 112})
	}
}
