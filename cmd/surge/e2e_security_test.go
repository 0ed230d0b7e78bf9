package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestE2ESecurity, as an outside client and an operator would see it: a
// key made with `surge keys create` works at once and stops at once when
// revoked; events need the ingest role, supply updates the supply role; a
// supply update that drops supply to 0 is held until confirmed; and
// neither the raw user id nor any key reaches the logs or ClickHouse.
func TestE2ESecurity(t *testing.T) {
	s := newStack(t, stackOptions{consumers: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keys := func(args ...string) string {
		t.Helper()
		cmd := newRoot()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append([]string{"keys"}, append(args, "--log-format", "text", "--redis-addr", s.cfg.RedisAddr,
			"--clickhouse-addr", s.cfg.ClickHouseAddr, "--clickhouse-database", s.cfg.ClickHouseDatabase)...))
		if err := cmd.ExecuteContext(ctx); err != nil {
			t.Fatalf("surge keys %v: %v\n%s", args, err, errOut.String())
		}
		return strings.TrimSpace(out.String())
	}
	supplyKey := keys("create", "--client", "acme", "--roles", "supply", "--name", "acme backend")
	demandKey := keys("create", "--client", "shop", "--roles", "ingest")
	if !strings.HasPrefix(supplyKey, "sk_") || strings.Contains(supplyKey, "\n") {
		t.Fatalf("surge keys create printed %q", supplyKey)
	}

	const rawUser = "raw-user-4711@example.com"
	now := time.Now().UTC()
	ev := func(id, typ string, extra map[string]any) map[string]any {
		e := map[string]any{"eventId": id, "type": typ, "regionId": "berlin", "timestamp": now.Format(time.RFC3339Nano)}
		for k, v := range extra {
			e[k] = v
		}
		return e
	}
	send := func(key string, events ...map[string]any) (int, map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"events": events})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("X-Api-Key", key)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	codes := func(out map[string]any) []string {
		var cs []string
		evs, _ := out["events"].([]any)
		for _, e := range evs {
			m := e.(map[string]any)
			errs, _ := m["errors"].([]any)
			c := m["status"].(string)
			if len(errs) > 0 {
				c = errs[0].(map[string]any)["code"].(string)
			}
			cs = append(cs, c)
		}
		return cs
	}

	// The new keys work as soon as the replica has them (at once: pub/sub;
	// each creation announces a reload, so the second key can come a
	// reload after the first).
	waitCond(t, "the created keys accepted", func() bool {
		code, _ := send(supplyKey, ev("sec-s-1", "search", map[string]any{"userId": rawUser}))
		dcode, _ := send(demandKey, ev("sec-d-1", "search", nil))
		return code == http.StatusAccepted && dcode == http.StatusAccepted
	})
	// Anonymous events are refused (the ingest role is not open), a
	// supply update from a demand-only key is forbidden.
	if code, out := send("", ev("anon-sup", "supply_update", map[string]any{"availableSupply": 0})); code != http.StatusUnauthorized {
		t.Errorf("anonymous supply update: %d %v, want 401", code, out)
	}
	if code, out := send(demandKey, ev("d-sup", "supply_update", map[string]any{"availableSupply": 0}), ev("d-b", "booking", map[string]any{"price": 12.0, "userId": rawUser})); code != http.StatusAccepted ||
		fmt.Sprint(codes(out)) != "[forbidden accepted]" {
		t.Errorf("demand-only key: %d %v, want the supply update forbidden", code, codes(out))
	}
	// A fall from 40 to 0 in one report is held; a second report confirms it.
	if code, out := send(supplyKey, ev("sup-40", "supply_update", map[string]any{"availableSupply": 40})); code != http.StatusAccepted {
		t.Fatalf("supply 40: %d %v", code, out)
	}
	if code, out := send(supplyKey, ev("sup-0", "supply_update", map[string]any{"availableSupply": 0})); code != http.StatusBadRequest || fmt.Sprint(codes(out)) != "[implausible]" {
		t.Errorf("supply 40 → 0: %d %v, want held as implausible", code, codes(out))
	}
	if code, out := send(supplyKey, ev("sup-0-again", "supply_update", map[string]any{"availableSupply": 0})); code != http.StatusAccepted || fmt.Sprint(codes(out)) != "[accepted]" {
		t.Errorf("the confirming report: %d %v, want accepted", code, codes(out))
	}

	// A price for the raw user, and its audit record.
	var d struct{ Price quoteJSON }
	s.mustData(t, `query($u: String) { price(input: {regionId: "berlin", productType: "ride", userId: $u}) { `+quoteFields+` } }`,
		map[string]any{"u": rawUser}, &d)
	waitCond(t, "the events and the decision in ClickHouse", func() bool {
		var evs, decisions uint64
		return s.a.ch.QueryRow(ctx, "SELECT count() FROM events_raw WHERE event_id LIKE '%:sec-s-1' OR event_id LIKE '%:d-b'").Scan(&evs) == nil && evs == 2 &&
			s.a.ch.QueryRow(ctx, "SELECT count() FROM pricing_decisions WHERE quote_id = ?", d.Price.QuoteID).Scan(&decisions) == nil && decisions == 1
	})

	// Revoked: refused at once.
	id := strings.Split(demandKey, "_")[1]
	keys("revoke", id)
	waitCond(t, "the revoked key refused", func() bool {
		code, _ := send(demandKey, ev("after-revoke", "search", nil))
		return code == http.StatusUnauthorized
	})
	if out := keys("list"); !strings.Contains(out, id) || !strings.Contains(out, "acme backend") || strings.Contains(out, supplyKey) {
		t.Errorf("surge keys list:\n%s", out)
	}

	// Nothing secret or personal is stored or logged.
	secrets := []string{rawUser, supplyKey, demandKey, testIngestKey, testAdminKey}
	logs := s.logs.String()
	for _, v := range secrets {
		if strings.Contains(logs, v) {
			t.Errorf("the logs contain %q", v)
		}
	}
	rows, err := s.a.ch.Query(ctx, "SELECT table, name FROM system.columns WHERE database = ? AND type = 'String'", s.cfg.ClickHouseDatabase)
	if err != nil {
		t.Fatal(err)
	}
	columns := map[string][]string{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		columns[table] = append(columns[table], col)
	}
	rows.Close()
	if len(columns["events_raw"]) == 0 || len(columns["pricing_decisions"]) == 0 {
		t.Fatalf("string columns %v", columns)
	}
	for table, cols := range columns {
		for _, v := range secrets {
			var where []string
			for _, c := range cols {
				where = append(where, fmt.Sprintf("position(`%s`, '%s') > 0", c, v))
			}
			var n uint64
			if err := s.a.ch.QueryRow(ctx, "SELECT count() FROM `"+table+"` WHERE "+strings.Join(where, " OR ")).Scan(&n); err != nil {
				t.Fatalf("%s: %v", table, err)
			}
			if n > 0 {
				t.Errorf("%s holds %q in %d rows", table, v, n)
			}
		}
	}
}
