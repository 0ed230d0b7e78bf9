package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/surgeworks/surge/auth"
)

// EventsPath is where Handler is meant to be mounted.
const EventsPath = "/v1/events"

// RetryEventsHeader counts, on a 429 or 503 that carries per-event results,
// the events rejected for now (rate_limited, in_flight) that must be sent
// again.
const RetryEventsHeader = "Surge-Retry-Events"

// Handler serves POST /v1/events with the body {"events": [...]}.
//
// Answers (errors as {"error": {"code", "message"}}):
//   - 202 with a Response when every event has its final outcome: accepted,
//     duplicate, or rejected as invalid (at least one accepted or
//     duplicate);
//   - 400 with a Response when every event was rejected as invalid;
//   - 429 or 503 with a Response and Retry-After when some events must be
//     sent again — rejected "rate_limited" (per-user limits: 429) or
//     "in_flight" (the same eventIds are being produced by another request
//     right now, or were by a replica that died: their claim expires
//     shortly; 503) — even when others were accepted. A client that
//     resends the whole request on 429 and 503 therefore loses nothing:
//     the events accepted the first time are reported duplicate. The
//     header Surge-Retry-Events counts the events to send again;
//   - 429 RATE_LIMITED with Retry-After when the API client's bucket cannot
//     take the request (nothing accepted);
//   - 503 UNAVAILABLE with Retry-After when Kafka did not acknowledge or
//     the dedup store is unreachable (nothing accepted; send the same
//     request again);
//   - 400 INVALID_JSON for a body that is not JSON, 400 INVALID_REQUEST
//     without a non-empty "events" array, 413 PAYLOAD_TOO_LARGE for a body
//     over MaxBodyBytes, 413 TOO_MANY_EVENTS above MaxEvents events,
//     405 for another method.
//
// The caller is the auth.Principal in the request's context: the server
// mounts the handler behind auth's middleware and the ingest role.
//
// Events are decoded one by one: an event with a value of the wrong JSON
// type is rejected with a field error while the others proceed.
func (in *Intake) Handler() http.Handler {
	return http.HandlerFunc(in.serveHTTP)
}

func (in *Intake) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		in.fail(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "use POST")
		return
	}
	client := ClientOf(auth.FromContext(r.Context()))
	tooLarge := fmt.Sprintf("request body over %d bytes", in.opts.MaxBodyBytes)
	if r.ContentLength > in.opts.MaxBodyBytes {
		in.fail(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", tooLarge)
		return
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(r.ContentLength, 0)+bytes.MinRead))
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, in.opts.MaxBodyBytes)); err != nil {
		if maxErr := (*http.MaxBytesError)(nil); errors.As(err, &maxErr) {
			in.fail(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", tooLarge)
		} else {
			in.fail(w, http.StatusBadRequest, "INVALID_REQUEST", "the body could not be read: "+err.Error())
		}
		return
	}
	// Most bodies are well typed: one pass decodes every event. Otherwise
	// each event is decoded on its own, for its field-level errors.
	var items []item
	if fast, ok := decodeWellTyped(buf.Bytes()); ok {
		items = make([]item, len(fast))
		for i := range fast {
			items[i].ev, items[i].errs = fast[i].decode()
		}
	} else {
		var body struct {
			Events []json.RawMessage `json:"events"`
		}
		err := json.Unmarshal(buf.Bytes(), &body)
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field == "events":
			in.fail(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf(`"events" must be an array of 1 to %d events`, in.opts.MaxEvents))
			return
		case errors.As(err, &typeErr):
			in.fail(w, http.StatusBadRequest, "INVALID_REQUEST", `the body must be a JSON object {"events": [...]}`)
			return
		case err != nil:
			in.fail(w, http.StatusBadRequest, "INVALID_JSON", "the body is not valid JSON: "+err.Error())
			return
		case body.Events == nil:
			in.fail(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf(`the body must hold "events": an array of 1 to %d events`, in.opts.MaxEvents))
			return
		}
		items = make([]item, len(body.Events))
		for i, raw := range body.Events {
			items[i].ev, items[i].errs = DecodeEventJSON(raw)
		}
	}
	switch {
	case len(items) == 0:
		in.fail(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf(`"events" is empty; send 1 to %d events`, in.opts.MaxEvents))
		return
	case len(items) > in.opts.MaxEvents:
		in.fail(w, http.StatusRequestEntityTooLarge, "TOO_MANY_EVENTS", fmt.Sprintf("%d events; at most %d per request", len(items), in.opts.MaxEvents))
		return
	}
	resp, err := in.ingest(r.Context(), client, items)
	var retry *RetryError
	switch {
	case errors.As(err, &retry) && errors.Is(err, ErrRateLimited):
		setRetryAfter(w, retry.RetryAfter)
		in.fail(w, http.StatusTooManyRequests, "RATE_LIMITED", fmt.Sprintf("%v; retry in %s", err, retry.RetryAfter.Round(time.Millisecond)))
		return
	case errors.As(err, &retry):
		setRetryAfter(w, retry.RetryAfter)
		in.opts.Logger.Warn("ingest: request refused", "client", client.String(), "events", len(items), "err", err)
		in.fail(w, http.StatusServiceUnavailable, "UNAVAILABLE", "events not accepted, send them again: "+err.Error())
		return
	case err != nil && r.Context().Err() != nil:
		in.fail(w, http.StatusServiceUnavailable, "UNAVAILABLE", "request canceled") // the client has gone
		return
	case err != nil:
		in.opts.Logger.Error("ingest: request failed", "client", client.String(), "events", len(items), "err", err)
		in.fail(w, http.StatusInternalServerError, "INTERNAL", err.Error())
		return
	}

	status := http.StatusAccepted
	if resp.Accepted+resp.Duplicates == 0 {
		status = http.StatusBadRequest
	}
	if resp.RetryAfter > 0 {
		status = http.StatusServiceUnavailable
		retry := 0
		for _, e := range resp.Events {
			if len(e.Errors) > 0 && (e.Errors[0].Code == CodeRateLimited || e.Errors[0].Code == CodeInFlight) {
				retry++
				if e.Errors[0].Code == CodeRateLimited {
					status = http.StatusTooManyRequests
				}
			}
		}
		setRetryAfter(w, resp.RetryAfter)
		w.Header().Set(RetryEventsHeader, strconv.Itoa(retry))
	}
	in.reply(w, status, resp)
}

// setRetryAfter sets Retry-After in whole seconds, at least 1.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
}

func (in *Intake) fail(w http.ResponseWriter, status int, code, msg string) {
	in.reply(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (in *Intake) reply(w http.ResponseWriter, status int, v any) {
	in.m.httpRequests.WithLabelValues(strconv.Itoa(status)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeWellTyped decodes a body whose events are all objects with fields
// of the right JSON types in one pass, as most bodies are; ok is false
// otherwise, and each event is then decoded on its own for its field-level
// errors.
func decodeWellTyped(body []byte) ([]*wireEvent, bool) {
	var b struct {
		Events []*wireEvent `json:"events"`
	}
	if json.Unmarshal(body, &b) != nil || b.Events == nil {
		return nil, false
	}
	for _, e := range b.Events {
		if e == nil {
			return nil, false // null: not an object
		}
	}
	return b.Events, true
}
