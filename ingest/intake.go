package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/ratelimit"
	"github.com/surgeworks/surge/redisconn"
	"github.com/surgeworks/surge/userhash"
)

// Status of one event in a Response.
type Status string

const (
	StatusAccepted  Status = "accepted"  // acknowledged by Kafka (acks=all)
	StatusDuplicate Status = "duplicate" // its eventId was accepted before: not sent again, not an error
	StatusRejected  Status = "rejected"  // see Errors; codes rate_limited and in_flight are worth a retry
)

// Errors of Ingest. Check them with errors.Is; ErrRateLimited and
// ErrUnavailable come inside a *RetryError that says when to retry.
var (
	ErrNoEvents      = errors.New("ingest: no events")
	ErrTooManyEvents = errors.New("ingest: too many events")
	// ErrRateLimited: the API client is over its rate limit; nothing was accepted.
	ErrRateLimited = errors.New("ingest: client rate limit exceeded")
	// ErrUnavailable: Kafka did not acknowledge, or the dedup store is
	// unreachable; nothing was accepted and the same request may be retried.
	ErrUnavailable = errors.New("ingest: temporarily unavailable")
)

// RetryError is a failure of the whole request that goes away by itself;
// the client should send the same request again after RetryAfter.
type RetryError struct {
	Err        error
	RetryAfter time.Duration
}

func (e *RetryError) Error() string { return fmt.Sprintf("%v (retry after %s)", e.Err, e.RetryAfter) }
func (e *RetryError) Unwrap() error { return e.Err }

// ClientID identifies the API client of a request: its rate-limit bucket,
// the namespace of its event ids and what it may send.
type ClientID struct {
	// ID is stable and not secret: the auth.Principal's ID ("key:<client>",
	// "jwt:<subject>", "env:<hash>", "addr:<ip>").
	ID string
	// Anonymous: identified by address, not by credentials; the lower
	// anonymous limit applies.
	Anonymous bool
	// Supply: may send supply_update and external_signal events (the
	// supply role); other clients' are rejected with code forbidden.
	Supply bool
}

// ClientOf is the client of an authenticated caller.
func ClientOf(p auth.Principal) ClientID {
	return ClientID{ID: p.ID, Anonymous: p.Anonymous, Supply: p.Has(auth.RoleSupply)}
}

// Namespace prefixes the client's event ids on Kafka and in ClickHouse
// ("<namespace>:<eventId>"): 12 hex digits of a hash of the client's ID,
// so two clients' ids never collide and nobody can claim another's ids
// first. The keys of one client (a rotation) share it.
func (c ClientID) Namespace() string {
	sum := sha256.Sum256([]byte(c.ID))
	return hex.EncodeToString(sum[:6])
}

// StoredEventID is the id an event of client has on Kafka, in ClickHouse
// and in the dedup store.
func StoredEventID(client ClientID, eventID string) string { return client.Namespace() + ":" + eventID }

