package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
)

func TestParseTopicConfig(t *testing.T) {
	for _, c := range []struct {
		name, config string
		partitions   int
		want         map[string]string // topic → TopicSpec.String(); others as the default
		wantErr      string
	}{
		{name: "defaults", want: map[string]string{TopicUserEvents: "user-events:partitions=6,replication=1"}},
		{name: "the partitions given", partitions: 12, want: map[string]string{TopicExperiments: "experiments:partitions=12,replication=1"}},
		{name: "every key", config: " pricing-decisions : partitions=2, replication=3 ,min.insync.replicas=2,retention=30d ; experiments:retention=forever",
			want: map[string]string{
				TopicPricingDecisions: "pricing-decisions:partitions=2,replication=3,min.insync.replicas=2,retention=720h0m0s",
				TopicExperiments:      "experiments:partitions=6,replication=1,retention=forever",
				TopicUserEvents:       "user-events:partitions=6,replication=1",
			}},
		{name: "a topic's section wins over *, whatever the order", config: "experiments:replication=1;*:replication=3,min.insync.replicas=1,retention=36h",
			want: map[string]string{
				TopicExperiments: "experiments:partitions=6,replication=1,min.insync.replicas=1,retention=36h0m0s",
				TopicUserEvents:  "user-events:partitions=6,replication=3,min.insync.replicas=1,retention=36h0m0s",
			}},
		{name: "event topics grow together", config: "*:partitions=24;pricing-decisions:partitions=3",
			want: map[string]string{TopicSupplyEvents: "supply-events:partitions=24,replication=1", TopicPricingDecisions: "pricing-decisions:partitions=3,replication=1"}},
		{name: "unknown topic", config: "user-event:partitions=3", wantErr: `unknown topic "user-event" (known: *, user-events,`},
		{name: "unknown key", config: "experiments:replicas=3", wantErr: `experiments: unknown key "replicas"`},
		{name: "no settings", config: "experiments", wantErr: `"experiments": want topic:key=value`},
		{name: "not key=value", config: "experiments:partitions", wantErr: `"partitions": want key=value`},
		{name: "not a number", config: "experiments:partitions=many", wantErr: `partitions="many": want a whole number from 1 to 10000`},
		{name: "zero partitions", config: "experiments:partitions=0", wantErr: `partitions="0"`},
		{name: "bad retention", config: "experiments:retention=1.5d", wantErr: `retention="1.5d": want a positive duration`},
		{name: "negative retention", config: "experiments:retention=-1h", wantErr: `retention="-1h"`},
		{name: "given twice", config: "experiments:partitions=2;experiments:replication=2", wantErr: `topic "experiments" given twice`},
		{name: "min ISR above replication", config: "*:replication=2,min.insync.replicas=3", wantErr: "min.insync.replicas=3 exceeds replication=2"},
		{name: "event topics not co-partitioned", config: "supply-events:partitions=12", wantErr: "user-events has 6 partitions, supply-events 12: the event topics"},
	} {
		t.Run(c.name, func(t *testing.T) {
			specs, err := ParseTopicConfig(c.config, c.partitions)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(specs) != len(Topics) {
				t.Fatalf("%d specs, want one per topic", len(specs))
			}
			for i, s := range specs {
				if s.Name != Topics[i] {
					t.Errorf("spec %d is %s, want %s", i, s.Name, Topics[i])
				}
				if want, ok := c.want[s.Name]; ok && s.String() != want {
					t.Errorf("%s, want %s", s, want)
				}
			}
		})
	}
}

// TestEnsureTopics against three brokers: the topics are created as
// specified (Metadata shows partitions and replicas, DescribeConfigs the
// settings), a second call changes nothing, and existing topics that fall
// short of a larger spec are reported (ErrTopicMismatch), not changed.
func TestEnsureTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	k := testenv.KafkaWith(t, devenv.KafkaOptions{NumBrokers: 3})
	specs, err := ParseTopicConfig("*:partitions=4,replication=3,min.insync.replicas=2;pricing-decisions:retention=30d", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, k.Brokers, specs); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, k.Brokers, specs); err != nil {
		t.Fatalf("second call: %v", err)
	}
	cl := &kafka.Client{Addr: kafka.TCP(k.Brokers...)}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: Topics})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 3 || len(md.Topics) != len(Topics) {
		t.Fatalf("%d brokers and %d topics, want 3 and %d", len(md.Brokers), len(md.Topics), len(Topics))
	}
	for _, topic := range md.Topics {
		if len(topic.Partitions) != 4 {
			t.Errorf("%s has %d partitions, want 4", topic.Name, len(topic.Partitions))
		}
		for _, p := range topic.Partitions {
			if len(p.Replicas) != 3 || len(p.Isr) != 3 {
				t.Errorf("%s/%d has %d replicas and %d in sync, want 3 and 3", topic.Name, p.ID, len(p.Replicas), len(p.Isr))
			}
		}
	}
	dc, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: TopicPricingDecisions, ConfigNames: []string{"min.insync.replicas", "retention.ms"}},
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: TopicUserEvents, ConfigNames: []string{"min.insync.replicas", "retention.ms"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range dc.Resources {
		for _, e := range r.ConfigEntries {
			got[r.ResourceName+" "+e.ConfigName] = e.ConfigValue
		}
	}
	for key, want := range map[string]string{
		"pricing-decisions min.insync.replicas": "2", "pricing-decisions retention.ms": "2592000000",
		"user-events min.insync.replicas": "2", "user-events retention.ms": "604800000", // Kafka's default, 7 days
	} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}

	larger, err := ParseTopicConfig("*:partitions=8,replication=3,min.insync.replicas=3", 0)
	if err != nil {
		t.Fatal(err)
	}
	err = EnsureTopics(ctx, k.Brokers, larger)
	if !errors.Is(err, ErrTopicMismatch) {
		t.Fatalf("EnsureTopics with more partitions: %v, want ErrTopicMismatch", err)
	}
	for _, want := range []string{
		"user-events has 4 partitions, configured 8", "experiments has 4 partitions, configured 8",
		"pricing-decisions has min.insync.replicas=2, configured 3",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the mismatch %q is not reported: %v", want, err)
		}
	}
	md, err = cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{TopicUserEvents}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(md.Topics[0].Partitions); n != 4 {
		t.Errorf("user-events changed to %d partitions", n)
	}
	if err := LogTopicMismatch(slog.New(slog.DiscardHandler), err); err != nil {
		t.Errorf("LogTopicMismatch passed a mismatch on: %v", err)
	}
	if got := LogTopicMismatch(slog.New(slog.DiscardHandler), context.Canceled); !errors.Is(got, context.Canceled) {
		t.Errorf("LogTopicMismatch swallowed another error: %v", got)
	}
}
