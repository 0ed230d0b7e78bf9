package consumer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
)

// TestLag: a process outside the group reads its committed offsets and the
// high watermarks; partitions never committed count everything as lag.
func TestLag(t *testing.T) {
	k := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: []string{"lag-topic"}, Partitions: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })}
	defer w.Close()
	var msgs []kafka.Message
	for i := range 10 {
		msgs = append(msgs, kafka.Message{Topic: "lag-topic", Key: []byte{byte('0' + i%2)}, Value: []byte(fmt.Sprint(i))})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	// The group commits 3 on partition 0 and nothing on partition 1.
	g, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{ID: "lag-group", Brokers: k.Brokers, Topics: []string{"lag-topic"}})
	if err != nil {
		t.Fatal(err)
	}
	gen, err := g.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := gen.CommitOffsets(map[string]map[int]int64{"lag-topic": {0: 3}}); err != nil {
		t.Fatal(err)
	}
	g.Close()

	got, err := Lag(ctx, k.Brokers, "lag-group", []string{"lag-topic"})
	if err != nil {
		t.Fatal(err)
	}
	want := []PartitionLag{{"lag-topic", 0, 3, 5, 2}, {"lag-topic", 1, -1, 5, 5}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Lag = %+v, want %+v", got, want)
	}
	if _, err := Lag(ctx, k.Brokers, "lag-group", []string{"no-such-topic"}); err == nil {
		t.Fatal("Lag of an unknown topic: no error")
	}
}