// IntakeOptions configures an Intake. Zero values take the defaults.
type IntakeOptions struct {
	// MaxEvents is the most events in one request (default 1,000).
	MaxEvents int
	// MaxBodyBytes bounds an HTTP request body (default 2 MiB).
	MaxBodyBytes int64
	// MaxClockSkew is how far an event timestamp may be ahead of the
	// server clock (default 30 s).
	MaxClockSkew time.Duration
	// MaxLateness is how old a live (not Backfill) event may be (default
	// 24 h). The stream consumer's grace is shorter: events between its
	// grace and this reach ClickHouse and count as late.
	MaxLateness time.Duration
	// DedupTTL is how long an accepted eventId is remembered in Redis, the
	// first filter (default 5 min). It costs about 110 bytes of Redis
	// memory per event (at 10,000 events/s, 5 min is 330 MB; at 50,000/s,
	// 1.65 GB). Past it a resend is accepted again, and counted once all
	// the same: the ClickHouse sink drops an event whose eventId events_raw
	// holds, at any age, and the features consumer counts no event older
	// than its grace (30 s), so the window only needs to outlast a
	// client's retries of a live event (the Client gives up after about
	// 5 min).
	DedupTTL time.Duration
	// ProduceTimeout bounds one produce with the writer's retries (default
	// 20 s). It should exceed the writer's own retry span (NewEventWriter:
	// about 16.5 s), so that a produce ends with the writer's answer.
	ProduceTimeout time.Duration
	// RedisTimeout bounds each Redis round trip of a request (default 2 s;
	// the client's own read and write timeouts must not be shorter: see
	// NewIntakeRedis).
	RedisTimeout time.Duration

	// Per-user token bucket in events: UserRate per second (default 20),
	// UserBurst (default 100). Events without userId have no user limit.
	UserRate  float64
	UserBurst int
	// Per-client token bucket of clients with an API key (default 100,000
	// events/s, burst 200,000: one trusted client can send 50,000/s).
	ClientRate  float64
	ClientBurst int
	// Per-client bucket of anonymous clients, by address (default 1,000
	// events/s, burst 2,000). A burst must be at least MaxEvents.
	AnonymousRate  float64
	AnonymousBurst int

	// UserHashKey keys the HMAC-SHA256 that replaces user ids (default:
	// random per process — set it in production: every replica must hash
	// a user alike, for the user rate limit and for analyses across
	// replicas; it is the same hash as quotes' audit records).
	UserHashKey []byte
	// SupplyGuard holds back implausible supply updates (a fall to 0 from
	// one report); nil: none.
	SupplyGuard *SupplyGuard

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o *IntakeOptions) defaults() error {
	setDefault(&o.MaxEvents, 1000)
	setDefault(&o.MaxBodyBytes, 2<<20)
	setDefault(&o.MaxClockSkew, 30*time.Second)
	setDefault(&o.MaxLateness, 24*time.Hour)
	setDefault(&o.DedupTTL, 5*time.Minute)
	setDefault(&o.ProduceTimeout, 20*time.Second)
	setDefault(&o.RedisTimeout, 2*time.Second)
	setDefault(&o.UserRate, 20)
	setDefault(&o.UserBurst, 100)
	setDefault(&o.ClientRate, 100_000)
	setDefault(&o.ClientBurst, 200_000)
	setDefault(&o.AnonymousRate, 1_000)
	setDefault(&o.AnonymousBurst, 2_000)
	if o.ClientBurst < o.MaxEvents || o.AnonymousBurst < o.MaxEvents {
		return fmt.Errorf("ingest: client bursts (%d, anonymous %d) must be at least MaxEvents (%d), or a full request could never pass",
			o.ClientBurst, o.AnonymousBurst, o.MaxEvents)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if len(o.UserHashKey) == 0 { // userhash.New takes a random one
		o.Logger.Warn("ingest: no user hash key; using a random one (user hashes differ between processes)")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

func setDefault[T int | int64 | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Producer writes messages to Kafka and returns once they are acknowledged
// or failed, with kafka.WriteErrors naming the failed ones when only some
// did; *kafka.Writer (Async false) is one, see NewEventWriter.
type Producer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Dedup keys. While a request produces its events their keys hold
// dedupPending and the request's claim token, for a short time
// (ProduceTimeout + 10 s); once Kafka acknowledged they hold dedupDone for
// DedupTTL. The pending value names the client (claimToken): a request that
// fails deletes the pending keys holding its client's token — also those
// of a claim whose own answer was lost — and never another client's, and
// the client's retry owns its own claims whatever became of them. Another
// client finds them in flight; a process that dies in between leaves them
// to expire, so a retry from elsewhere is accepted a little later instead
// of being reported duplicate and lost.
const (
	dedupPending = "p"
	dedupDone    = "1"
)

// releaseScript deletes a pending dedup key if it holds the claim token
// ARGV[1]. One key per call: the keys of a batch are in different cluster
// slots.
var releaseScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// NewIntakeRedis returns a Redis client for the intake at addrs (a Redis
// Cluster when there are several, or cluster is set): its
// pipelines carry up to MaxEvents commands each, so its read and write
// timeouts are those of the intake's calls (timeout, e.g.
// IntakeOptions.RedisTimeout), not the price path's millisecond lookups.
func NewIntakeRedis(addrs []string, cluster bool, timeout time.Duration) redis.UniversalClient {
	return redisconn.New(redis.UniversalOptions{
		Addrs:         addrs,
		IsClusterMode: cluster,
		DialTimeout:   time.Second,
		ReadTimeout:   timeout,
		WriteTimeout:  timeout,
		PoolSize:      32,
		MaxRetries:    -1, // a pipeline of SET NX is not retried blindly: claim and release decide
	})
}

// DedupKey is the Redis key remembering an eventId.
func DedupKey(eventID string) string { return "dedup:{" + eventID + "}" }

// Rate limit scopes (ratelimit keys ratelimit:<scope>:{<id>}).
const (
	scopeUser   = "user"
	scopeClient = "client"
)

// unavailableRetryAfter is the Retry-After of a failed produce or dedup.
const unavailableRetryAfter = time.Second

// Intake takes events from clients: it validates them, replaces user ids by
// a keyed hash, applies the rate limits, drops duplicates and produces the
// rest to Kafka, answering only after Kafka acknowledged them. It is safe
// for concurrent use and has no background work. One request costs three
// Redis round trips (rate limits, dedup claim, dedup confirm) and one
// WriteMessages call.
//
// Decisions:
//   - Rate limits (Redis token buckets shared by all replicas), applied
//     after the dedup claim, so duplicates cost nothing: the API client's
//     bucket is charged with all of the request's new valid events,
//     all or nothing (over it: ErrRateLimited, HTTP 429, and the users'
//     tokens are given back); each user's bucket grants as many of that
//     user's events as it holds, the others are rejected "rate_limited"
//     while the rest of the batch goes on. When the limiter fails the
//     intake fails OPEN: limits protect capacity, refusing would lose
//     events; it counts surge_intake_ratelimit_fail_open_total and logs
//     (at most every 10 s).
//   - Dedup fails CLOSED: without Redis a request gets ErrUnavailable (503)
//     rather than events that might be counted twice downstream.
//   - Dedup is two-phase. SET dedup:{id} NX GET claims an eventId as
//     pending for ProduceTimeout + 10 s; after Kafka's ack the key becomes
//     final for DedupTTL. A failed produce deletes the claims of events
//     Kafka did not take (and keeps those it did take, when kafka-go says
//     which), so the retry is accepted and each event lands once; a replica
//     dying in between leaves claims that expire by themselves instead of
//     turning the client's retry into a lost "duplicate". A claim found
//     pending is reported "in_flight", never "duplicate".
//   - A produce whose outcome is unknown (ProduceTimeout passed) is treated
//     as failed: the retry may then put an event on Kafka twice, which is
//     better than losing it; the ClickHouse sink drops the second copy
//     (it looks every eventId up in events_raw), and the features consumer
//     sees it only when the retry comes within its grace.
type Intake struct {
	rdb      redis.UniversalClient
	producer Producer
	limiter  *ratelimit.Limiter // nil: no rate limits
	users    *userhash.Hasher
	opts     IntakeOptions
	m        intakeMetrics
	lastWarn atomic.Int64 // unix ns of the last fail-open warning
}

// NewIntake returns an intake deduplicating in rdb and producing with
// producer (NewEventWriter). A nil limiter turns the rate limits off.
func NewIntake(rdb redis.UniversalClient, producer Producer, limiter *ratelimit.Limiter, opts IntakeOptions) (*Intake, error) {
	if rdb == nil || producer == nil {
		return nil, errors.New("ingest: NewIntake needs Redis and a producer")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &Intake{rdb: rdb, producer: producer, limiter: limiter, users: userhash.New(opts.UserHashKey), opts: opts,
		m: newIntakeMetrics(opts.Registerer)}, nil
}

// Response is the answer to an ingestion request.
type Response struct {
	Accepted   int           `json:"accepted"`
	Duplicates int           `json:"duplicates"`
	Rejected   int           `json:"rejected"`
	Events     []EventResult `json:"events"`
	// RetryAfter is set when some events were rejected for a reason that
	// passes (rate_limited, in_flight): the longest wait among them.
	RetryAfter time.Duration `json:"-"`
}

// EventResult is the outcome of one event of a request.
type EventResult struct {
	Index   int          `json:"index"` // position in the request
	EventID string       `json:"eventId"`
	Status  Status       `json:"status"`
	Errors  []FieldError `json:"errors,omitempty"`
}

// item is one event on its way through a request.
type item struct {
	id     string // the eventId as the client sent it
	ev     Event
	errs   []FieldError
	status Status
	copyOf int // ≥ 0: a later copy of the event at this index in the same request
	value  []byte
	retry  time.Duration
}

// Ingest takes one request's events (1 to MaxEvents) from client. Every
// event gets a result: valid events are accepted even when others are
// rejected. It returns after Kafka acknowledged every accepted event, and
// either all valid events are acknowledged or the request fails as a whole
// with a *RetryError (ErrUnavailable, ErrRateLimited), after which the
// same request can be sent again safely. The caller's events are not
// changed; what goes to Kafka has UserID replaced by UserHash and
// ReceivedAt set.
func (in *Intake) Ingest(ctx context.Context, client ClientID, events []Event) (Response, error) {
	items := make([]item, len(events))
	for i := range events {
		items[i] = item{ev: events[i]}
	}
	return in.ingest(ctx, client, items)
}

func (in *Intake) ingest(ctx context.Context, client ClientID, items []item) (Response, error) {
	switch {
	case len(items) == 0:
		return Response{}, ErrNoEvents
	case len(items) > in.opts.MaxEvents:
		return Response{}, fmt.Errorf("%w: %d events, at most %d per request", ErrTooManyEvents, len(items), in.opts.MaxEvents)
	}
	if err := ctx.Err(); err != nil {
		return Response{}, fmt.Errorf("ingest: %w", err)
	}
	in.m.batchSize.Observe(float64(len(items)))
	now := in.opts.Now()

	// Validate, normalise, encode; a later copy of an eventId in the same
	// request follows the first valid one.
	first := make(map[string]int, len(items))
	var live []int // valid first occurrences: the candidates for Kafka
	ns := client.Namespace() + ":"
	for i := range items {
		it := &items[i]
		it.copyOf = -1
		it.id = it.ev.EventID
		if it.errs == nil {
			it.errs = Validate(&it.ev, now, in.opts.MaxClockSkew, in.opts.MaxLateness)
		}
		reason := "invalid"
		if it.errs == nil && !client.Supply && (it.ev.Type == TypeSupplyUpdate || it.ev.Type == TypeExternalSignal) {
			it.errs = []FieldError{{"type", CodeForbidden, fmt.Sprintf(
				"this client may not send %s events: its key or token needs the supply role", it.ev.Type)}}
			reason = "forbidden"
		}
		if it.errs != nil {
			it.status = StatusRejected
			in.m.rejected.WithLabelValues(reason).Inc()
			continue
		}
		if j, ok := first[it.ev.EventID]; ok {
			it.copyOf = j
			continue
		}
		first[it.ev.EventID] = i
		it.ev.EventID = ns + it.ev.EventID
		in.normalise(&it.ev, now)
		v, err := it.ev.Marshal()
		if err != nil {
			return Response{}, fmt.Errorf("ingest: encode event %d: %w", i, err)
		}
		it.value = v
		live = append(live, i)
	}

	// Dedup first: a resend's duplicates cost no tokens (a client that
	// resends a whole request after a 429 must not spend its users'
	// budget on the events already accepted). The claims of events the
	// limits then refuse are released.
	token := claimToken(client)
	owned, err := in.claim(ctx, items, live, token)
	if err != nil {
		return Response{}, err
	}
	left, err := in.limit(ctx, client, items, owned)
	if err != nil {
		in.release(ctx, items, owned, token)
		return Response{}, err
	}
	if len(left) < len(owned) {
		kept := make(map[int]bool, len(left))
		for _, i := range left {
			kept[i] = true
		}
		in.release(ctx, items, slices.DeleteFunc(slices.Clone(owned), func(i int) bool { return kept[i] }), token)
	}
	if left, err = in.plausible(ctx, items, left, token); err != nil {
		in.release(ctx, items, left, token)
		return Response{}, err
	}
	if err := in.produce(ctx, items, left, token); err != nil {
		return Response{}, err
	}
	return in.respond(items), nil
}

// normalise replaces the user id by its keyed hash and stamps the time of
// receipt; nothing after this sees the user id.
func (in *Intake) normalise(e *Event, now time.Time) {
	e.UserHash = ""
	if e.UserID != "" {
		e.UserHash = in.users.Hash(e.UserID)
		e.UserID = ""
	}
	e.Timestamp = e.Timestamp.UTC()
	e.ReceivedAt = now.UTC()
}

// warnFailOpen logs a fail-open decision, at most every 10 s.
func (in *Intake) warnFailOpen(msg string, err error) {
	if last := in.lastWarn.Load(); time.Since(time.Unix(0, last)) > 10*time.Second && in.lastWarn.CompareAndSwap(last, time.Now().UnixNano()) {
		in.opts.Logger.Warn(msg, "err", err)
	}
}

// plausible holds back the implausible supply updates among left
// (IntakeOptions.SupplyGuard): they are rejected "implausible" (no
// automatic retry; a second report confirms a real fall) and their dedup
// claims released. When the guard fails the updates pass (fail open, as
// for the rate limits), counted and logged.
func (in *Intake) plausible(ctx context.Context, items []item, left []int, token string) ([]int, error) {
	if in.opts.SupplyGuard == nil {
		return left, nil
	}
	var idx []int
	for _, i := range left {
		if e := &items[i].ev; e.Type == TypeSupplyUpdate && !e.Backfill {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return left, nil
	}
	evs, pos := make([]Event, len(idx)), make([]int, len(idx))
	for k, i := range idx {
		evs[k], pos[k] = items[i].ev, k
	}
	rctx, cancel := context.WithTimeout(ctx, in.opts.RedisTimeout)
	refused, err := in.opts.SupplyGuard.Check(rctx, evs, pos)
	cancel()
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("ingest: %w", ctx.Err())
	}
	if err != nil {
		in.m.guardFailOpen.Inc()
		in.warnFailOpen("ingest: supply guard unavailable; admitting supply updates unchecked (fail open)", err)
		return left, nil
	}
	if len(refused) == 0 {
		return left, nil
	}
	held := make(map[int]bool, len(refused))
	var heldIdx []int
	for k, fe := range refused {
		i := idx[k]
		items[i].status, items[i].errs = StatusRejected, []FieldError{fe}
		in.m.rejected.WithLabelValues("implausible").Inc()
		held[i] = true
		heldIdx = append(heldIdx, i)
	}
	in.release(ctx, items, heldIdx, token)
	return slices.DeleteFunc(left, func(i int) bool { return held[i] }), nil
}

// limit applies the client's bucket (all of the request's live events, or
// the request fails with ErrRateLimited) and each user's bucket (as many of
// the user's events as it has tokens for; the rest are rejected
// rate_limited), in one round trip. It returns the live events left.
// When the limiter fails, the request passes unlimited (fail open: the
// limits protect capacity, while refusing events would lose data) and the
// failure is counted and logged.
func (in *Intake) limit(ctx context.Context, client ClientID, items []item, live []int) ([]int, error) {
	if in.limiter == nil || len(live) == 0 {
		return live, nil
	}
	reqs := []ratelimit.Request{{Scope: scopeClient, ID: client.ID, N: len(live), Rate: in.opts.ClientRate, Burst: in.opts.ClientBurst}}
	if client.Anonymous {
		reqs[0].Rate, reqs[0].Burst = in.opts.AnonymousRate, in.opts.AnonymousBurst
	}
	if reqs[0].ID == "" {
		reqs[0].ID = "unknown"
	}
	users := map[string]int{} // user hash → index in reqs
	for _, i := range live {
		u := items[i].ev.UserHash
		if u == "" {
			continue
		}
		if r, ok := users[u]; ok {
			reqs[r].N++
			continue
		}
		users[u] = len(reqs)
		reqs = append(reqs, ratelimit.Request{Scope: scopeUser, ID: u, N: 1, Rate: in.opts.UserRate, Burst: in.opts.UserBurst, Partial: true})
	}
	rctx, cancel := context.WithTimeout(ctx, in.opts.RedisTimeout)
	ds, err := in.limiter.AllowBatch(rctx, reqs)
	cancel()
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("ingest: %w", ctx.Err()) // the caller left; not the limiter's fault
	}
	if err != nil {
		in.m.limitFailOpen.Inc()
		in.warnFailOpen("ingest: rate limiter unavailable; admitting events unlimited (fail open)", err)
		return live, nil
	}
	if !ds[0].Allowed {
		in.m.rateLimited.WithLabelValues(scopeClient).Add(float64(len(live)))
		// Give the users their tokens back: these events were not taken.
		var refund []ratelimit.Request
		for r := 1; r < len(reqs); r++ {
			if ds[r].Granted > 0 {
				refund = append(refund, reqs[r])
				refund[len(refund)-1].N = ds[r].Granted
			}
		}
		if len(refund) > 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.opts.RedisTimeout)
			if err := in.limiter.Refund(rctx, refund); err != nil {
				in.opts.Logger.Warn("ingest: rate limit refund failed", "err", err)
			}
			cancel()
		}
		return nil, &RetryError{
			Err:        fmt.Errorf("%w: %s (%g events/s, burst %d)", ErrRateLimited, client.ID, reqs[0].Rate, reqs[0].Burst),
			RetryAfter: ds[0].RetryAfter,
		}
	}
	left := make([]int, 0, len(live))
	for _, i := range live {
		r, ok := users[items[i].ev.UserHash]
		if !ok {
			left = append(left, i)
			continue
		}
		if ds[r].Granted > 0 {
			ds[r].Granted--
			left = append(left, i)
			continue
		}
		it := &items[i]
		it.status, it.retry = StatusRejected, ds[r].RetryAfter
		it.errs = []FieldError{{"userId", CodeRateLimited, fmt.Sprintf(
			"this user is over its rate limit (%g events/s, burst %d); retry in %s",
			in.opts.UserRate, in.opts.UserBurst, ds[r].RetryAfter)}}
		in.m.rateLimited.WithLabelValues(scopeUser).Inc()
		in.m.rejected.WithLabelValues("rate_limited").Inc()
	}
	return left, nil
}

// claim sets the pending dedup key of every live event in one pipelined
// round trip (SET NX GET): events whose key was free are owned by this
// request and returned; the others are duplicates (accepted before) or in
// flight (another request is producing them now). SET with both NX and GET
// needs Redis ≥ 7.0.
func (in *Intake) claim(ctx context.Context, items []item, live []int, token string) ([]int, error) {
	if len(live) == 0 {
		return nil, nil
	}
	pending := in.opts.ProduceTimeout + 10*time.Second
	rctx, cancel := context.WithTimeout(ctx, in.opts.RedisTimeout)
	defer cancel()
	pipe := in.rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(live))
	for k, i := range live {
		cmds[k] = pipe.SetArgs(rctx, DedupKey(items[i].ev.EventID), token, redis.SetArgs{Mode: "NX", Get: true, TTL: pending})
	}
	_, _ = pipe.Exec(rctx) // the commands carry their errors
	owned := make([]int, 0, len(live))
	var failed error
	for k, i := range live {
		old, err := cmds[k].Result()
		it := &items[i]
		switch {
		case errors.Is(err, redis.Nil), err == nil && old == token: // the key was free, and is ours now; or our client's
			owned = append(owned, i)
		case err != nil:
			failed = err
		case strings.HasPrefix(old, dedupPending):
			it.status, it.retry = StatusRejected, unavailableRetryAfter
			it.errs = []FieldError{{"eventId", CodeInFlight, "an event with this eventId is being ingested by another request; retry shortly"}}
			in.m.rejected.WithLabelValues("in_flight").Inc()
		default:
			it.status = StatusDuplicate
			in.m.dedupHits.Inc()
		}
	}
	if failed != nil {
		in.m.dedupErrors.WithLabelValues("claim").Inc()
		// Commands that failed may have set their key all the same (a
		// timeout after the server ran them): release every key of the
		// batch that holds this request's token.
		in.release(ctx, items, live, token)
		return nil, &RetryError{Err: fmt.Errorf("%w: dedup store: %w", ErrUnavailable, failed), RetryAfter: unavailableRetryAfter}
	}
	return owned, nil
}

// produce writes the owned events in one WriteMessages call and waits for
// Kafka. The write does not stop when the caller's context ends: its
// outcome decides which dedup keys stay, so it runs to its end (bounded by
// ProduceTimeout). Acknowledged events get their final dedup key; the keys
// of events Kafka did not take are deleted, so a retry is accepted.
func (in *Intake) produce(ctx context.Context, items []item, owned []int, token string) error {
	if len(owned) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(owned))
	for k, i := range owned {
		e := &items[i].ev
		msgs[k] = kafka.Message{Topic: TopicFor(e.Type), Key: []byte(e.RegionID), Value: items[i].value}
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.opts.ProduceTimeout)
	begin := time.Now()
	err := in.producer.WriteMessages(pctx, msgs...)
	cancel()
	in.m.produceDuration.Observe(time.Since(begin).Seconds())
	if err == nil {
		in.confirm(ctx, items, owned)
		for _, i := range owned {
			items[i].status = StatusAccepted
		}
		return nil
	}

	in.m.produceFailures.Inc()
	var werrs kafka.WriteErrors
	var written, lost []int
	if errors.As(err, &werrs) && len(werrs) == len(owned) {
		for k, i := range owned {
			if werrs[k] == nil {
				written = append(written, i)
			} else {
				lost = append(lost, i)
			}
		}
	} else {
		lost = owned // not written, or unknown (a timeout): a retry may duplicate rather than lose
	}
	// Events Kafka took keep their key: the retry reports them duplicate
	// and sends only the rest, so each event is on Kafka once.
	in.confirm(ctx, items, written)
	in.release(ctx, items, lost, token)
	in.opts.Logger.Warn("ingest: produce failed; request refused for retry",
		"events", len(owned), "written", len(written), "err", err)
	return &RetryError{Err: fmt.Errorf("%w: kafka: %w", ErrUnavailable, err), RetryAfter: unavailableRetryAfter}
}

