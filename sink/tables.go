package sink

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/encoding/json"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/auditrecord"
	"github.com/surgeworks/surge/ingest"
)

// record is one Kafka record on its way to a table. An invalid record
// (valid false) is not inserted but its offset counts as consumed.
type record[R any] struct {
	topic     string
	partition int
	offset    int64
	valid     bool
	row       R
}

// table is what the sink knows about one target table: the topics that
// feed it, its columns, how a record becomes a row and how rows become one
// column-wise insert block.
type table[R any] struct {
	name    string
	topics  []string
	columns []string
	decode  func(m *kafka.Message) (R, error)
	fill    func(b driver.Batch, recs []record[R]) error
	// dedup marks the records whose key the table already holds (or that
	// repeat one of the batch) as not to be inserted and returns how many;
	// nil for a table deduplicated by offsets only.
	dedup func(ctx context.Context, s *Sink, recs []record[R]) (int, error)
	// views: the table has materialized views that the sink repairs, so its
	// inserts are held off during a repair.
	views bool
	// fenced, when set, replaces fill: the rows travel as an external
	// table and the INSERT ... SELECT it returns keeps only those whose key
	// the table does not hold, decided by the server in the insert itself,
	// so that a member that stalled between its dedup check and its insert
	// (while another took its partitions over) inserts nothing twice. It
	// appends the rows to batch, the empty external table of columnTypes
	// (each batcher resets and reuses its own, so the column buffers are
	// not grown again for every insert).
	fenced func(database string, batch *ext.Table, recs []record[R]) (query string, args []any, err error)
	// columnTypes are the types of columns, in order, for fenced's external
	// table.
	columnTypes []string
}

// externalTable is the external table "batch" of t's columns, for fenced.
func (t *table[R]) externalTable() (*ext.Table, error) {
	cols := make([]func(*ext.Table) error, len(t.columns))
	for i, c := range t.columns {
		cols[i] = ext.Column(c, column.Type(t.columnTypes[i]))
	}
	return ext.NewTable("batch", cols...)
}

func (t *table[R]) insertQuery(database string) string {
	// The explicit column list is required: on ClickHouse 18.16 a batch
	// without it silently inserts nothing.
	return "INSERT INTO " + database + "." + t.name + " (" + strings.Join(t.columns, ", ") + ")"
}

// The DateTime range of ClickHouse: seconds from 1970 that fit a UInt32.
var (
	minDateTime = time.Unix(0, 0)
	maxDateTime = time.Unix(math.MaxUint32, 0)
)

func inDateTimeRange(t time.Time) bool {
	return !t.Before(minDateTime) && t.Before(maxDateTime)
}

// eventRow is an event read from Kafka; ReceivedAt is filled in from the
// record's timestamp when the intake did not set it.
type eventRow = ingest.Event

var eventColumns = []string{
	"event_id", "type", "region_id", "event_time", "received_at", "user_hash", "product_type",
	"price", "available_supply", "signal", "value", "quote_id", "experiment_id", "variant",
	"backfill", "kafka_topic", "kafka_partition", "kafka_offset",
}

var eventsTable = table[eventRow]{
	name:    "events_raw",
	columns: eventColumns,
	decode:  decodeEvent,
	dedup:   dedupEventsAndRepair,
	views:   true,
	fenced:  fencedEvents,
	columnTypes: []string{
		"String", "String", "String", "DateTime", "DateTime", "String", "String",
		"Nullable(Float64)", "Nullable(Float64)", "String", "Nullable(Float64)", "String", "String", "String",
		"UInt8", "String", "UInt32", "UInt64",
	},
}

