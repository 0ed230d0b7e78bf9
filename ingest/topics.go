package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
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

// DefaultPartitions is the partition count of a topic whose spec names
// none.
const DefaultPartitions = 6

// TopicSpec is how a topic is created. Zero values take the defaults.
type TopicSpec struct {
	Name string
	// Partitions (default DefaultPartitions) bounds the members of a
	// consumer group that get work: one partition goes to one member.
	Partitions int
	// ReplicationFactor (default 1) is the number of brokers holding each
	// partition.
	ReplicationFactor int
	// MinInSyncReplicas is the topic's min.insync.replicas: the replicas
	// that must have a record before an acks=all produce succeeds. 0: the
	// broker's default (Kafka's is 1).
	MinInSyncReplicas int
	// Retention is the topic's retention.ms; 0: the broker's default
	// (Kafka's is 7 days); negative: forever.
	Retention time.Duration
}

func (s TopicSpec) withDefaults() TopicSpec {
	s.Partitions = cmp.Or(s.Partitions, DefaultPartitions)
	s.ReplicationFactor = cmp.Or(s.ReplicationFactor, 1)
	return s
}

// String is the spec in the ParseTopicConfig syntax.
func (s TopicSpec) String() string {
	s = s.withDefaults()
	out := fmt.Sprintf("%s:partitions=%d,replication=%d", s.Name, s.Partitions, s.ReplicationFactor)
	if s.MinInSyncReplicas > 0 {
		out += ",min.insync.replicas=" + strconv.Itoa(s.MinInSyncReplicas)
	}
	switch {
	case s.Retention < 0:
		out += ",retention=forever"
	case s.Retention > 0:
		out += ",retention=" + s.Retention.String()
	}
	return out
}

func (s TopicSpec) configEntries() []kafka.ConfigEntry {
	var out []kafka.ConfigEntry
	if s.MinInSyncReplicas > 0 {
		out = append(out, kafka.ConfigEntry{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(s.MinInSyncReplicas)})
	}
	switch {
	case s.Retention < 0:
		out = append(out, kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "-1"})
	case s.Retention > 0:
		out = append(out, kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: strconv.FormatInt(s.Retention.Milliseconds(), 10)})
	}
	return out
}

// ParseTopicConfig returns the spec of every topic in Topics: partitions
// each (≤ 0: DefaultPartitions), replication 1 and the broker's defaults
// for the rest, changed by config, a list of sections separated by ";":
//
//	*:partitions=24,replication=3,min.insync.replicas=2;pricing-decisions:partitions=6,retention=30d
//
// A section names a topic (or "*": every topic; a topic's own section wins
// whatever the order) and sets, comma-separated: partitions (≥ 1),
// replication (≥ 1), min.insync.replicas (1 … replication) and retention
// (a Go duration, or days as "30d", or "forever"). It refuses unknown
// topics and keys, bad values, a topic given twice and event topics
// (EventTopics) of different partition counts: the features consumer joins
// a region's events of all of them, so they must be co-partitioned.
func ParseTopicConfig(config string, partitions int) ([]TopicSpec, error) {
	specs := make([]TopicSpec, len(Topics))
	for i, t := range Topics {
		specs[i] = TopicSpec{Name: t, Partitions: cmp.Or(max(partitions, 0), DefaultPartitions), ReplicationFactor: 1}
	}
	sections := map[string][]string{}
	var order []string // "*" first, then the topics in the order given
	for _, sec := range strings.Split(config, ";") {
		if sec = strings.TrimSpace(sec); sec == "" {
			continue
		}
		name, settings, ok := strings.Cut(sec, ":")
		name = strings.TrimSpace(name)
		if !ok || strings.TrimSpace(settings) == "" {
			return nil, fmt.Errorf("%q: want topic:key=value,…", sec)
		}
		if name != "*" && !slices.Contains(Topics, name) {
			return nil, fmt.Errorf("unknown topic %q (known: *, %s)", name, strings.Join(Topics, ", "))
		}
		if _, dup := sections[name]; dup {
			return nil, fmt.Errorf("topic %q given twice", name)
		}
		sections[name] = strings.Split(settings, ",")
		if name == "*" {
			order = slices.Insert(order, 0, name)
		} else {
			order = append(order, name)
		}
	}
	for _, name := range order {
		for i := range specs {
			if name != "*" && specs[i].Name != name {
				continue
			}
			for _, kv := range sections[name] {
				if err := specs[i].set(kv); err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
			}
		}
	}
	for _, s := range specs {
		if s.MinInSyncReplicas > s.ReplicationFactor {
			return nil, fmt.Errorf("%s: min.insync.replicas=%d exceeds replication=%d: every acks=all produce would fail", s.Name, s.MinInSyncReplicas, s.ReplicationFactor)
		}
	}
	for _, s := range specs {
		if slices.Contains(EventTopics, s.Name) && s.Partitions != specs[0].Partitions {
			return nil, fmt.Errorf("%s has %d partitions, %s %d: the event topics (%s) must have the same partition count, the features consumer joins a region's events of all of them",
				specs[0].Name, specs[0].Partitions, s.Name, s.Partitions, strings.Join(EventTopics, ", "))
		}
	}
	return specs, nil
}

