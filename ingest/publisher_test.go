package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// readAll reads n records of topic from every partition, or fails at the deadline.
func readAll(t *testing.T, brokers []string, topic string, n int) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := map[string]string{}
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
			got[string(m.Value)] = string(m.Key)
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	if len(got) != n {
		t.Fatalf("read %d distinct records of %s, want %d", len(got), topic, n)
	}
	return got
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
	if err := EnsureTopics(ctx, k.Brokers, Topics, 6, 1); err != nil {
		t.Fatal(err)
	}
	// Twice is fine: existing topics are left alone.
	if err := EnsureTopics(ctx, k.Brokers, Topics, 6, 1); err != nil {
		t.Fatalf("second EnsureTopics: %v", err)
	}
	p := NewPublisher(k.Brokers, PublisherOptions{})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for i := range 200 {
		p.Publish(TopicPricingDecisions, fmt.Sprintf("region-%d", i%7), []byte(fmt.Sprintf("record-%d", i)))
	}
	cancel() // Run flushes what is queued before it returns
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := readAll(t, k.Brokers, TopicPricingDecisions, 200)
	if got["record-8"] != "region-1" {
		t.Fatalf("record-8 has key %q, want region-1", got["record-8"])
	}
}

// TestPublisherRetriesWhileKafkaIsDown: records published while the broker
// is stopped are kept and delivered once it is back.
func TestPublisherRetriesWhileKafkaIsDown(t *testing.T) {
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: []string{TopicPricingDecisions}, Partitions: 3})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := NewPublisher(k.Brokers, PublisherOptions{})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	k.Stop()
	for i := range 50 {
		p.Publish(TopicPricingDecisions, "berlin", []byte(fmt.Sprintf("r%d", i)))
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
	readAll(t, k.Brokers, TopicPricingDecisions, 50)
}

func TestPublishNeverBlocks(t *testing.T) {
	p := NewPublisher([]string{"127.0.0.1:1"}, PublisherOptions{Buffer: 2})
	start := time.Now()
	for range 10 {
		p.Publish(TopicPricingDecisions, "k", []byte("v")) // nothing drains the buffer
	}
	if p.Pending() != 2 {
		t.Fatalf("pending %d, want the buffer size 2", p.Pending())
	}
	if time.Since(start) > time.Second {
		t.Fatal("Publish blocked")
	}
}
