package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestRunAndReadPartition: a member gets every partition of its topics in
// topic, partition order; ReadPartition delivers a partition from the
// offset asked for; Run returns nil once ctx ends.
func TestRunAndReadPartition(t *testing.T) {
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: []string{"b-topic", "a-topic"}, Partitions: 2})
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Balancer: &kafka.Murmur2Balancer{}}
	defer w.Close()
	var msgs []kafka.Message
	for i := range 20 {
		msgs = append(msgs, kafka.Message{Topic: "a-topic", Partition: 0, Value: []byte(fmt.Sprintf("m%d", i))})
	}
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 })
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		mu    sync.Mutex
		parts []Partition
		got   []string
	)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, k.Brokers, Options{GroupID: "g", Topics: []string{"b-topic", "a-topic"}, SessionTimeout: 6 * time.Second, CoPartitioned: true},
			func(ctx context.Context, g *Generation) {
				mu.Lock()
				parts = slices.Clone(g.Partitions)
				mu.Unlock()
				ReadPartition(ctx, ReaderOptions{Brokers: k.Brokers, MaxWait: 50 * time.Millisecond}, "a-topic", 0, 15, func(m kafka.Message) bool {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, string(m.Value))
					if len(got) == 5 {
						cancel() // the member leaves
					}
					return true
				})
			})
	}()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []Partition{{"b-topic", 0, -1}, {"b-topic", 1, -1}, {"a-topic", 0, -1}, {"a-topic", 1, -1}}
	if !slices.Equal(parts, want) {
		t.Errorf("partitions %v, want %v", parts, want)
	}
	if !slices.Equal(got, []string{"m15", "m16", "m17", "m18", "m19"}) {
		t.Errorf("read %v from offset 15", got)
	}
}

// TestRunRefusesTopicsNotCoPartitioned: with CoPartitioned, topics of
// different partition counts are refused (the error reported, the handler
// never called) instead of consumed with a region's events split.
func TestRunRefusesTopicsNotCoPartitioned(t *testing.T) {
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: []string{"three"}, Partitions: 3})
	cl := &kafka.Client{Addr: kafka.TCP(k.Brokers...)}
	if _, err := cl.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: "two", NumPartitions: 2, ReplicationFactor: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	refused := make(chan error, 10)
	handled := false
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, k.Brokers, Options{GroupID: "g", Topics: []string{"three", "two"}, SessionTimeout: 6 * time.Second, CoPartitioned: true,
			OnError: func(err error) { refused <- err }},
			func(context.Context, *Generation) { handled = true })
	}()
	select {
	case err := <-refused:
		if !errors.Is(err, ErrNotCoPartitioned) {
			t.Fatalf("error %v, want ErrNotCoPartitioned", err)
		}
	case <-ctx.Done():
		t.Fatal("no refusal")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if handled {
		t.Error("the handler ran on topics that are not co-partitioned")
	}
}