// set applies one key=value of a topic config section.
func (s *TopicSpec) set(kv string) error {
	k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if !ok || v == "" {
		return fmt.Errorf("%q: want key=value", kv)
	}
	count := func(lo, hi int) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%s=%q: want a whole number from %d to %d", k, v, lo, hi)
		}
		return n, nil
	}
	var err error
	switch k {
	case "partitions":
		s.Partitions, err = count(1, 10_000)
	case "replication":
		s.ReplicationFactor, err = count(1, 32_767)
	case "min.insync.replicas":
		s.MinInSyncReplicas, err = count(1, 32_767)
	case "retention":
		s.Retention, err = parseRetention(v)
	default:
		err = fmt.Errorf("unknown key %q (known: partitions, replication, min.insync.replicas, retention)", k)
	}
	return err
}

func parseRetention(v string) (time.Duration, error) {
	if v == "forever" {
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if days, ok := strings.CutSuffix(v, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	}
	if err != nil || d < time.Millisecond {
		return 0, fmt.Errorf("retention=%q: want a positive duration (30d, 36h) or forever", v)
	}
	return d, nil
}

// ErrTopicMismatch marks existing topics that have fewer partitions, fewer
// replicas or a lower min.insync.replicas than their specs. EnsureTopics
// changes no existing topic: adding partitions moves keys to other
// partitions (a region's records would be split across two partitions
// while the old ones drain), and the event topics must grow together, so
// that is an operator's deliberate step (docs/kafka.md).
var ErrTopicMismatch = errors.New("existing kafka topic differs from its spec")

// EnsureTopics creates the topics of specs that do not exist yet, as
// specified, and checks the others: it returns an error wrapping
// ErrTopicMismatch, one line per topic, when existing topics fall short of
// their specs (the system works with them: callers log it as a warning),
// or another error when Kafka cannot be asked or refuses a creation.
func EnsureTopics(ctx context.Context, brokers []string, specs []TopicSpec) error {
	if len(brokers) == 0 {
		return errors.New("ensure topics: no brokers")
	}
	tr := &kafka.Transport{DialTimeout: 5 * time.Second} // its own: the shared one's metadata may be 6 s old
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second, Transport: tr}
	specs = slices.Clone(specs)
	names := make([]string, len(specs))
	for i := range specs {
		specs[i] = specs[i].withDefaults()
		names[i] = specs[i].Name
	}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return fmt.Errorf("ensure topics: metadata: %w", err)
	}
	existing := map[string]kafka.Topic{}
	for _, t := range md.Topics {
		if t.Error == nil {
			existing[t.Name] = t
		}
	}
	var create []kafka.TopicConfig
	var mismatches []error
	var check []TopicSpec
	for _, s := range specs {
		t, ok := existing[s.Name]
		if !ok {
			create = append(create, kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: s.ReplicationFactor, ConfigEntries: s.configEntries()})
			continue
		}
		if n := len(t.Partitions); n < s.Partitions {
			mismatches = append(mismatches, fmt.Errorf("%s has %d partitions, configured %d (consumers beyond %d per group stay idle; not increased automatically)", s.Name, n, s.Partitions, n))
		}
		if r := minReplicas(t); r < s.ReplicationFactor {
			mismatches = append(mismatches, fmt.Errorf("%s has %d replicas, configured %d", s.Name, r, s.ReplicationFactor))
		}
		if s.MinInSyncReplicas > 0 {
			check = append(check, s)
		}
	}
	if len(create) > 0 {
		resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: create})
		if err != nil {
			return fmt.Errorf("ensure topics: create: %w", err)
		}
		var errs []error
		for name, err := range resp.Errors {
			if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) { // created meanwhile by another replica
				errs = append(errs, fmt.Errorf("ensure topics: create %s: %w", name, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	if len(check) > 0 {
		errs, err := checkMinISR(ctx, cl, check)
		if err != nil {
			return err
		}
		mismatches = append(mismatches, errs...)
	}
	if len(mismatches) > 0 {
		return fmt.Errorf("%w: %w", ErrTopicMismatch, errors.Join(mismatches...))
	}
	return nil
}

// minReplicas is the smallest replica count of a topic's partitions.
func minReplicas(t kafka.Topic) int {
	r := -1
	for _, p := range t.Partitions {
		if r < 0 || len(p.Replicas) < r {
			r = len(p.Replicas)
		}
	}
	return max(r, 0)
}

// checkMinISR reports the existing topics whose min.insync.replicas is
// below their specs'.
func checkMinISR(ctx context.Context, cl *kafka.Client, specs []TopicSpec) ([]error, error) {
	req := &kafka.DescribeConfigsRequest{}
	for _, s := range specs {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: s.Name, ConfigNames: []string{"min.insync.replicas"},
		})
	}
	resp, err := cl.DescribeConfigs(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("ensure topics: describe configs: %w", err)
	}
	var out []error
	for _, r := range resp.Resources {
		i := slices.IndexFunc(specs, func(s TopicSpec) bool { return s.Name == r.ResourceName })
		for _, e := range r.ConfigEntries {
			if n, err := strconv.Atoi(e.ConfigValue); i >= 0 && e.ConfigName == "min.insync.replicas" && err == nil && n < specs[i].MinInSyncReplicas {
				out = append(out, fmt.Errorf("%s has min.insync.replicas=%d, configured %d", r.ResourceName, n, specs[i].MinInSyncReplicas))
			}
		}
	}
	return out, nil
}

// LogTopicMismatch logs what EnsureTopics returned: a mismatch as a
// warning, and reports whether err is something else (nil stays nil).
func LogTopicMismatch(logger *slog.Logger, err error) error {
	if errors.Is(err, ErrTopicMismatch) {
		logger.Warn("kafka topics differ from their configuration (--kafka-topic-config); left as they are", "err", err)
		return nil
	}
	return err
}