func fencedEvents(db string, batch *ext.Table, recs []record[eventRow]) (string, []any, error) {
	var k eventKeys
	for i := range recs {
		r := &recs[i]
		if !r.valid {
			continue
		}
		e := &r.row
		k.add(e)
		var x ingest.Experiment
		if e.Experiment != nil {
			x = *e.Experiment
		}
		var bf uint8
		if e.Backfill {
			bf = 1
		}
		if err := batch.Append(e.EventID, e.Type, e.RegionID, e.Timestamp.UTC(), e.ReceivedAt.UTC(), e.UserHash, e.ProductType,
			e.Price, e.AvailableSupply, e.Signal, e.Value, e.QuoteID, x.ID, x.Variant,
			bf, r.topic, uint32(r.partition), uint64(r.offset)); err != nil {
			return "", nil, err
		}
	}
	cols := strings.Join(eventColumns, ", ")
	where, args := k.where()
	return "INSERT INTO " + db + ".events_raw (" + cols + ") SELECT " + cols + " FROM batch" +
		" WHERE event_id NOT IN (SELECT event_id FROM " + db + ".events_raw WHERE " + where + ")", args, nil
}

func decodeEvent(m *kafka.Message) (eventRow, error) {
	e, err := ingest.DecodeEvent(m.Value)
	if err != nil {
		return e, fmt.Errorf("decode event: %w", err)
	}
	switch {
	case e.EventID == "":
		return e, errors.New("event without eventId")
	case e.Type == "":
		return e, errors.New("event without type")
	case e.RegionID == "":
		return e, errors.New("event without regionId")
	case !inDateTimeRange(e.Timestamp):
		return e, fmt.Errorf("event timestamp %s out of range", e.Timestamp.Format(time.RFC3339))
	}
	if e.ReceivedAt.IsZero() || !inDateTimeRange(e.ReceivedAt) {
		e.ReceivedAt = m.Time
		if !inDateTimeRange(e.ReceivedAt) {
			e.ReceivedAt = time.Now()
		}
	}
	return e, nil
}

// decisionRow holds the columns of pricing_decisions taken from an audit
// record (written by the quotes package, decoded by auditrecord: CBOR, or
// JSON before December 2026); Record is the whole record, as written (the
// message's own bytes: kafka-go reads every message into a new slice).
type decisionRow struct {
	QuoteID      string    `json:"quoteId"`
	TraceID      string    `json:"traceId"`
	At           time.Time `json:"at"`
	RegionID     string    `json:"regionId"`
	ProductType  string    `json:"productType"`
	UserHash     string    `json:"userHash"`
	Multiplier   float64   `json:"surgeMultiplier"`
	Price        float64   `json:"price"`
	Currency     string    `json:"currency"`
	RuleVersion  uint32    `json:"ruleVersion"`
	ModelVersion string    `json:"modelVersion"`
	Forecast     struct {
		Source         string    `json:"source"`
		HorizonMinutes uint32    `json:"horizonMinutes"`
		Demand         float64   `json:"demand"`
		GeneratedAt    time.Time `json:"generatedAt"`
	} `json:"forecast"`
	Degraded bool `json:"degraded"`

	Record []byte `json:"-"`
}

var decisionColumns = []string{
	"quote_id", "trace_id", "at", "region_id", "product_type", "user_hash",
	"multiplier", "price", "currency", "rule_version", "model_version", "forecast_source", "degraded",
	"horizon_minutes", "forecast_demand", "forecast_at",
	"record", "kafka_topic", "kafka_partition", "kafka_offset",
}

var decisionsTable = table[decisionRow]{
	name:    "pricing_decisions",
	columns: decisionColumns,
	decode:  decodeDecision,
	dedup:   dedupDecisions,
	fenced:  fencedDecisions,
	columnTypes: []string{
		"String", "String", "DateTime", "String", "String", "String",
		"Float64", "Float64", "String", "UInt32", "String", "String", "UInt8",
		"UInt32", "Float64", "DateTime",
		"String", "String", "UInt32", "UInt64",
	},
}

func fencedDecisions(db string, batch *ext.Table, recs []record[decisionRow]) (string, []any, error) {
	for i := range recs {
		r := &recs[i]
		if !r.valid {
			continue
		}
		d := &r.row
		var dg uint8
		if d.Degraded {
			dg = 1
		}
		if err := batch.Append(d.QuoteID, d.TraceID, d.At.UTC(), d.RegionID, d.ProductType, d.UserHash,
			d.Multiplier, d.Price, d.Currency, d.RuleVersion, d.ModelVersion, d.Forecast.Source, dg,
			d.Forecast.HorizonMinutes, d.Forecast.Demand, forecastAt(d),
			d.Record, r.topic, uint32(r.partition), uint64(r.offset)); err != nil {
			return "", nil, err
		}
	}
	cols := strings.Join(decisionColumns, ", ")
	return "INSERT INTO " + db + ".pricing_decisions (" + cols + ") SELECT " + cols + " FROM batch" +
		" WHERE quote_id NOT IN (SELECT quote_id FROM " + db + ".pricing_decisions WHERE quote_id IN (SELECT quote_id FROM batch))", nil, nil
}