// claimToken is the pending dedup value of a client's requests:
// dedupPending and 12 bytes of a hash of the client. A request that finds
// its own client's claim owns it: that is the client's retry of a request
// that failed without releasing its claims (or that is still producing;
// both copies then reach Kafka and the ClickHouse sink drops one).
func claimToken(client ClientID) string {
	sum := sha256.Sum256([]byte(client.ID))
	return dedupPending + hex.EncodeToString(sum[:12])
}

// confirm makes the dedup keys of produced events final (DedupTTL). When it
// fails the keys stay pending and expire: a retry after that would be
// accepted again (a duplicate on Kafka) — counted and logged.
func (in *Intake) confirm(ctx context.Context, items []item, idx []int) {
	if len(idx) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.opts.RedisTimeout)
	defer cancel()
	_, err := in.rdb.Pipelined(rctx, func(p redis.Pipeliner) error {
		for _, i := range idx {
			p.Set(rctx, DedupKey(items[i].ev.EventID), dedupDone, in.opts.DedupTTL)
		}
		return nil
	})
	if err != nil {
		in.m.dedupErrors.WithLabelValues("confirm").Inc()
		in.opts.Logger.Error("ingest: confirming dedup keys failed; they expire as pending", "events", len(idx), "err", err)
	}
}

