package sink

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// A view of events_raw that the sink can repair: a materialized view into a
// SummingMergeTree whose sorting key is plain columns.
type summingView struct {
	name     string   // the materialized view
	target   string   // its table (on a cluster the Distributed one)
	keyTable string   // the table whose engine and key describe target
	sel      string   // its SELECT, as ClickHouse stores it
	keys     []string // the target's sorting key columns
	timeKey  string   // the key column of type Date or DateTime ("" if none)
	counts   []string // UInt value columns: a difference in one means the view lacks rows
	sums     []string // other numeric value columns
}

// sourceColumns are the events_raw columns a view key may carry unchanged,
// with the value of a landed event: a key column with one of these names
// narrows the repair to the landed events' values.
var sourceColumns = map[string]func(*eventRow) string{
	"region_id":     func(e *eventRow) string { return e.RegionID },
	"product_type":  func(e *eventRow) string { return e.ProductType },
	"experiment_id": func(e *eventRow) string { return experimentOf(e).ID },
	"variant":       func(e *eventRow) string { return experimentOf(e).Variant },
}

func experimentOf(e *eventRow) (x struct{ ID, Variant string }) {
	if e.Experiment != nil {
		x.ID, x.Variant = e.Experiment.ID, e.Experiment.Variant
	}
	return x
}

// repairViews makes every view of events_raw agree with events_raw for the
// keys the landed events touch: for each key, the view's sums are set to
// what the view's own SELECT gives over events_raw, by inserting the
// difference (SummingMergeTree adds it; UInt differences wrap, which the
// sums undo). It runs with every events_raw insert of this sink held off,
// so that the table and the views are compared at rest. It is idempotent:
// repairing views that are complete inserts nothing.
func (s *Sink) repairViews(ctx context.Context, landed []eventRow) error {
	if len(landed) == 0 {
		return nil
	}
	s.viewsMu.Lock()
	defer s.viewsMu.Unlock()
	views, err := s.summingViews(ctx)
	if err != nil {
		return err
	}
	days := map[string]bool{}
	for i := range landed {
		days[utcDay(landed[i].Timestamp)] = true
	}
	dayList := slices.Sorted(maps.Keys(days))
	for _, v := range views {
		if err := s.repairView(ctx, v, landed, dayList); err != nil {
			return fmt.Errorf("repair view %s: %w", v.name, err)
		}
	}
	s.m.repairs.Add(float64(len(landed)))
	s.log.Warn("sink: repaired the views of events that landed in events_raw without them (ClickHouse stopped in the middle of an insert)",
		"events", len(landed), "views", len(views), "days", dayList)
	return nil
}

func (s *Sink) repairView(ctx context.Context, v summingView, landed []eventRow, days []string) error {
	// The source rows: every event of the landed events' days (a view's
	// time bucket is within a day of event_time), narrowed by the key
	// columns that are source columns.
	f := viewFilter{days: days}
	for _, k := range v.keys {
		get, ok := sourceColumns[k]
		if !ok {
			continue
		}
		seen := map[string]bool{}
		var vals []any
		for i := range landed {
			if val := get(&landed[i]); !seen[val] {
				seen[val] = true
				vals = append(vals, val)
			}
		}
		f.columns = append(f.columns, k)
		f.values = append(f.values, vals)
	}
	q, args, err := s.viewDiff(v, f)
	if err != nil {
		return err
	}
	values := slices.Concat(v.counts, v.sums)
	q = "INSERT INTO " + s.db + "." + v.target + " (" + strings.Join(v.keys, ", ") + ", " + strings.Join(values, ", ") + ") " + q
	qctx, cancel := context.WithTimeout(ctx, s.opts.InsertTimeout)
	defer cancel()
	return s.conn.Exec(qctx, q, args...)
}

// viewFilter restricts a view comparison to some days and key values
// (columns[i] IN values[i]); the zero filter compares everything.
type viewFilter struct {
	days    []string
	columns []string
	values  [][]any
}

