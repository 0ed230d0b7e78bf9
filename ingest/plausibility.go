package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/redislua"
)

// SupplyGuardOptions configures a SupplyGuard. Zero values take the
// defaults.
type SupplyGuardOptions struct {
	// MaxDrop is the largest fractional fall of a region's supply that one
	// report may make (default 0.5: a report below half the last accepted
	// value is held). At most 1 (1 refuses no fall).
	MaxDrop float64
	// ConfirmWindow is how long a held low value waits for confirmation
	// (default 2 min): a second report (another eventId, from any client)
	// of at most the held value + 10 % that arrives within the window is
	// accepted and becomes the region's supply.
	ConfirmWindow time.Duration
	// MaxSupply is the largest plausible availableSupply (default 1e6); a
	// report above it is refused and changes no state.
	MaxSupply float64
	// Disabled turns the guard off: Check accepts everything and does not
	// touch Redis.
	Disabled bool

	Logger *slog.Logger
	// Registerer receives surge_intake_implausible_events_total (nil: none).
	Registerer prometheus.Registerer
	// Now is the clock of the confirmation window for events without
	// ReceivedAt (default time.Now); the intake sets ReceivedAt.
	Now func() time.Time
}

func (o *SupplyGuardOptions) defaults() error {
	if math.IsNaN(o.MaxDrop) || o.MaxDrop > 1 {
		return fmt.Errorf("ingest: SupplyGuardOptions.MaxDrop %v must be in (0, 1]", o.MaxDrop)
	}
	if math.IsNaN(o.MaxSupply) {
		return errors.New("ingest: SupplyGuardOptions.MaxSupply is NaN")
	}
	setDefault(&o.MaxDrop, 0.5)
	setDefault(&o.ConfirmWindow, 2*time.Minute)
	setDefault(&o.MaxSupply, 1e6)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

const (
	// confirmTolerance: a report confirms a held value v when it is at
	// most v·(1+confirmTolerance) — within ±10 % of it, or lower.
	confirmTolerance = 0.1
	// supplyLastTTL bounds the memory of regions that stop reporting: the
	// last accepted value is forgotten after a week without reports, and
	// the next report is accepted as a first one.
	supplyLastTTL = 7 * 24 * time.Hour
	// maxRegionsPerCall bounds the regions of one script call (on a Redis
	// Cluster, regions of one slot: redislua.Batch).
	maxRegionsPerCall = 250
)

// SupplyGuardKey is the Redis hash holding a region's last accepted supply
// (fields v, the value as sent, and at, its event time in Unix µs). The
// held low value, if any, is the hash SupplyGuardKey(region)+":pending"
// (fields v; at, its receipt time in Unix ms; id, its eventId), expiring
// after the confirmation window. Both are hash-tagged by region: one slot.
func SupplyGuardKey(region string) string { return "plaus:supply:{" + region + "}" }

func supplyPendingKey(region string) string { return SupplyGuardKey(region) + ":pending" }

// Outcomes of the supply script, per report.
const (
	supplyHeld      = 0 // refused; recorded as the pending low value
	supplyFirst     = 1 // accepted: no last value
	supplyOK        = 2 // accepted: not below last·(1−MaxDrop)
	supplyConfirmed = 3 // accepted: confirms the pending low value
)

// supplyScript checks the reports of one or more regions. KEYS come in
// pairs (last, pending) per region; ARGV[1..4] are MaxDrop, the window in
// ms, the last value's TTL in ms and the confirmation tolerance; then per
// region the number of its reports n and n quadruples (value as a string,
// event time in Unix µs, receipt time in Unix ms, eventId), in event-time
// order. It returns per region a list of {outcome, last value before the
// report as a string ("" if none)}.
//
// A report is accepted when the region has no last value, when it is not
// below last·(1−MaxDrop), or when it confirms the pending value (another
// eventId, received within the window of it, at most pending·(1+tol));
// an accepted report becomes the last value if it is not older (event
// time) than the last one — as the features take the latest supply by
// event time — and clears the pending value: a held value contradicted by
// an accepted report is stale. A refused report becomes the pending value
// (a retry of the pending eventId leaves it, and its window, alone).
// Values are stored as sent and compared with tonumber, so a float is
// never rounded by Lua's integer reply conversion.
const supplyScript = `
local maxDrop = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local tol = tonumber(ARGV[4])
local a = 5
local out = {}
for r = 1, #KEYS / 2 do
  local lastKey, pendKey = KEYS[2 * r - 1], KEYS[2 * r]
  local n = tonumber(ARGV[a])
  a = a + 1
  local h = redis.call('HMGET', lastKey, 'v', 'at')
  local lastS, lastAt = h[1], tonumber(h[2])
  local lastV = tonumber(lastS)
  if lastV == nil then lastS = nil end
  local p = redis.call('HMGET', pendKey, 'v', 'at', 'id')
  local pS, pv, pat, pid = p[1], tonumber(p[1]), tonumber(p[2]), p[3]
  if pv == nil or pat == nil then pv = nil end
  local lastDirty, pendDirty = false, false
  local res = {}
  for k = 1, n do
    local vs, at, now, id = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
    a = a + 4
    local v = tonumber(vs)
    local live = pv ~= nil and math.abs(now - pat) <= window
    local outcome = 0
    if lastV == nil then
      outcome = 1
    elseif v >= lastV * (1 - maxDrop) then
      outcome = 2
    elseif live and id ~= pid and v <= pv * (1 + tol) then
      outcome = 3
    end
    res[k] = {outcome, lastS or ''}
    if outcome > 0 then
      if lastV == nil or lastAt == nil or at >= lastAt then
        lastS, lastV, lastAt = vs, v, at
        lastDirty = true
      end
      if pv ~= nil then
        pS, pv, pat, pid = nil, nil, nil, nil
        pendDirty = true
      end
    elseif not (live and id == pid) then
      pS, pv, pat, pid = vs, v, now, id
      pendDirty = true
    end
  end
  if lastDirty then
    redis.call('HSET', lastKey, 'v', lastS, 'at', string.format('%.0f', lastAt))
  end
  if lastS ~= nil then
    redis.call('PEXPIRE', lastKey, ttl)
  end
  if pendDirty then
    if pv == nil then
      redis.call('DEL', pendKey)
    else
      redis.call('HSET', pendKey, 'v', pS, 'at', string.format('%.0f', pat), 'id', pid)
      redis.call('PEXPIRE', pendKey, window)
    end
  end
  out[r] = res
end
return out
`

var supplyGuardScript = redis.NewScript(supplyScript)

// SupplyGuard holds back implausible supply reports before they reach
// Kafka and become a region's current supply (the features take the latest
// supply_update, and a supply of 0 drives the multiplier to its cap within
// minutes): a fall of more than MaxDrop in one report is refused until a
// second report confirms it within ConfirmWindow, and a report above
// MaxSupply is refused outright. The state (the last accepted supply and
// the held low value of each region) is in Redis, shared by every replica,
// and updated atomically per region by a Lua script (many regions per
// call, of one slot on a Redis Cluster). It is kept per region, not per
// productType: the features keep one supply per region, the latest
// supply_update of any product.
//
// When Redis fails, Check returns the error and no decision: the caller
// chooses. The intake fails OPEN, as for its rate limits (the guard
// protects prices from one bad report; refusing every supply update while
// Redis is down would freeze supply instead), counting and logging the
// failure.
//
// Limits: the first report of a region (or the first after a week without
// reports) is accepted as it is; a fall spread over several reports of at
// most MaxDrop each passes; a confirmation may come from the same client
// as the held report (with another eventId). It is safe for concurrent
// use; a nil *SupplyGuard accepts everything.
type SupplyGuard struct {
	rdb         redis.UniversalClient
	opts        SupplyGuardOptions
	implausible *prometheus.CounterVec // by field
	perCall     int                    // regions per script call
}

// NewSupplyGuard returns a guard keeping its state in rdb (which may be nil
// only when opts.Disabled).
func NewSupplyGuard(rdb redis.UniversalClient, opts SupplyGuardOptions) (*SupplyGuard, error) {
	if rdb == nil && !opts.Disabled {
		return nil, errors.New("ingest: NewSupplyGuard needs Redis")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	g := &SupplyGuard{
		rdb:  rdb,
		opts: opts,
		implausible: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_intake_implausible_events_total",
			Help: "Events refused as implausible (a supply fall not yet confirmed, a supply above the maximum), by field.",
		}, []string{"field"}),
		perCall: maxRegionsPerCall,
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(g.implausible)
	}
	return g, nil
}

