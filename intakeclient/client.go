package intakeclient

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/ingest"
)

// DefaultIntakeURL is the event intake of a local `surge dev`/`surge serve`.
const DefaultIntakeURL = "http://127.0.0.1:8000/v1/events"

const (
	maxClientBatch = 1000     // the intake takes 1 to 1,000 events per request
	maxAnswerBytes = 16 << 20 // a 1,000-event answer is well under 1 MiB
	maxReasonKinds = 100      // distinct rejection reasons counted
)

// ClientOptions configures a Client. A zero field takes the documented
// default.
type ClientOptions struct {
	// URL of the intake; default DefaultIntakeURL.
	URL string
	// APIKey is sent in the X-Api-Key header when not empty.
	APIKey string
	// BatchSize is the most events in one request; default and maximum 1,000.
	BatchSize int
	// Senders is how many requests a Stream keeps in flight; default 4.
	Senders int
	// Linger is how long a Stream holds a partial batch for more events
	// before sending it; default 100 ms.
	Linger time.Duration
	// MaxAttempts bounds the requests for one batch, the first included;
	// default 30: with the backoff, enough to outlast an earlier attempt
	// still in flight at the intake (its produce timeout is 20 s). A batch
	// that still cannot be delivered fails its Stream.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt when the server
	// gave no Retry-After; it doubles with each attempt up to MaxBackoff and
	// is jittered (between half and all of it). Defaults 250 ms and 10 s.
	Backoff, MaxBackoff time.Duration
	// MaxRetryAfter caps the wait a server asks for in Retry-After; default 60 s.
	MaxRetryAfter time.Duration
	// RequestTimeout bounds one request; default 30 s. Used only by the
	// default HTTPClient.
	RequestTimeout time.Duration
	// HTTPClient sends the requests; default a client with RequestTimeout
	// that keeps Senders idle connections to the intake.
	HTTPClient *http.Client
	// KeepRejections is how many rejected events are kept with their reasons
	// in ClientStats.Rejections; default 10.
	KeepRejections int
	// Logger receives retries and failed batches; default slog.Default().
	Logger *slog.Logger
}

