package sink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/internal/testenv"
)

// TestThreeBrokersOneStopped runs the production code against a 3-broker
// cluster with topics of replication 3 and min.insync.replicas 2, as
// --kafka-topic-config creates them: two sink members of one group split
// the partitions; the intake's writer (acks=all) produces while the broker
// that coordinates the group, and leads some partitions, is stopped;
// traffic goes on through the two others, and ClickHouse ends with every
// event exactly once. With a second broker stopped, below min ISR, the
// writer is refused.
func TestThreeBrokersOneStopped(t *testing.T) {
	ctx := ctxT(t)
	k := testenv.KafkaWith(t, devenv.KafkaOptions{NumBrokers: 3})
	const partitions = 4
	specs, err := ingest.ParseTopicConfig("*:replication=3,min.insync.replicas=2", partitions)
	if err != nil {
		t.Fatal(err)
	}
	if err := ingest.EnsureTopics(ctx, k.Brokers, specs); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, ctx, k.Brokers, 3, 3)
	addr, db := testenv.ClickHouse(t)
	conn := openMigrated(t, addr, db)

	// A group whose coordinator is not the controller (kfake cannot stop
	// that one), so that stopping the coordinator moves the group too.
	group := "sink"
	for i := 0; k.Cluster().CoordinatorFor(group) == 2; i++ {
		group = fmt.Sprintf("sink-%d", i)
	}
	const all = 5 * partitions
	s1, stop1 := runSink(t, k.Brokers, conn, db, Options{GroupID: group})
	s2, stop2 := runSink(t, k.Brokers, conn, db, Options{GroupID: group})
	split := func() bool {
		p1, p2 := s1.Status().Partitions, s2.Status().Partitions
		return len(p1) > 0 && len(p2) > 0 && len(p1)+len(p2) == all && disjoint(p1, p2)
	}
	waitFor(t, "the two members to split the partitions", split)

	w := ingest.NewEventWriter(k.Brokers)
	defer w.Close()
	evs := genEvents(6000, 23)
	write := func(evs []ingest.Event) {
		t.Helper()
		if err := w.WriteMessages(ctx, eventMessages(t, evs)...); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	const batch = 200
	for lo := 0; lo < 2000; lo += batch {
		write(evs[lo : lo+batch])
	}
	waitFor(t, "the first 2000 events in ClickHouse", func() bool { return rawCount(t, ctx, conn) == 2000 })

	stopped := int(k.Cluster().CoordinatorFor(group))
	led := 0
	for _, topic := range ingest.Topics {
		for p := range partitions {
			if int(k.Cluster().LeaderFor(topic, int32(p))) == stopped {
				led++
			}
		}
	}
	if led == 0 {
		t.Fatalf("broker %d leads no partition: stopping it would prove nothing", stopped)
	}
	begin := time.Now()
	if err := k.StopBroker(ctx, stopped); err != nil {
		t.Fatal(err)
	}
	for lo := 2000; lo < len(evs); lo += batch {
		write(evs[lo : lo+batch])
	}
	t.Logf("broker %d (the group's coordinator, leader of %d of the %d partitions) stopped; 4000 events produced through the two others in %v",
		stopped, led, all, time.Since(begin).Round(time.Millisecond))
	checkReplicas(t, ctx, k.Brokers, 2, 2)
	waitFor(t, "every event in ClickHouse", func() bool {
		p1, p2 := s1.Status().Partitions, s2.Status().Partitions
		return len(p1)+len(p2) == all && rawCount(t, ctx, conn) >= uint64(len(evs)) &&
			caughtUp(s1.Status(), len(p1)) && caughtUp(s2.Status(), len(p2))
	})
	t.Logf("all %d events in ClickHouse %v after the stop; members hold %d and %d partitions; %d+%d resends dropped",
		len(evs), time.Since(begin).Round(time.Millisecond), len(s1.Status().Partitions), len(s2.Status().Partitions),
		s1.Status().Duplicates, s2.Status().Duplicates)
	stop1()
	stop2()
	checkExact(t, ctx, conn, evs)

	// With the other broker that can be stopped gone too, one broker is
	// left, below min.insync.replicas=2: the writer's acks=all produce is
	// refused rather than acknowledged on one copy.
	if err := k.StopBroker(ctx, 1-stopped); err != nil {
		t.Fatal(err)
	}
	var we kafka.WriteErrors
	msg := kafka.Message{Topic: ingest.TopicUserEvents, Key: []byte("r1"), Value: []byte(`{}`)}
	if err := w.WriteMessages(ctx, msg); !errors.As(err, &we) || !errors.Is(we[0], kafka.NotEnoughReplicas) {
		t.Fatalf("produce with one broker left: %v, want NOT_ENOUGH_REPLICAS", err)
	}
}

// checkReplicas fails unless the metadata lists the brokers, and every
// partition of the topics a live leader, the replicas and as many in sync.
func checkReplicas(t *testing.T, ctx context.Context, brokers []string, live, replicas int) {
	t.Helper()
	tr := &kafka.Transport{} // fresh metadata: the shared transport's may be 6 s old
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: ingest.Topics})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != live {
		t.Fatalf("metadata lists %d brokers, want %d", len(md.Brokers), live)
	}
	ids := map[int]bool{}
	for _, b := range md.Brokers {
		ids[b.ID] = true
	}
	for _, topic := range md.Topics {
		for _, p := range topic.Partitions {
			if !ids[p.Leader.ID] || len(p.Replicas) != replicas || len(p.Isr) != replicas {
				t.Fatalf("%s/%d: leader %d, %d replicas, %d in sync; want a live leader, %d and %d", topic.Name, p.ID, p.Leader.ID, len(p.Replicas), len(p.Isr), replicas, replicas)
			}
		}
	}
}

func disjoint(a, b []PartitionStatus) bool {
	for _, p := range a {
		if slices.ContainsFunc(b, func(q PartitionStatus) bool { return q.Topic == p.Topic && q.Partition == p.Partition }) {
			return false
		}
	}
	return true
}
