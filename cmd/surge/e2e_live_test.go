package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestE2ELive runs the protocol tests of web/protocol (graphql-js and the
// npm graphql-ws client under node) against a stack with its consumers and
// a second replica on the same Redis, ClickHouse and broker.
func TestE2ELive(t *testing.T) {
	s := newStack(t, stackOptions{consumers: true, maxPerConnection: 4})
	r := s.replica(t)
	runNode(t, map[string]string{
		"SURGE_URL": s.base, "SURGE_URL_2": r.base, "SURGE_ADMIN_KEY": testAdminKey, "SURGE_INGEST_KEY": testIngestKey,
		"SURGE_MAX_PER_CONNECTION": strconv.Itoa(s.cfg.LiveMaxPerConn),
	}, "protocol/live.test.mjs")
}

// replica starts another serving process of the stack (API only, no
// consumers) on its own port and audit spool; the stack's helpers (gql,
// price, ...) work on it.
func (s *stack) replica(t *testing.T) *stack {
	t.Helper()
	cfg := s.cfg
	cfg.Consumers = false
	cfg.AuditSpoolDir = t.TempDir()
	logger := s.logger.With("replica", 2)
	a, err := newApp(context.Background(), cfg, logger)
	if err != nil {
		t.Fatalf("replica: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica run: %v", err)
		}
	})
	return &stack{cfg: cfg, redis: s.redis, kafka: s.kafka, a: a, base: "http://" + a.server.Addr(), client: s.client, logs: s.logs, logger: logger}
}

// runNode runs node's test runner on files under web/ with env added; the
// npm packages come from web/node_modules (`make deps` installs them).
func runNode(t *testing.T, env map[string]string, files ...string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "graphql-ws")); err != nil {
		t.Fatalf("web/node_modules is not installed (run `make deps`): %v", err)
	}
	cmd := exec.Command("node", append([]string{"--test", "--test-reporter=spec", "--test-concurrency=1"}, files...)...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	t.Logf("node --test %v:\n%s", files, out)
	if err != nil {
		t.Fatalf("node tests failed: %v", err)
	}
}

// TestE2EBrowser runs the web tests: the playground's example operations
// and the dashboard's queries against the schema, dist/ up to date with
// src/ (web/test), and the dashboard and playground in headless Chromium
// driven by playwright-core (web/e2e), against a stack with its consumers.
func TestE2EBrowser(t *testing.T) {
	s := newStack(t, stackOptions{consumers: true})
	runNode(t, map[string]string{"SURGE_URL": s.base, "SURGE_ADMIN_KEY": testAdminKey, "SURGE_INGEST_KEY": testIngestKey}, "test/", "e2e/")
}

// TestE2EBrowserWithKeys: the dashboard against a server that opens no
// role, as surge serve runs: refused without a key, live with one
// (web/e2e/keyed-dashboard.mjs).
func TestE2EBrowserWithKeys(t *testing.T) {
	s := newStack(t, stackOptions{consumers: true, config: func(c *config) { c.OpenRoles = "" }})
	runNode(t, map[string]string{"SURGE_URL": s.base, "SURGE_API_KEY": testAdminKey}, "e2e/keyed-dashboard.mjs")
}