// viewDiff is a SELECT of the keys of view v (within f) whose sums differ
// from what the view's own SELECT gives over events_raw, with the
// differences (true minus current) as the value columns, in the order
// keys, counts, sums. Both sides of the JOIN have an alias: current ClickHouse
// refuses a joined subquery without (joined_subquery_requires_alias).
func (s *Sink) viewDiff(v summingView, f viewFilter) (string, []any, error) {
	var srcWhere, tgtWhere []string
	var srcArgs, tgtArgs []any
	if len(f.days) > 0 {
		dayIn := "('" + strings.Join(f.days, "', '") + "')"
		srcWhere = append(srcWhere, "toDate(event_time) IN "+dayIn)
		if v.timeKey != "" {
			tgtWhere = append(tgtWhere, "toDate("+v.timeKey+") IN "+dayIn)
		}
	}
	for i, c := range f.columns {
		srcWhere = append(srcWhere, c+" IN ?")
		tgtWhere = append(tgtWhere, c+" IN ?")
		srcArgs = append(srcArgs, groupSet(f.values[i]))
		tgtArgs = append(tgtArgs, groupSet(f.values[i]))
	}
	source := s.db + ".events_raw"
	sel := v.sel
	if len(srcWhere) > 0 {
		sel = strings.Replace(v.sel, "FROM "+source, "FROM (SELECT * FROM "+source+" WHERE "+strings.Join(srcWhere, " AND ")+")", 1)
		if sel == v.sel {
			return "", nil, errors.New("its SELECT does not read " + source)
		}
	}
	keyList := strings.Join(v.keys, ", ")
	var truth, current, delta, differs []string
	for _, c := range slices.Concat(v.counts, v.sums) {
		truth = append(truth, "sum("+c+") AS t_"+c)
		current = append(current, "sum("+c+") AS c_"+c)
		delta = append(delta, "t_"+c+" - c_"+c)
	}
	for _, c := range v.counts {
		differs = append(differs, "t_"+c+" != c_"+c)
	}
	if len(differs) == 0 {
		for _, c := range v.sums {
			differs = append(differs, "abs(t_"+c+" - c_"+c+") > 1e-9 * (abs(t_"+c+") + 1)")
		}
	}
	tgt := "SELECT " + keyList + ", " + strings.Join(current, ", ") + " FROM " + s.db + "." + v.target
	if len(tgtWhere) > 0 {
		tgt += " WHERE " + strings.Join(tgtWhere, " AND ")
	}
	q := "SELECT " + keyList + ", " + strings.Join(delta, ", ") +
		" FROM (SELECT " + keyList + ", " + strings.Join(truth, ", ") + " FROM (" + sel + ") GROUP BY " + keyList + ") AS truth" +
		" ALL LEFT JOIN (" + tgt + " GROUP BY " + keyList + ") AS current USING (" + keyList + ")" +
		" WHERE " + strings.Join(differs, " OR ")
	return q, slices.Concat(srcArgs, tgtArgs), nil
}

// summingViews reads the materialized views of events_raw from ClickHouse.
// A view the sink cannot repair is an error: the views must be complete.
func (s *Sink) summingViews(ctx context.Context) ([]summingView, error) {
	rows, err := s.conn.Query(ctx, "SELECT name, create_table_query FROM system.tables WHERE database = ? AND engine = 'MaterializedView'", s.db)
	if err != nil {
		return nil, fmt.Errorf("list views: %w", err)
	}
	var views []summingView
	for rows.Next() {
		var name, create string
		if err := rows.Scan(&name, &create); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list views: %w", err)
		}
		v, ok := parseView(s.db, name, create)
		if ok {
			views = append(views, v)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list views: %w", err)
	}
	for i := range views {
		if err := s.describeTarget(ctx, &views[i]); err != nil {
			return nil, err
		}
	}
	return views, nil
}

// parseView extracts a view's target and SELECT from its CREATE statement;
// ok is false for views that do not read events_raw or that feed
// sink_offsets (which the insert after a repair advances). On a cluster a
// view reads events_raw_local into t_local, the shard's parts: it is
// repaired as a view of the Distributed tables (events_raw into t), which
// compares the whole cluster's sums; the difference may land on any shard,
// since readers sum over all of them.
func parseView(db, name, create string) (summingView, bool) {
	v := summingView{name: name}
	_, rest, ok := strings.Cut(create, " TO "+db+".")
	if !ok {
		return v, false
	}
	v.target, _, _ = strings.Cut(rest, " ")
	v.keyTable = v.target
	_, sel, ok := strings.Cut(create, " AS SELECT ")
	if !ok {
		return v, false
	}
	v.sel = "SELECT " + sel
	if local := "FROM " + db + ".events_raw_local"; strings.HasSuffix(v.target, "_local") && strings.Contains(v.sel, local) {
		v.sel = strings.Replace(v.sel, local, "FROM "+db+".events_raw", 1)
		v.target = strings.TrimSuffix(v.target, "_local")
	}
	from := "FROM " + db + ".events_raw"
	i := strings.Index(v.sel, from)
	if i < 0 || (i+len(from) < len(v.sel) && v.sel[i+len(from)] != ' ') || v.target == "sink_offsets" {
		return v, false
	}
	return v, true
}

func (s *Sink) describeTarget(ctx context.Context, v *summingView) error {
	var engine, key string
	if err := s.conn.QueryRow(ctx, "SELECT engine, sorting_key FROM system.tables WHERE database = ? AND name = ?", s.db, v.keyTable).
		Scan(&engine, &key); err != nil {
		return fmt.Errorf("describe %s: %w", v.keyTable, err)
	}
	if engine != "SummingMergeTree" && engine != "ReplicatedSummingMergeTree" {
		return fmt.Errorf("view %s feeds %s, a %s: only SummingMergeTree targets can be repaired", v.name, v.target, engine)
	}
	v.keys = strings.Split(key, ", ")
	rows, err := s.conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", s.db, v.target)
	if err != nil {
		return fmt.Errorf("describe %s: %w", v.target, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return fmt.Errorf("describe %s: %w", v.target, err)
		}
		switch {
		case slices.Contains(v.keys, name):
			if typ == "Date" || strings.HasPrefix(typ, "DateTime") {
				v.timeKey = name
			}
		case strings.HasPrefix(typ, "UInt"):
			v.counts = append(v.counts, name)
		case strings.HasPrefix(typ, "Int") || strings.HasPrefix(typ, "Float"):
			v.sums = append(v.sums, name)
		default:
			return fmt.Errorf("view %s feeds %s whose column %s (%s) is neither a key nor summed", v.name, v.target, name, typ)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("describe %s: %w", v.target, err)
	}
	for _, k := range v.keys {
		if !identRE.MatchString(k) {
			return fmt.Errorf("view %s feeds %s whose sorting key %q is not plain columns", v.name, v.target, k)
		}
	}
	return nil
}
