package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// The Kafka topics. Every record is keyed by region, so a region stays
// ordered on one partition.
const (
	TopicUserEvents       = "user-events"
	TopicSupplyEvents     = "supply-events"
	TopicExternalEvents   = "external-events"
	TopicPricingDecisions = "pricing-decisions"
	TopicExperiments      = "experiments"
)

// Topics lists every topic the system uses.
var Topics = []string{TopicUserEvents, TopicSupplyEvents, TopicExternalEvents, TopicPricingDecisions, TopicExperiments}

// EnsureTopics creates the topics that do not exist yet, with the given
// number of partitions and replication factor (≤ 0: 6 and 1).
func EnsureTopics(ctx context.Context, brokers []string, topics []string, partitions, replication int) error {
	if partitions <= 0 {
		partitions = 6
	}
	if replication <= 0 {
		replication = 1
	}
	if len(brokers) == 0 {
		return errors.New("ensure topics: no brokers")
	}
	d := &kafka.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("ensure topics: dial %s: %w", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("ensure topics: find controller: %w", err)
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("ensure topics: dial controller: %w", err)
	}
	defer cc.Close()
	cfgs := make([]kafka.TopicConfig, len(topics))
	for i, t := range topics {
		cfgs[i] = kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: replication}
	}
	if err := cc.CreateTopics(cfgs...); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("ensure topics: %w", err)
	}
	return nil
}
