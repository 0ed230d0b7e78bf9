package consumer

import (
	"context"
	"fmt"
	"slices"

	"github.com/segmentio/kafka-go"
)

// PartitionLag is a consumer group's position on one partition, as Kafka
// knows it: the committed offset (-1 when the group never committed one),
// the high watermark and the records between them.
type PartitionLag struct {
	Topic         string
	Partition     int
	Committed     int64
	HighWatermark int64
	Lag           int64
}

// Lag reads group's committed offsets and the high watermarks of topics
// from the brokers: the view of a process that is not a member of the
// group (an API replica whose consumers run in `surge consume`). A
// partition without a commit counts every record it holds as lag.
func Lag(ctx context.Context, brokers []string, group string, topics []string) ([]PartitionLag, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("consumer: metadata of %v: %w", topics, err)
	}
	parts := map[string][]int{}
	offsets := map[string][]kafka.OffsetRequest{}
	for _, t := range meta.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("consumer: topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
			offsets[t.Name] = append(offsets[t.Name], kafka.LastOffsetOf(p.ID))
		}
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: parts})
	if err == nil {
		err = committed.Error
	}
	if err != nil {
		return nil, fmt.Errorf("consumer: committed offsets of group %s: %w", group, err)
	}
	high, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: offsets})
	if err != nil {
		return nil, fmt.Errorf("consumer: high watermarks of %v: %w", topics, err)
	}
	var out []PartitionLag
	for topic, ps := range committed.Topics {
		hw := map[int]int64{}
		for _, p := range high.Topics[topic] {
			if p.Error != nil {
				return nil, fmt.Errorf("consumer: high watermark of %s/%d: %w", topic, p.Partition, p.Error)
			}
			hw[p.Partition] = p.LastOffset
		}
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("consumer: committed offset of %s/%d: %w", topic, p.Partition, p.Error)
			}
			l := PartitionLag{Topic: topic, Partition: p.Partition, Committed: p.CommittedOffset, HighWatermark: hw[p.Partition]}
			l.Lag = l.HighWatermark - max(l.Committed, 0)
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b PartitionLag) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return a.Partition - b.Partition
	})
	return out, nil
}