func decodeDecision(m *kafka.Message) (decisionRow, error) {
	var d decisionRow
	if err := auditrecord.Unmarshal(m.Value, &d); err != nil {
		return d, fmt.Errorf("decode pricing decision: %w", err)
	}
	switch {
	case d.QuoteID == "":
		return d, errors.New("pricing decision without quoteId")
	case !inDateTimeRange(d.At):
		return d, fmt.Errorf("pricing decision time %s out of range", d.At.Format(time.RFC3339))
	case math.IsNaN(d.Multiplier) || math.IsNaN(d.Price):
		return d, errors.New("pricing decision with NaN multiplier or price")
	}
	d.Record = m.Value
	return d, nil
}

// forecastAt is the forecast's time as a DateTime column takes it: the
// Unix epoch for a record without a forecast time (as ClickHouse's default).
func forecastAt(d *decisionRow) time.Time {
	if !inDateTimeRange(d.Forecast.GeneratedAt) {
		return time.Unix(0, 0).UTC()
	}
	return d.Forecast.GeneratedAt.UTC()
}

func mk[T any](n int) []T { return make([]T, 0, n) }

// appendColumns appends one slice per column, in the table's column order.
func appendColumns(b driver.Batch, cols ...any) error {
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return nil
}

// exposureRow is an exposure record of the experiments topic (the JSON of
// experiments.Exposure).
type exposureRow struct {
	ExperimentID string    `json:"experimentId"`
	Variant      string    `json:"variant"`
	UserHash     string    `json:"userHash"`
	RegionID     string    `json:"regionId"`
	ProductType  string    `json:"productType"`
	QuoteID      string    `json:"quoteId"`
	At           time.Time `json:"at"`
}

var exposuresTable = table[exposureRow]{
	name: "experiment_exposures",
	columns: []string{
		"experiment_id", "variant", "user_hash", "region_id", "product_type", "quote_id", "at",
		"kafka_topic", "kafka_partition", "kafka_offset",
	},
	decode: decodeExposure,
	fill:   fillExposures,
}

func decodeExposure(m *kafka.Message) (exposureRow, error) {
	var x exposureRow
	if err := json.Unmarshal(m.Value, &x); err != nil {
		return x, fmt.Errorf("decode exposure: %w", err)
	}
	switch {
	case x.ExperimentID == "" || x.Variant == "":
		return x, errors.New("exposure without experimentId or variant")
	case x.UserHash == "":
		return x, errors.New("exposure without userHash")
	case !inDateTimeRange(x.At):
		return x, fmt.Errorf("exposure time %s out of range", x.At.Format(time.RFC3339))
	}
	return x, nil
}

func fillExposures(b driver.Batch, recs []record[exposureRow]) error {
	n := countValid(recs)
	var (
		experiment, variant, userHash, region, product = mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n)
		quoteID, topic                                 = mk[string](n), mk[string](n)
		at                                             = mk[time.Time](n)
		partition                                      = mk[uint32](n)
		offset                                         = mk[uint64](n)
	)
	for i := range recs {
		r := &recs[i]
		if !r.valid {
			continue
		}
		x := &r.row
		experiment = append(experiment, x.ExperimentID)
		variant = append(variant, x.Variant)
		userHash = append(userHash, x.UserHash)
		region = append(region, x.RegionID)
		product = append(product, x.ProductType)
		quoteID = append(quoteID, x.QuoteID)
		at = append(at, x.At.UTC())
		topic = append(topic, r.topic)
		partition = append(partition, uint32(r.partition))
		offset = append(offset, uint64(r.offset))
	}
	return appendColumns(b, experiment, variant, userHash, region, product, quoteID, at, topic, partition, offset)
}