func (o ClientOptions) withDefaults() ClientOptions {
	if o.URL == "" {
		o.URL = DefaultIntakeURL
	}
	if o.BatchSize <= 0 || o.BatchSize > maxClientBatch {
		o.BatchSize = maxClientBatch
	}
	if o.Senders <= 0 {
		o.Senders = 4
	}
	if o.Linger <= 0 {
		o.Linger = 100 * time.Millisecond
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 30
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = time.Minute
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.KeepRejections <= 0 {
		o.KeepRejections = 10
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// EventRejection is an event the intake rejected, with its reasons
// ("field: message") and their kinds ("field: code" when the intake gave a
// code, else the reason), by which ClientStats.Reasons counts.
type EventRejection struct {
	EventID string
	Reasons []string
	Kinds   []string
}

// BatchResult counts the intake's answers for the events of one Send.
type BatchResult struct {
	Accepted, Duplicate, Rejected int
	// Unconfirmed events were in a 202 answer that gave no readable status
	// for them (a status other than accepted, duplicate or rejected, or none).
	Unconfirmed int
	// Failed events were given up: the intake refused their whole request
	// (400, or 413 for a single event).
	Failed     int
	Rejections []EventRejection
}

func (r *BatchResult) add(o BatchResult) {
	r.Accepted += o.Accepted
	r.Duplicate += o.Duplicate
	r.Rejected += o.Rejected
	r.Unconfirmed += o.Unconfirmed
	r.Failed += o.Failed
	r.Rejections = append(r.Rejections, o.Rejections...)
}

// ClientStats are a Client's running totals.
type ClientStats struct {
	Queued int64 // events handed to a Stream
	// Sent events were in requests the intake answered with 202; each is
	// counted once more as accepted, duplicate, rejected or unconfirmed.
	Sent                                       int64
	Accepted, Duplicate, Rejected, Unconfirmed int64
	Failed                                     int64 // events given up (see BatchResult.Failed)
	Requests                                   int64 // HTTP requests, retries included
	Retries                                    int64
	RateLimited                                int64 // 429 answers (whole or for some events)
	Unavailable                                int64 // 503 answers (whole or for some events)
	ConnErrors                                 int64 // requests without an answer
	// Rejections holds the first rejected events (ClientOptions.KeepRejections).
	Rejections []EventRejection
	// Reasons counts rejections by kind ("timestamp: too_late"), for up to
	// 100 distinct kinds (more are counted under "other reasons").
	Reasons map[string]int64
	// RequestErrors holds the first messages of refused requests.
	RequestErrors []string
}

// Done is how many events reached an end: sent or given up.
func (s ClientStats) Done() int64 { return s.Sent + s.Failed }

// Client sends events to the HTTP intake (POST /v1/events) in batches,
// retrying with backoff on 429, 503, other 5xx answers and connection
// errors. A retry resends the same eventIds, which the intake deduplicates,
// so retries are safe. Use Send for a synchronous delivery and Stream for
// concurrent batching. A Client is safe for concurrent use.
type Client struct {
	opts ClientOptions
	hc   *http.Client

	// sleep waits d or until ctx ends; tests replace it to observe waits.
	sleep func(ctx context.Context, d time.Duration) error

	queued, sent, accepted, duplicate, rejected, unconfirmed, failed atomic.Int64
	requests, retries, rateLimited, unavailable, connErrors          atomic.Int64

	mu            sync.Mutex
	rejections    []EventRejection
	reasons       map[string]int64
	requestErrors []string
	latencies     []time.Duration // of answered requests, the first maxLatencies
}

// maxLatencies bounds the request durations a Client keeps for Latency.
const maxLatencies = 1 << 20

// Latency returns the median and the 99th percentile of the duration of
// the requests the intake answered (retries included), over the first
// million requests.
func (c *Client) Latency() (p50, p99 time.Duration) {
	c.mu.Lock()
	l := slices.Clone(c.latencies)
	c.mu.Unlock()
	if len(l) == 0 {
		return 0, 0
	}
	slices.Sort(l)
	return l[len(l)/2], l[min(len(l)-1, len(l)*99/100)]
}

// NewClient returns a client for the intake at opts.URL.
func NewClient(opts ClientOptions) (*Client, error) {
	opts = opts.withDefaults()
	u, err := http.NewRequest(http.MethodPost, opts.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("intake url %q: %w", opts.URL, err)
	}
	if u.URL.Scheme != "http" && u.URL.Scheme != "https" {
		return nil, fmt.Errorf("intake url %q: want http or https", opts.URL)
	}
	hc := opts.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = opts.Senders + 1
		hc = &http.Client{Transport: tr, Timeout: opts.RequestTimeout}
	}
	return &Client{opts: opts, hc: hc, sleep: clientSleep, reasons: map[string]int64{}}, nil
}

// Options returns the options in effect, defaults filled in.
func (c *Client) Options() ClientOptions { return c.opts }

// Stats returns the running totals.
func (c *Client) Stats() ClientStats {
	s := ClientStats{
		Queued: c.queued.Load(), Sent: c.sent.Load(),
		Accepted: c.accepted.Load(), Duplicate: c.duplicate.Load(), Rejected: c.rejected.Load(),
		Unconfirmed: c.unconfirmed.Load(), Failed: c.failed.Load(),
		Requests: c.requests.Load(), Retries: c.retries.Load(),
		RateLimited: c.rateLimited.Load(), Unavailable: c.unavailable.Load(), ConnErrors: c.connErrors.Load(),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s.Rejections = slices.Clone(c.rejections)
	s.RequestErrors = slices.Clone(c.requestErrors)
	s.Reasons = make(map[string]int64, len(c.reasons))
	for k, v := range c.reasons {
		s.Reasons[k] = v
	}
	return s
}

// Send delivers events synchronously, BatchSize per request, one request
// after the other. It returns an error when a batch could not be delivered
// after MaxAttempts, when the intake refuses the client (401, 403, 404,
// 405) or when ctx ends; the result counts what was delivered until then.
func (c *Client) Send(ctx context.Context, events []ingest.Event) (BatchResult, error) {
	var total BatchResult
	for len(events) > 0 {
		n := min(len(events), c.opts.BatchSize)
		r, err := c.post(ctx, events[:n])
		total.add(r)
		if err != nil {
			return total, err
		}
		events = events[n:]
	}
	return total, nil
}

// errFatal marks answers after which no further request can succeed.
var errFatal = errors.New("intake refused the client")

// post sends one batch (≤ BatchSize events) with retries: the whole batch
// on 429 and 503 without per-event results, other 5xx answers and
// connection errors; only the events rejected with a code worth a retry
// (rate_limited, in_flight) when the answer has per-event results. A 413
// splits the batch.
func (c *Client) post(ctx context.Context, events []ingest.Event) (BatchResult, error) {
	var total BatchResult
	pending := events
	for attempt := 1; ; attempt++ {
		body, err := encodeBatch(pending)
		if err != nil {
			return total, err
		}
		status, header, answer, err := c.do(ctx, body)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return total, fmt.Errorf("send %d events: %w", len(pending), context.Cause(ctx))
			}
			c.connErrors.Add(1)
		case status == http.StatusAccepted || status == http.StatusOK ||
			(status == http.StatusBadRequest || status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) && hasStatuses(answer):
			// 400 with statuses: every event was rejected as invalid; 429
			// and 503 with statuses: some were rejected for now, the
			// others have their outcome.
			switch status {
			case http.StatusTooManyRequests:
				c.rateLimited.Add(1)
			case http.StatusServiceUnavailable:
				c.unavailable.Add(1)
			}
			r, retry, _ := parseAnswer(answer, pending)
			c.record(len(pending)-len(retry), r)
			total.add(r)
			if len(retry) == 0 {
				return total, nil
			}
			pending = retry
			wait = parseRetryAfter(header.Get("Retry-After"), time.Now(), c.opts.MaxRetryAfter)
			err = fmt.Errorf("%d events rejected for now (rate limited or in flight)", len(retry))
		case status == http.StatusRequestEntityTooLarge && len(pending) > 1:
			// The intake's limits are below our batch: halve and go on.
			c.opts.Logger.Debug("intake: request too large, splitting", "events", len(pending), "answer", answerExcerpt(answer))
			half := len(pending) / 2
			r1, err := c.post(ctx, pending[:half])
			total.add(r1)
			if err != nil {
				return total, err
			}
			r2, err := c.post(ctx, pending[half:])
			total.add(r2)
			return total, err
		case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
			if status == http.StatusTooManyRequests {
				c.rateLimited.Add(1)
			} else {
				c.unavailable.Add(1)
			}
			wait = parseRetryAfter(header.Get("Retry-After"), time.Now(), c.opts.MaxRetryAfter)
			err = fmt.Errorf("intake answered %d: %s", status, answerExcerpt(answer))
		case status >= 500 || status == http.StatusRequestTimeout:
			err = fmt.Errorf("intake answered %d: %s", status, answerExcerpt(answer))
		case status == http.StatusUnauthorized || status == http.StatusForbidden ||
			status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
			return total, fmt.Errorf("%w: %d %s: %s", errFatal, status, http.StatusText(status), answerExcerpt(answer))
		default: // 400 without statuses, 413 for one event, 422 …: this request cannot succeed, the next ones may
			msg := fmt.Sprintf("%d events refused: %d %s: %s", len(pending), status, http.StatusText(status), answerExcerpt(answer))
			c.opts.Logger.Warn("intake refused a batch", "events", len(pending), "status", status, "answer", answerExcerpt(answer))
			c.failed.Add(int64(len(pending)))
			c.mu.Lock()
			if len(c.requestErrors) < c.opts.KeepRejections {
				c.requestErrors = append(c.requestErrors, msg)
			}
			c.mu.Unlock()
			total.Failed += len(pending)
			return total, nil
		}
		if attempt >= c.opts.MaxAttempts {
			return total, fmt.Errorf("send %d events: gave up after %d attempts: %w", len(pending), attempt, err)
		}
		if wait <= 0 {
			wait = c.backoff(attempt)
		}
		c.retries.Add(1)
		c.opts.Logger.Debug("intake: retrying", "events", len(pending), "attempt", attempt, "wait", wait, "err", err)
		if err := c.sleep(ctx, wait); err != nil {
			return total, fmt.Errorf("send %d events: %w", len(pending), context.Cause(ctx))
		}
	}
}

// encodeBatch is the request body {"events": [...]}: each event with the
// fields a client sends (see appendEvent).
func encodeBatch(events []ingest.Event) ([]byte, error) {
	b := make([]byte, 0, 64+200*len(events))
	b = append(b, `{"events":[`...)
	for i := range events {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendEvent(b, &events[i]); err != nil {
			return nil, fmt.Errorf("encode event %q: %w", events[i].EventID, err)
		}
	}
	return append(b, "]}"...), nil
}

// appendEvent appends the JSON of an event as a client sends it: the
// fields of ingest.Event under their JSON names, without those the intake sets
// itself (userHash, receivedAt) and with the same omissions. It does by hand
// what encoding/json does by reflection, several times faster: the client
// encodes every event it sends.
func appendEvent(b []byte, e *ingest.Event) ([]byte, error) {
	str := func(name, v string, always bool) {
		if v != "" || always {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, '"', ':')
			b = appendJSONString(b, v)
		}
	}
	var numErr error
	num := func(name string, v *float64) {
		if v == nil {
			return
		}
		if math.IsNaN(*v) || math.IsInf(*v, 0) {
			numErr = fmt.Errorf("%s: %v is not a JSON number", name, *v)
			return
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = strconv.AppendFloat(b, *v, 'g', -1, 64)
	}
	b = append(b, `{"eventId":`...)
	b = appendJSONString(b, e.EventID)
	str("type", e.Type, true)
	str("regionId", e.RegionID, true)
	b = append(b, `,"timestamp":"`...)
	b = e.Timestamp.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	str("userId", e.UserID, false)
	str("productType", e.ProductType, false)
	num("price", e.Price)
	num("availableSupply", e.AvailableSupply)
	str("signal", e.Signal, false)
	num("value", e.Value)
	str("quoteId", e.QuoteID, false)
	if x := e.Experiment; x != nil {
		b = append(b, `,"experiment":{"id":`...)
		b = appendJSONString(b, x.ID)
		b = append(b, `,"variant":`...)
		b = appendJSONString(b, x.Variant)
		b = append(b, '}')
	}
	if e.Backfill {
		b = append(b, `,"backfill":true`...)
	}
	return append(b, '}'), numErr
}

// appendJSONString appends s as a JSON string: as is when it is printable
// ASCII without quotes or backslashes, else escaped by encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// do makes one request and reads the answer.
func (c *Client) do(ctx context.Context, body []byte) (int, http.Header, []byte, error) {
	c.requests.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.opts.URL, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.opts.APIKey != "" {
		req.Header.Set(auth.APIKeyHeader, c.opts.APIKey)
	}
	begin := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil { // a broken connection: retried like one that failed to open
		return 0, nil, nil, fmt.Errorf("read answer: %w", err)
	}
	took := time.Since(begin)
	c.mu.Lock()
	if len(c.latencies) < maxLatencies {
		c.latencies = append(c.latencies, took)
	}
	c.mu.Unlock()
	return resp.StatusCode, resp.Header, answer, nil
}

// backoff is the jittered wait after the given failed attempt (1-based).
func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.Backoff
	for i := 1; i < attempt && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.opts.MaxBackoff)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// record adds a delivered batch to the running totals.
