package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/spool"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("SURGE_SPOOL_CHILD_DIR"); dir != "" {
		os.Exit(spoolChild(dir))
	}
	testenv.Main(m)
}

// spoolChild publishes SURGE_SPOOL_CHILD_N records through a spooled
// publisher to SURGE_SPOOL_CHILD_BROKERS, says so, and kills itself with
// SIGKILL right away: whatever Kafka did not acknowledge yet is only in
// the spool.
func spoolChild(dir string) int {
	n, _ := strconv.Atoi(os.Getenv("SURGE_SPOOL_CHILD_N"))
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	p := New(strings.Split(os.Getenv("SURGE_SPOOL_CHILD_BROKERS"), ","), Options{Spool: sp, Logger: slog.New(slog.DiscardHandler)})
	go func() { _ = p.Run(context.Background()) }()
	for i := range n {
		if !p.Publish(ingest.TopicPricingDecisions, fmt.Sprintf("region-%d", i%7), []byte(fmt.Sprintf("record-%d", i))) {
			fmt.Fprintln(os.Stderr, "publish refused")
			return 2
		}
	}
	fmt.Println("published")
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// TestSpoolSurvivesSIGKILL: a process that published records (Publish
// returned true) and died by SIGKILL before Kafka acknowledged them all —
// with Kafka down, and with Kafka up and the process killed mid-stream —
// loses none: the next publisher on the same spool sends them (at least
// once; the sink drops copies by quote id).
func TestSpoolSurvivesSIGKILL(t *testing.T) {
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: []string{ingest.TopicPricingDecisions}, Partitions: 3})
	const n = 5000
	for _, c := range []struct{ name, brokers string }{
		{"kafka down", "127.0.0.1:1"},
		{"kafka up", k.Brokers[0]},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "SURGE_SPOOL_CHILD_DIR="+dir, "SURGE_SPOOL_CHILD_N="+strconv.Itoa(n), "SURGE_SPOOL_CHILD_BROKERS="+c.brokers)
			out, err := cmd.Output()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !strings.Contains(string(out), "published") {
				t.Fatalf("child: %v, output %q", err, out)
			}
			sp, err := spool.Open(dir, spool.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			p := New(k.Brokers, Options{Spool: sp, Logger: slog.New(slog.DiscardHandler)})
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			got := readDistinct(t, k.Brokers, ingest.TopicPricingDecisions, n, "record-")
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("%d of %d published records on Kafka", len(got), n)
			}
		})
	}
}

// readDistinct reads the topic until it holds n distinct values with the
// prefix, or a minute has passed.
func readDistinct(t *testing.T, brokers []string, topic string, n int, prefix string) map[string]bool {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := map[string]bool{}
		scanTopic(t, brokers, topic, func(m kafka.Message) {
			if strings.HasPrefix(string(m.Value), prefix) {
				got[string(m.Value)] = true
			}
		})
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readAll reads n records of topic from every partition, or fails.
func readAll(t *testing.T, brokers []string, topic string, n int) map[string]string {
	t.Helper()
	got := map[string]string{}
	scanTopic(t, brokers, topic, func(m kafka.Message) { got[string(m.Value)] = string(m.Key) })
	if len(got) != n {
		t.Fatalf("read %d distinct records of %s, want %d", len(got), topic, n)
	}
	return got
}

// scanTopic calls fn with every record of every partition of topic.
func scanTopic(t *testing.T, brokers []string, topic string, fn func(kafka.Message)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		last, err := lastOffset(brokers[0], topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			continue // nothing on this partition
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 50 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read partition %d: %v", p.ID, err)
			}
			fn(m)
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
}

func lastOffset(broker, topic string, partition int) (int64, error) {
	c, err := kafka.DialLeader(context.Background(), "tcp", broker, topic, partition)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.ReadLastOffset()
}

func TestPublisherDeliversKeyedRecords(t *testing.T) {
	k := testenv.Kafka(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	specs, err := ingest.ParseTopicConfig("", 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := ingest.EnsureTopics(ctx, k.Brokers, specs); err != nil {
		t.Fatal(err)
	}
	p := New(k.Brokers, Options{})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for i := range 200 {
		p.Publish(ingest.TopicPricingDecisions, fmt.Sprintf("region-%d", i%7), []byte(fmt.Sprintf("record-%d", i)))
	}
	cancel() // Run flushes what is queued before it returns
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := readAll(t, k.Brokers, ingest.TopicPricingDecisions, 200)
	if got["record-8"] != "region-1" {
		t.Fatalf("record-8 has key %q, want region-1", got["record-8"])
	}
}

// TestPublisherRetriesWhileKafkaIsDown: records published while the broker
// is stopped are kept and delivered once it is back.
func TestPublisherRetriesWhileKafkaIsDown(t *testing.T) {
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: []string{ingest.TopicPricingDecisions}, Partitions: 3})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(k.Brokers, Options{})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	k.Stop()
	for i := range 50 {
		p.Publish(ingest.TopicPricingDecisions, "berlin", []byte(fmt.Sprintf("r%d", i)))
	}
	time.Sleep(500 * time.Millisecond) // some produce attempts fail meanwhile
	if err := k.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := p.Pending(); n > 0 {
		t.Fatalf("%d records still pending 20 s after Kafka came back", n)
	}
	cancel()
	<-done
	readAll(t, k.Brokers, ingest.TopicPricingDecisions, 50)
}

func TestPublishNeverBlocks(t *testing.T) {
	p := New([]string{"127.0.0.1:1"}, Options{Buffer: 2})
	start := time.Now()
	for range 10 {
		p.Publish(ingest.TopicPricingDecisions, "k", []byte("v")) // nothing drains the buffer
	}
	if p.Pending() != 2 {
		t.Fatalf("pending %d, want the buffer size 2", p.Pending())
	}
	if time.Since(start) > time.Second {
		t.Fatal("Publish blocked")
	}
}
