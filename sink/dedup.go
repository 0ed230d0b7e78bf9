package sink

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
)

// position is where a record sits on Kafka.
type position struct {
	topic     string
	partition int
	offset    int64
}

func (r *record[R]) position() position { return position{r.topic, r.partition, r.offset} }

// dedupResult is what a dedup check found in a batch.
type dedupResult struct {
	// duplicates were marked invalid: their id is in ClickHouse at another
	// position (or earlier in the batch).
	duplicates int
	// landed are the indexes of records found in ClickHouse at their own
	// position: an earlier insert of them landed in the table while the
	// sink did not learn it (sink_offsets did not get the block). They are
	// marked invalid too; the views of the table may lack them.
	landed []int
}

// maxTimeRanges bounds the event-time ranges of one dedup lookup.
const maxTimeRanges = 32

// dedupEvents marks the records of recs whose eventId events_raw already
// holds, or that repeat an earlier record of the batch, as not to be
// inserted. A resend of an event is the same event: same eventId, regionId
// and timestamp, so its earlier copy is found by an index lookup on the
// table's key (region_id, event_time) whatever its age.
func (s *Sink) dedupEvents(ctx context.Context, recs []record[eventRow]) (dedupResult, error) {
	var k eventKeys
	first, ids, res, err := firstOccurrences(recs, "event_id", func(e *eventRow) string {
		k.add(e)
		return e.EventID
	})
	if err != nil || len(first) == 0 {
		return res, err
	}
	where, args := k.where()
	query := "SELECT event_id, kafka_topic, kafka_partition, kafka_offset FROM " + s.db + ".events_raw" +
		" WHERE " + where + " AND event_id IN batch_ids"
	found, err := s.lookup(ctx, query, ids, args...)
	if err != nil {
		return res, fmt.Errorf("dedup events_raw: %w", err)
	}
	markRecords(&res, recs, first, found)
	return res, nil
}

// firstOccurrences marks the records that repeat the key of an earlier
// one invalid (counted in res.duplicates), and returns the index of each
// key's first record and the keys as the external table batch_ids (column
// name). key is called once per valid record.
func firstOccurrences[R any](recs []record[R], name string, key func(*R) string) (map[string]int, *ext.Table, dedupResult, error) {
	var res dedupResult
	first := make(map[string]int, len(recs))
	ids, err := ext.NewTable("batch_ids", ext.Column(name, "String"))
	if err != nil {
		return nil, nil, res, fmt.Errorf("dedup: %w", err)
	}
	for i := range recs {
		r := &recs[i]
		if !r.valid {
			continue
		}
		k := key(&r.row)
		if _, ok := first[k]; ok {
			r.valid = false
			res.duplicates++
			continue
		}
		first[k] = i
		if err := ids.Append(k); err != nil {
			return nil, nil, res, fmt.Errorf("dedup: %w", err)
		}
	}
	return first, ids, res, nil
}

// eventKeys collects where a batch's events sit in events_raw's key.
type eventKeys struct {
	regions map[string]bool
	seconds []int64
}

func (k *eventKeys) add(e *eventRow) {
	if k.regions == nil {
		k.regions = map[string]bool{}
	}
	k.regions[e.RegionID] = true
	k.seconds = append(k.seconds, e.Timestamp.Unix())
}

// where is a condition on events_raw's key (region_id, event_time) that
// holds the collected events: an index range.
func (k *eventKeys) where() (string, []any) {
	regions := make([]any, 0, len(k.regions))
	for _, r := range slices.Sorted(maps.Keys(k.regions)) {
		regions = append(regions, r)
	}
	return "region_id IN ? AND (" + timeRanges("event_time", slices.Clone(k.seconds)) + ")", []any{groupSet(regions)}
}