func (c *Client) record(n int, r BatchResult) {
	c.sent.Add(int64(n))
	c.accepted.Add(int64(r.Accepted))
	c.duplicate.Add(int64(r.Duplicate))
	c.rejected.Add(int64(r.Rejected))
	c.unconfirmed.Add(int64(r.Unconfirmed))
	if len(r.Rejections) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rej := range r.Rejections {
		if len(c.rejections) < c.opts.KeepRejections {
			c.rejections = append(c.rejections, rej)
		}
		kinds := rej.Kinds
		if len(kinds) == 0 {
			kinds = []string{"no reason given"}
		}
		for _, reason := range kinds {
			if _, ok := c.reasons[reason]; !ok && len(c.reasons) >= maxReasonKinds {
				reason = "other reasons"
			}
			c.reasons[reason]++
		}
	}
}

// parseRetryAfter reads a Retry-After header: seconds (fractions allowed) or an
// HTTP date. It returns 0 when the header is absent or unreadable, and at
// most limit.
func parseRetryAfter(v string, now time.Time, limit time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs != secs || secs <= 0 { // NaN or not positive
			return 0
		}
		if secs >= limit.Seconds() {
			return limit
		}
		d = time.Duration(secs * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, limit))
}

// answerExcerpt shortens an answer body for messages.
func answerExcerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	if s == "" {
		s = "(empty answer)"
	}
	return s
}

func clientSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// parseAnswer counts the statuses of an answer defensively: it looks for
// an array of objects carrying "status" anywhere in the answer (preferring
// one with an element per event, else the longest), and falls back to
// top-level counts named accepted, duplicate(s) and rejected. Events without
// a readable status are unconfirmed. Rejected events whose error codes say
// a retry may pass (rate_limited, in_flight) are not counted but returned
// in retry. ok says whether the answer held statuses or counts at all.
func parseAnswer(body []byte, events []ingest.Event) (r BatchResult, retry []ingest.Event, ok bool) {
	n := len(events)
	if r, retry, ok := parseIntakeAnswer(body, events); ok {
		return r, retry, true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return BatchResult{Unconfirmed: n}, nil, false
	}
	var best []any
	found := false
	walkStatusArrays(doc, func(a []any) {
		switch {
		case !found:
			best, found = a, true
		case len(best) != n && (len(a) == n || len(a) > len(best)):
			best = a
		}
	})
	if !found {
		obj, _ := doc.(map[string]any)
		r.Accepted = countField(obj, "accepted")
		r.Duplicate = countField(obj, "duplicate", "duplicates")
		r.Rejected = countField(obj, "rejected")
		if sum := r.Accepted + r.Duplicate + r.Rejected; sum > n || sum == 0 {
			return BatchResult{Unconfirmed: n}, nil, false
		}
		r.Unconfirmed = n - r.Accepted - r.Duplicate - r.Rejected
		return r, nil, true
	}
	counted := 0
	for i, el := range best {
		if counted == n {
			break
		}
		obj, isObj := el.(map[string]any)
		if !isObj {
			continue
		}
		status, _ := obj["status"].(string)
		counted++
		idx := i
		if num, isNum := obj["index"].(json.Number); isNum {
			if v, err := num.Int64(); err == nil && v >= 0 && v < int64(n) {
				idx = int(v)
			}
		}
		switch strings.ToLower(status) {
		case "accepted":
			r.Accepted++
		case "duplicate":
			r.Duplicate++
		case "rejected":
			reasons, kinds, codes := reasonsOf(obj)
			if idx < n && slices.ContainsFunc(codes, func(c string) bool { return c == ingest.CodeRateLimited || c == ingest.CodeInFlight }) {
				retry = append(retry, events[idx])
				continue
			}
			r.Rejected++
			rej := EventRejection{Reasons: reasons, Kinds: kinds}
			rej.EventID, _ = obj["eventId"].(string)
			if rej.EventID == "" && idx < n {
				rej.EventID = events[idx].EventID
			}
			r.Rejections = append(r.Rejections, rej)
		default:
			r.Unconfirmed++
		}
	}
	r.Unconfirmed += n - counted
	return r, retry, true
}