// release deletes the pending dedup keys of events that were not produced,
// if they hold this request's claim token. When it fails they expire by
// themselves shortly (pending TTL); until then a retry is answered
// in_flight.
func (in *Intake) release(ctx context.Context, items []item, idx []int, token string) {
	if len(idx) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.opts.RedisTimeout)
	defer cancel()
	_, err := in.rdb.Pipelined(rctx, func(p redis.Pipeliner) error {
		for _, i := range idx {
			releaseScript.Eval(rctx, p, []string{DedupKey(items[i].ev.EventID)}, token)
		}
		return nil
	})
	if err != nil {
		in.m.dedupErrors.WithLabelValues("release").Inc()
		in.opts.Logger.Error("ingest: releasing dedup keys failed; they expire as pending", "events", len(idx), "err", err)
	}
}

// respond builds the response; later copies of an eventId in the request
// follow the first: accepted or duplicate becomes duplicate, a rejection
// stays a rejection.
func (in *Intake) respond(items []item) Response {
	resp := Response{Events: make([]EventResult, len(items))}
	for i := range items {
		it := &items[i]
		if it.copyOf >= 0 {
			orig := items[it.copyOf]
			if orig.status == StatusRejected {
				it.status, it.errs, it.retry = orig.status, orig.errs, orig.retry
			} else {
				it.status = StatusDuplicate
				in.m.dedupHits.Inc()
			}
		}
		resp.Events[i] = EventResult{Index: i, EventID: it.id, Status: it.status, Errors: it.errs}
		switch it.status {
		case StatusAccepted:
			resp.Accepted++
		case StatusDuplicate:
			resp.Duplicates++
		default:
			resp.Rejected++
		}
		resp.RetryAfter = max(resp.RetryAfter, it.retry)
	}
	in.m.events.WithLabelValues(string(StatusAccepted)).Add(float64(resp.Accepted))
	in.m.events.WithLabelValues(string(StatusDuplicate)).Add(float64(resp.Duplicates))
	in.m.events.WithLabelValues(string(StatusRejected)).Add(float64(resp.Rejected))
	return resp
}