// dedupDecisions does for pricing_decisions what dedupEvents does for
// events_raw, by quote id (the table's key: a lookup per id).
func (s *Sink) dedupDecisions(ctx context.Context, recs []record[decisionRow]) (dedupResult, error) {
	first, ids, res, err := firstOccurrences(recs, "quote_id", func(d *decisionRow) string { return d.QuoteID })
	if err != nil || len(first) == 0 {
		return res, err
	}
	query := "SELECT quote_id, kafka_topic, kafka_partition, kafka_offset FROM " + s.db + ".pricing_decisions WHERE quote_id IN batch_ids"
	found, err := s.lookup(ctx, query, ids)
	if err != nil {
		return res, fmt.Errorf("dedup pricing_decisions: %w", err)
	}
	markRecords(&res, recs, first, found)
	// No view but sink_offsets reads pricing_decisions: nothing to repair.
	res.landed = nil
	return res, nil
}

// markRecords applies what a lookup found to the first occurrences of the
// batch's keys.
func markRecords[R any](res *dedupResult, recs []record[R], first map[string]int, found map[string][]position) {
	for key, i := range first {
		at := found[key]
		if len(at) == 0 {
			continue
		}
		r := &recs[i]
		r.valid = false
		if slices.Contains(at, r.position()) {
			res.landed = append(res.landed, i)
		} else {
			res.duplicates++
		}
	}
	slices.Sort(res.landed)
}

// lookup runs a dedup query whose rows are (key, topic, partition, offset),
// with the batch's keys as the external table ids.
func (s *Sink) lookup(ctx context.Context, query string, ids *ext.Table, args ...any) (map[string][]position, error) {
	qctx, cancel := context.WithTimeout(ctx, s.opts.InsertTimeout)
	defer cancel()
	qctx = clickhouse.Context(qctx, clickhouse.WithExternalTable(ids))
	rows, err := s.conn.Query(qctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	found := map[string][]position{}
	for rows.Next() {
		var (
			key, topic string
			partition  uint32
			offset     uint64
		)
		if err := rows.Scan(&key, &topic, &partition, &offset); err != nil {
			return nil, err
		}
		found[key] = append(found[key], position{topic, int(partition), int64(offset)})
	}
	return found, rows.Err()
}

// timeRanges is a condition on a DateTime column that holds every one of
// seconds: at most maxTimeRanges ranges, merging the closest first, so
// that a few late events do not turn the lookup into a scan of the hours
// between them.
func timeRanges(column string, seconds []int64) string {
	slices.Sort(seconds)
	seconds = slices.Compact(seconds)
	type span struct{ lo, hi int64 }
	spans := []span{{seconds[0], seconds[0]}}
	for _, sec := range seconds[1:] {
		if last := &spans[len(spans)-1]; sec-last.hi <= 60 {
			last.hi = sec
		} else {
			spans = append(spans, span{sec, sec})
		}
	}
	for len(spans) > maxTimeRanges {
		// Merge the pair with the smallest gap.
		best := 0
		for i := 1; i < len(spans)-1; i++ {
			if spans[i+1].lo-spans[i].hi < spans[best+1].lo-spans[best].hi {
				best = i
			}
		}
		spans[best].hi = spans[best+1].hi
		spans = slices.Delete(spans, best+1, best+2)
	}
	parts := make([]string, len(spans))
	for i, sp := range spans {
		parts[i] = column + " BETWEEN toDateTime(" + strconv.FormatInt(sp.lo, 10) + ") AND toDateTime(" + strconv.FormatInt(sp.hi, 10) + ")"
	}
	return strings.Join(parts, " OR ")
}

// utcDay is the UTC date of t as ClickHouse writes a Date.
func utcDay(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// groupSet binds vals as a parenthesised list, for IN.
func groupSet(vals []any) clickhouse.GroupSet { return clickhouse.GroupSet{Value: vals} }

// dedupEventsAndRepair is the dedup of the events table: duplicates are
// dropped, and the views are repaired for events that landed without them.
func dedupEventsAndRepair(ctx context.Context, s *Sink, recs []record[eventRow]) (int, error) {
	res, err := s.dedupEvents(ctx, recs)
	if err != nil {
		return 0, err
	}
	landed := make([]eventRow, len(res.landed))
	for k, i := range res.landed {
		landed[k] = recs[i].row
	}
	if err := s.repairViews(ctx, landed); err != nil {
		return 0, err
	}
	return res.duplicates, nil
}

func dedupDecisions(ctx context.Context, s *Sink, recs []record[decisionRow]) (int, error) {
	res, err := s.dedupDecisions(ctx, recs)
	return res.duplicates, err
}