// supplyReport is one report on its way through Check.
type supplyReport struct {
	i   int // index in events
	v   float64
	at  time.Time // event time
	now time.Time // receipt time
}

// Check decides on the supply_update events events[i] for i in idx (the
// intake passes the live ones of a request that passed validation and
// dedup; other types, backfills and events without availableSupply are
// skipped). It returns the refused ones by index, each with a FieldError
// on availableSupply with code CodeImplausible, after counting and logging
// them; the others are accepted and, when not older than a region's last
// accepted report, become its last value. Reports of one region are
// decided in event-time order (equal times: in idx order), against the
// region's state in Redis, in one round trip for the whole batch (two when
// Redis has not cached the script). The confirmation window is measured
// in receipt time: ReceivedAt, or Now when it is zero.
//
// On an error (Redis unreachable, ctx done) no decision is returned and
// the regions that were reached may have recorded their reports; the
// caller decides whether to fail open (the intake does).
func (g *SupplyGuard) Check(ctx context.Context, events []Event, idx []int) (refused map[int]FieldError, err error) {
	if g == nil || g.opts.Disabled || len(idx) == 0 {
		return nil, nil
	}
	refuse := func(i int, fe FieldError) {
		if refused == nil {
			refused = map[int]FieldError{}
		}
		refused[i] = fe
		g.implausible.WithLabelValues(fe.Field).Inc()
	}

	byRegion := map[string][]supplyReport{}
	var regions []string
	var now time.Time
	for _, i := range idx {
		e := &events[i]
		if e.Type != TypeSupplyUpdate || e.AvailableSupply == nil || e.Backfill {
			continue
		}
		v := *e.AvailableSupply
		if !(v >= 0 && v <= g.opts.MaxSupply) { // also NaN and ±Inf
			refuse(i, FieldError{"availableSupply", CodeImplausible, fmt.Sprintf(
				"availableSupply %g is above the plausible maximum %g; refused", v, g.opts.MaxSupply)})
			g.opts.Logger.Warn("ingest: implausible supply report refused",
				"region", e.RegionID, "reported", v, "max_supply", g.opts.MaxSupply, "reason", "above_max")
			continue
		}
		r := supplyReport{i: i, v: v, at: e.Timestamp, now: e.ReceivedAt}
		if r.now.IsZero() {
			if now.IsZero() {
				now = g.opts.Now()
			}
			r.now = now
		}
		if _, ok := byRegion[e.RegionID]; !ok {
			regions = append(regions, e.RegionID)
		}
		byRegion[e.RegionID] = append(byRegion[e.RegionID], r)
	}
	if len(regions) == 0 {
		return refused, nil
	}
	for _, reps := range byRegion {
		slices.SortStableFunc(reps, func(a, b supplyReport) int { return a.at.Compare(b.at) })
	}

	replies, err := g.run(ctx, events, regions, byRegion)
	if err != nil {
		return nil, err
	}
	for k, region := range regions {
		reps := byRegion[region]
		res, ok := replies[k].([]any)
		if !ok || len(res) != len(reps) {
			return nil, fmt.Errorf("ingest: supply guard: unexpected script reply %v", replies[k])
		}
		for j, r := range reps {
			outcome, prev, err := decodeSupplyReply(res[j])
			if err != nil {
				return nil, err
			}
			if outcome != supplyHeld {
				continue
			}
			pv, _ := strconv.ParseFloat(prev, 64)
			refuse(r.i, FieldError{"availableSupply", CodeImplausible, fmt.Sprintf(
				"supply fell from %g to %g in one report (more than %g %%); held until a second report (another eventId, at most %g) confirms it within %s",
				pv, r.v, g.opts.MaxDrop*100, r.v*(1+confirmTolerance), g.opts.ConfirmWindow)})
			g.opts.Logger.Warn("ingest: implausible supply report refused",
				"region", region, "previous", pv, "reported", r.v, "reason", "drop")
		}
	}
	return refused, nil
}

