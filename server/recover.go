package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"

	"github.com/surgeworks/surge/resolvers"
)

// codeInternal is the extensions.code of the answer to a request whose
// handler panicked: the same as a resolver's panic.
const codeInternal = resolvers.CodeInternal

// recoverPanics turns a panic of any handler into an error answer instead
// of a dropped connection: it logs the panic at error level with its stack
// and the request's trace id (install it inside withTrace), and answers 500
// {"errors":[{"message":"internal error (trace id …)","extensions":{"code":
// "INTERNAL","traceId":"…"}}]}, which never holds the panic value itself.
// Headers the handler set are dropped, X-Trace-Id excepted.
//
// When the handler had already written (status, body or a flush) or
// hijacked the connection, the answer cannot change any more: the panic is
// logged all the same and the response aborted (panic with
// http.ErrAbortHandler, which net/http handles silently), so that the
// client sees a broken response rather than a truncated one that looks
// whole. A panic with http.ErrAbortHandler itself is passed on untouched.
func recoverPanics(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pw := &panicWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			id := resolvers.TraceID(r.Context())
			logger.ErrorContext(r.Context(), "panic in HTTP handler", "panic", fmt.Sprint(v), "trace_id", id,
				"method", r.Method, "path", r.URL.Path, "written", pw.written, "stack", string(debug.Stack()))
			if pw.written {
				panic(http.ErrAbortHandler)
			}
			writeInternal(w, id)
		}()
		next.ServeHTTP(pw, r)
	})
}

// writeInternal answers 500 in GraphQL's error shape, with the trace id.
func writeInternal(w http.ResponseWriter, traceID string) {
	h := w.Header()
	for k := range h {
		if k != "X-Trace-Id" {
			delete(h, k)
		}
	}
	msg := "internal error"
	ext := map[string]any{"code": codeInternal}
	if traceID != "" {
		msg = fmt.Sprintf("internal error (trace id %s)", traceID)
		ext["traceId"] = traceID
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusInternalServerError)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": msg, "extensions": ext}}})
}

// panicWriter notes whether anything reached the client. It hijacks and
// flushes through to the writer it wraps (the websocket transport
// hijacks), and unwraps for http.ResponseController.
type panicWriter struct {
	http.ResponseWriter
	written bool
}

func (w *panicWriter) WriteHeader(status int) {
	if status >= 200 || status == http.StatusSwitchingProtocols {
		w.written = true // informational answers (103) may come before the real one
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *panicWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(b)
}

func (w *panicWriter) Flush() {
	if http.NewResponseController(w.ResponseWriter).Flush() == nil {
		w.written = true
	}
}

func (w *panicWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.written = true
	}
	return c, rw, err
}

func (w *panicWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
