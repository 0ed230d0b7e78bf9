package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// recoverTraceID is the trace id the requests of the recovery tests carry
// (traceparent), so that the answer and the log can be checked for it.
const recoverTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

// serveRecovering serves one request through withTrace and recoverPanics,
// as New installs them, and returns the answer, the log lines and what
// panicked out of the middleware (nil when nothing did).
func serveRecovering(t *testing.T, h http.HandlerFunc) (rec *httptest.ResponseRecorder, logs []map[string]any, escaped any) {
	t.Helper()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(`{"query":"{ regions { id } }"}`))
	req.Header.Set("traceparent", "00-"+recoverTraceID+"-00f067aa0ba902b7-01")
	rec = httptest.NewRecorder()
	func() {
		defer func() { escaped = recover() }()
		withTrace(recoverPanics(logger, h)).ServeHTTP(rec, req)
	}()
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		logs = append(logs, m)
	}
	return rec, logs, escaped
}

func TestRecoverPanics(t *testing.T) {
	const secret = "password=hunter2" // in the panic values: must never reach the client
	tests := []struct {
		name    string
		handler http.HandlerFunc
		// status and body: the answer (body unchecked on 500: the error
		// JSON); logged: the panic value, in the log line; escaped: what
		// the middleware panics with.
		status  int
		body    string
		logged  string
		escaped any
	}{
		{
			name: "panic with a string",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "3") // set for an answer never written: must not survive
				w.Header().Set("Cache-Control", "public, max-age=3600")
				panic("boom: " + secret)
			},
			status: http.StatusInternalServerError, logged: "boom: " + secret,
		},
		{
			name: "panic with an error (nil map write)",
			handler: func(w http.ResponseWriter, r *http.Request) {
				var m map[string]string
				m[secret] = "x"
			},
			status: http.StatusInternalServerError, logged: "assignment to entry in nil map",
		},
		{
			name:    "http.ErrAbortHandler is passed on",
			handler: func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) },
			status:  http.StatusOK, body: "", escaped: http.ErrAbortHandler, // the recorder's default: nothing written
		},
		{
			name: "panic after the headers: logged, response aborted",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte(`{"data":{"regi`))
				panic("late: " + secret)
			},
			status: http.StatusOK, body: `{"data":{"regi`, logged: "late: " + secret, escaped: http.ErrAbortHandler,
		},
		{
			name: "panic after a flush: logged, response aborted",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.(http.Flusher).Flush()
				panic("after flush: " + secret)
			},
			status: http.StatusOK, body: "", logged: "after flush: " + secret, escaped: http.ErrAbortHandler,
		},
		{
			name: "no panic",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte("made"))
			},
			status: http.StatusCreated, body: "made",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, logs, escaped := serveRecovering(t, tt.handler)
			if escaped != tt.escaped {
				t.Fatalf("panicked out of the middleware with %v, want %v", escaped, tt.escaped)
			}
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d", rec.Code, tt.status)
			}
			if got := rec.Header().Get("X-Trace-Id"); got != recoverTraceID {
				t.Errorf("X-Trace-Id %q, want %q", got, recoverTraceID)
			}
			body := rec.Body.String()
			if strings.Contains(body, secret) || strings.Contains(body, "goroutine ") || strings.Contains(body, "runtime error") {
				t.Errorf("the panic reached the client: %q", body)
			}
			if tt.status == http.StatusInternalServerError {
				checkInternalAnswer(t, rec)
			} else if body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}

			if tt.logged == "" {
				if len(logs) > 0 {
					t.Errorf("logged %v, want nothing", logs)
				}
				return
			}
			if len(logs) != 1 {
				t.Fatalf("logged %d lines, want 1: %v", len(logs), logs)
			}
			l := logs[0]
			stack, _ := l["stack"].(string)
			if l["level"] != "ERROR" || l["trace_id"] != recoverTraceID || l["path"] != "/graphql" ||
				l["panic"] != tt.logged ||
				!strings.Contains(stack, "goroutine ") || !strings.Contains(stack, "recover_test.go") {
				t.Errorf("log %v: want an error with the panic, the trace id, the path and the stack", l)
			}
		})
	}
}

// checkInternalAnswer: 500 in GraphQL's error shape with the trace id, and
// only the headers of that answer.
func checkInternalAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var out struct {
		Data   any `json:"data"`
		Errors []struct {
			Message    string         `json:"message"`
			Extensions map[string]any `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if len(out.Errors) != 1 || out.Data != nil {
		t.Fatalf("body %s: want one error and no data", rec.Body)
	}
	e := out.Errors[0]
	if e.Message != "internal error (trace id "+recoverTraceID+")" || e.Extensions["code"] != codeInternal ||
		e.Extensions["traceId"] != recoverTraceID || len(e.Extensions) != 2 {
		t.Errorf("error %+v, want INTERNAL with the trace id", e)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if h := rec.Header(); h.Get("Cache-Control") != "" || h.Get("Content-Length") != "" {
		t.Errorf("headers of the handler survived: %v", h)
	}
}

// TestRecoverPanicsHijack: the middleware leaves hijacking (the websocket
// transport) working, and a panic after it only aborts.
func TestRecoverPanicsHijack(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	done := make(chan struct{}, 2) // a request's handler and the middleware are through
	signal := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() { done <- struct{}{} }()
			next.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(withTrace(signal(recoverPanics(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack through the middleware: %v", err)
			return
		}
		_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		_ = rw.Flush()
		_ = c.Close()
		if r.URL.Query().Has("panic") {
			panic("after hijack")
		}
	})))))
	defer srv.Close()
	for _, q := range []string{"", "?panic"} {
		resp, err := http.Get(srv.URL + "/" + q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		b, _ := io.ReadAll(bufio.NewReader(resp.Body))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "hi" {
			t.Errorf("%s: %d %q, want the hijacked answer", q, resp.StatusCode, b)
		}
		<-done
	}
	if n := strings.Count(buf.String(), "panic in HTTP handler"); n != 1 {
		t.Errorf("logged %d panics, want 1: %s", n, buf.String())
	}
}