// run evaluates the script for the regions in one pipelined round trip
// (redislua: no report is applied twice) and returns one reply per region.
func (g *SupplyGuard) run(ctx context.Context, events []Event, regions []string, byRegion map[string][]supplyReport) ([]any, error) {
	header := []any{
		strconv.FormatFloat(g.opts.MaxDrop, 'g', -1, 64),
		g.opts.ConfirmWindow.Milliseconds(),
		supplyLastTTL.Milliseconds(),
		strconv.FormatFloat(confirmTolerance, 'g', -1, 64),
	}
	items := make([]redislua.Item, len(regions))
	for k, region := range regions {
		reps := byRegion[region]
		it := redislua.Item{Keys: []string{SupplyGuardKey(region), supplyPendingKey(region)}, Args: []any{len(reps)}}
		for _, r := range reps {
			it.Args = append(it.Args, strconv.FormatFloat(r.v, 'g', -1, 64), r.at.UnixMicro(), r.now.UnixMilli(), events[r.i].EventID)
		}
		items[k] = it
	}
	out, err := redislua.Batch(ctx, g.rdb, supplyGuardScript, header, items, g.perCall)
	if err != nil {
		return nil, fmt.Errorf("ingest: supply guard: %w", err)
	}
	return out, nil
}

func decodeSupplyReply(v any) (outcome int64, prev string, err error) {
	arr, ok := v.([]any)
	if ok && len(arr) == 2 {
		outcome, ok1 := arr[0].(int64)
		prev, ok2 := arr[1].(string)
		if ok1 && ok2 {
			return outcome, prev, nil
		}
	}
	return 0, "", fmt.Errorf("ingest: supply guard: unexpected script reply %v", v)
}