// intakeMetrics are the intake's Prometheus metrics (surge_intake_*).
type intakeMetrics struct {
	events          *prometheus.CounterVec // by status
	rejected        *prometheus.CounterVec // by reason: invalid, rate_limited, in_flight
	rateLimited     *prometheus.CounterVec // events refused, by scope
	dedupHits       prometheus.Counter
	dedupErrors     *prometheus.CounterVec // by op: claim, confirm, release
	limitFailOpen   prometheus.Counter
	guardFailOpen   prometheus.Counter
	batchSize       prometheus.Histogram
	produceDuration prometheus.Histogram
	produceFailures prometheus.Counter
	httpRequests    *prometheus.CounterVec // by code
}

func newIntakeMetrics(reg prometheus.Registerer) intakeMetrics {
	m := intakeMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_intake_events_total", Help: "Events received, by status (accepted, duplicate, rejected).",
		}, []string{"status"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_intake_rejected_events_total", Help: "Rejected events by reason (invalid, forbidden, implausible, rate_limited, in_flight).",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_intake_rate_limited_events_total", Help: "Events refused by a rate limit, by scope (user, client).",
		}, []string{"scope"}),
		dedupHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_intake_dedup_hits_total", Help: "Events reported duplicate (eventId seen before).",
		}),
		dedupErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_intake_dedup_errors_total", Help: "Failed dedup store operations, by op (claim, confirm, release).",
		}, []string{"op"}),
		limitFailOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_intake_ratelimit_fail_open_total", Help: "Requests admitted without rate limits because the limiter failed.",
		}),
		guardFailOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_intake_supply_guard_fail_open_total", Help: "Requests whose supply updates were admitted unchecked because the supply guard failed.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "surge_intake_batch_size", Help: "Events per ingestion request.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 750, 1000},
		}),
		produceDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "surge_intake_produce_duration_seconds", Help: "Time for Kafka to acknowledge one request's events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		produceFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_intake_produce_failures_total", Help: "Requests refused because Kafka did not acknowledge.",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_intake_http_requests_total", Help: "POST /v1/events requests by HTTP status code.",
		}, []string{"code"}),
	}
	if reg != nil {
		reg.MustRegister(m.events, m.rejected, m.rateLimited, m.dedupHits, m.dedupErrors, m.limitFailOpen, m.guardFailOpen,
			m.batchSize, m.produceDuration, m.produceFailures, m.httpRequests)
	}
	return m
}

// String names a client in logs.
func (c ClientID) String() string {
	if c.Anonymous {
		return c.ID + " (anonymous)"
	}
	return c.ID
}