// parseIntakeAnswer is parseAnswer's fast path for the intake's own answer
// (ingest.Response): an "events" array with one result per event, in order. ok is
// false for any other shape.
func parseIntakeAnswer(body []byte, events []ingest.Event) (r BatchResult, retry []ingest.Event, ok bool) {
	// Its totals suffice when nothing was rejected (the usual case).
	if acc, dup, rej, ok := leadingTotals(body); ok && rej == 0 && acc >= 0 && dup >= 0 && acc+dup == len(events) {
		return BatchResult{Accepted: acc, Duplicate: dup}, nil, true
	}
	var resp struct {
		Events []struct {
			Index   int    `json:"index"`
			EventID string `json:"eventId"`
			Status  string `json:"status"`
			Errors  []struct {
				Field   string `json:"field"`
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"errors"`
		} `json:"events"`
	}
	if json.Unmarshal(body, &resp) != nil || len(resp.Events) != len(events) || len(events) == 0 {
		return r, nil, false
	}
	for i, e := range resp.Events {
		if e.Index != i || e.EventID != events[i].EventID {
			return BatchResult{}, nil, false
		}
		switch e.Status {
		case "accepted":
			r.Accepted++
		case "duplicate":
			r.Duplicate++
		case "rejected":
			rej := EventRejection{EventID: e.EventID}
			later := false
			for _, fe := range e.Errors {
				later = later || fe.Code == ingest.CodeRateLimited || fe.Code == ingest.CodeInFlight
				reason, kind := cmp.Or(fe.Message, fe.Code, "invalid"), cmp.Or(fe.Code, fe.Message, "invalid")
				if fe.Field != "" {
					reason, kind = fe.Field+": "+reason, fe.Field+": "+kind
				}
				rej.Reasons, rej.Kinds = append(rej.Reasons, reason), append(rej.Kinds, kind)
			}
			if later {
				retry = append(retry, events[i])
				continue
			}
			r.Rejected++
			r.Rejections = append(r.Rejections, rej)
		default:
			return BatchResult{}, nil, false // not ours to read: the general path decides
		}
	}
	return r, retry, true
}

// leadingTotals reads the totals that open the intake's answer
// ({"accepted":…,"duplicates":…,"rejected":…,"events":[…]}) without
// decoding, or even scanning, the per-event results that follow. ok is
// false when the answer does not start with those three numbers.
func leadingTotals(body []byte) (accepted, duplicates, rejected int, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, 0, 0, false
	}
	seen := 0
	for seen != 7 {
		k, err := dec.Token()
		key, isKey := k.(string)
		if err != nil || !isKey {
			return 0, 0, 0, false
		}
		v, err := dec.Token()
		num, isNum := v.(json.Number)
		if err != nil || !isNum {
			return 0, 0, 0, false
		}
		n, err := num.Int64()
		if err != nil {
			return 0, 0, 0, false
		}
		switch key {
		case "accepted":
			accepted, seen = int(n), seen|1
		case "duplicates":
			duplicates, seen = int(n), seen|2
		case "rejected":
			rejected, seen = int(n), seen|4
		default:
			return 0, 0, 0, false
		}
	}
	return accepted, duplicates, rejected, true
}

// hasStatuses tells whether an answer holds per-event statuses or counts.
func hasStatuses(body []byte) bool {
	_, _, ok := parseAnswer(body, nil)
	return ok
}

// walkStatusArrays calls fn for every array in v (depth first, object keys
// in sorted order) that holds at least one object with a string "status".
func walkStatusArrays(v any, fn func([]any)) {
	switch t := v.(type) {
	case []any:
		for _, el := range t {
			if obj, ok := el.(map[string]any); ok {
				if _, ok := obj["status"].(string); ok {
					fn(t)
					return
				}
			}
		}
		for _, el := range t {
			walkStatusArrays(el, fn)
		}
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			walkStatusArrays(t[k], fn)
		}
	}
}

// countField reads the first of names that is a non-negative integer.
func countField(obj map[string]any, names ...string) int {
	for _, name := range names {
		if num, ok := obj[name].(json.Number); ok {
			if v, err := num.Int64(); err == nil && v >= 0 {
				return int(v)
			}
		}
	}
	return 0
}

// reasonsOf reads a rejected event's reasons, their kinds and error
// codes: "errors" as objects with field, code and message (or as strings),
// else "error", "reason" or "message".
func reasonsOf(obj map[string]any) (reasons, kinds, codes []string) {
	add := func(reason, kind string) {
		reasons = append(reasons, reason)
		kinds = append(kinds, kind)
	}
	if errs, ok := obj["errors"].([]any); ok {
		for _, e := range errs {
			switch t := e.(type) {
			case string:
				add(t, t)
			case map[string]any:
				field, _ := t["field"].(string)
				msg, _ := t["message"].(string)
				code, _ := t["code"].(string)
				if code != "" {
					codes = append(codes, code)
				}
				if msg == "" {
					msg = cmp.Or(code, "invalid")
				}
				reason, kind := msg, cmp.Or(code, msg)
				if field != "" {
					reason, kind = field+": "+reason, field+": "+kind
				}
				add(reason, kind)
			}
		}
	}
	if len(reasons) == 0 {
		for _, k := range []string{"error", "reason", "message"} {
			if s, ok := obj[k].(string); ok && s != "" {
				add(s, s)
				break
			}
		}
	}
	return reasons, kinds, codes
}

// Stream batches events handed to Send and delivers them with
// ClientOptions.Senders concurrent requests. Close flushes and waits. The
// first batch that cannot be delivered (see Client.Send) fails the stream:
// Send and Close then return its error.
type Stream struct {
	c       *Client
	in      chan ingest.Event
	ctx     context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{}
	closing sync.Once
}

// Stream starts the batching and the senders; they stop when ctx ends or
// after Close.
func (c *Client) Stream(ctx context.Context) *Stream {
	sctx, cancel := context.WithCancelCause(ctx)
	s := &Stream{c: c, in: make(chan ingest.Event, c.opts.BatchSize), ctx: sctx, cancel: cancel, done: make(chan struct{})}
	batches := make(chan []ingest.Event, c.opts.Senders)
	var wg sync.WaitGroup
	for range c.opts.Senders {
		wg.Go(func() {
			for b := range batches {
				if s.ctx.Err() != nil {
					continue // failed: drain without sending
				}
				if _, err := c.post(s.ctx, b); err != nil && s.ctx.Err() == nil {
					c.opts.Logger.Error("intake: batch not delivered", "events", len(b), "err", err)
					s.cancel(err)
				}
			}
		})
	}
	go func() {
		s.batch(batches)
		close(batches)
		wg.Wait()
		close(s.done)
	}()
	return s
}

// batch forms batches from s.in until it is closed or the stream fails.
func (s *Stream) batch(out chan<- []ingest.Event) {
	size := s.c.opts.BatchSize
	batch := make([]ingest.Event, 0, size)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	flush := func() bool {
		linger.Stop()
		if len(batch) == 0 {
			return true
		}
		select {
		case out <- batch:
			batch = make([]ingest.Event, 0, size)
			return true
		case <-s.ctx.Done():
			return false
		}
	}
	for {
		select {
		case ev, ok := <-s.in:
			if !ok {
				flush()
				return
			}
			if len(batch) == 0 {
				linger.Reset(s.c.opts.Linger)
			}
			batch = append(batch, ev)
			if len(batch) == size && !flush() {
				return
			}
		case <-linger.C:
			if !flush() {
				return
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// Send queues one event. It blocks while the senders are busy (the queue
// holds one batch), and returns an error once the stream failed or ctx
// ended. Send must not be called after Close.
func (s *Stream) Send(ctx context.Context, ev ingest.Event) error {
	select {
	case s.in <- ev:
		s.c.queued.Add(1)
		return nil
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close sends what is queued, waits for the requests in flight and returns
// the error that failed the stream, if any.
func (s *Stream) Close() error {
	s.closing.Do(func() { close(s.in) })
	<-s.done
	err := context.Cause(s.ctx)
	s.cancel(nil)
	return err
}
