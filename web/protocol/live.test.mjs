// Protocol tests of the live API as an outside client sees it: graphql-js
// introspection over HTTP, graphql-ws (graphql-transport-ws) subscriptions on
// two replicas, the legacy subscriptions-transport-ws "graphql-ws"
// subprotocol, and the refusals (4400, 4403, limits, unknown regions).
//
// Run by TestE2ELive (cmd/surge) against a whole stack:
//   SURGE_URL, SURGE_URL_2 (a second replica), SURGE_ADMIN_KEY, SURGE_INGEST_KEY,
//   SURGE_MAX_PER_CONNECTION (the stack's limit).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildClientSchema, getIntrospectionQuery } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const base = process.env.SURGE_URL ?? 'http://127.0.0.1:8000';
const base2 = process.env.SURGE_URL_2 ?? base;
const adminKey = process.env.SURGE_ADMIN_KEY ?? '';
const ingestKey = process.env.SURGE_INGEST_KEY ?? '';
const maxPerConnection = Number(process.env.SURGE_MAX_PER_CONNECTION ?? 50);
const wsURL = (b) => b.replace(/^http/, 'ws') + '/graphql';

const SURGE = `subscription($r: [ID!], $p: [String!]) {
  surgeUpdated(regionIds: $r, productTypes: $p) { regionId productType surgeMultiplier previous demand supply at reason snapshot } }`;

function client(b, params = {}) {
  return createClient({ url: wsURL(b), webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, connectionParams: params });
}

// stream yields a subscription's results; errors (an `error` message, or a
// `next` carrying errors) end it with the errors attached.
function stream(c, query, variables) {
  const queue = [];
  let wake = null;
  let done = null;
  const push = (x) => { queue.push(x); if (wake) { wake(); wake = null; } };
  const dispose = c.subscribe({ query, variables }, {
    next: (r) => push({ r }),
    error: (e) => push({ e }),
    complete: () => push({ complete: true }),
  });
  return {
    dispose,
    // next returns the next item: {r} a result, {e} an error, {complete}.
    async next() {
      while (queue.length === 0) await new Promise((res) => { wake = res; });
      return queue.shift();
    },
  };
}

// failed returns the GraphQL errors a subscription ended with, whichever
// way the server sent them.
async function failed(s) {
  const x = await s.next();
  if (x.e) return Array.isArray(x.e) ? x.e : [x.e];
  if (x.r?.errors) return x.r.errors;
  assert.fail(`expected errors, got ${JSON.stringify(x)}`);
}

async function postEvents(events) {
  const res = await fetch(base + '/v1/events', {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': ingestKey },
    body: JSON.stringify({ events }),
  });
  assert.equal(res.status, 202, await res.text());
}

// closeCode opens a raw websocket, sends msgs after it opens and resolves
// with the close code the server ends it with.
function closeCode(protocol, msgs) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsURL(base), protocol);
    ws.on('open', () => msgs.forEach((m) => ws.send(typeof m === 'string' ? m : JSON.stringify(m))));
    ws.on('close', (code) => resolve(code));
    ws.on('error', reject);
  });
}

test('graphql-js introspection builds the schema, subscriptions included', async () => {
  const res = await fetch(base + '/graphql', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: getIntrospectionQuery({ descriptions: true, inputValueDeprecation: true }) }),
  });
  const body = await res.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  const schema = buildClientSchema(body.data);
  const sub = schema.getSubscriptionType().getFields();
  assert.deepEqual(Object.keys(sub).sort(), ['forecastUpdated', 'rolloutUpdated', 'surgeUpdated']);
  assert.ok(schema.getQueryType().getFields().price);
});

test('a surge change reaches the subscribers of both replicas', async () => {
  const c1 = client(base);
  const c2 = client(base2);
  try {
    const vars = { r: ['berlin'], p: ['ride'] };
    const s1 = stream(c1, SURGE, vars);
    const s2 = stream(c2, SURGE, vars);
    const snaps = [];
    for (const s of [s1, s2]) {
      const { r } = await s.next();
      const u = r.data.surgeUpdated;
      assert.equal(u.snapshot, true);
      assert.equal(u.previous, null);
      assert.equal(u.regionId, 'berlin');
      assert.equal(u.productType, 'ride');
      assert.ok(u.surgeMultiplier > 0 && u.reason.length > 0 && u.at, JSON.stringify(u));
      snaps.push(u.surgeMultiplier);
    }
    // Supply in berlin drops to almost nothing: the multiplier climbs (the
    // watched pair is repriced every second, within the smoothing's step).
    const now = new Date().toISOString();
    await postEvents(Array.from({ length: 20 }, (_, i) => ({
      eventId: `supply-drop-${Date.now()}-${i}`, type: 'supply_update', regionId: 'berlin', timestamp: now, availableSupply: 1,
    })));
    for (const [i, s] of [s1, s2].entries()) {
      const x = await s.next();
      assert.ok(x.r, JSON.stringify(x));
      const u = x.r.data.surgeUpdated;
      assert.equal(u.snapshot, false, JSON.stringify(u));
      assert.equal(u.previous, snaps[i]);
      assert.notEqual(u.surgeMultiplier, u.previous);
      assert.ok(u.demand > 0 && u.supply !== null && u.reason.includes(':'), JSON.stringify(u));
    }
  } finally {
    await Promise.all([c1.dispose(), c2.dispose()]);
  }
});

test('an unknown region fails that subscription; the connection stays open', async () => {
  const c = client(base);
  try {
    const errs = await failed(stream(c, SURGE, { r: ['atlantis'] }));
    assert.equal(errs[0].extensions.code, 'NOT_FOUND', JSON.stringify(errs));
    assert.match(errs[0].message, /atlantis/);
    const bad = await failed(stream(c, `subscription { surgeUpdated(minChange: -1) { regionId } }`));
    assert.equal(bad[0].extensions.code, 'BAD_USER_INPUT');
    assert.equal(bad[0].extensions.field, 'minChange');
    const { r } = await stream(c, SURGE, { r: ['paris'], p: ['xl'] }).next();
    assert.equal(r.data.surgeUpdated.regionId, 'paris');
  } finally {
    await c.dispose();
  }
});

test('forecast and rollout subscriptions send their first value', async () => {
  const c = client(base);
  try {
    const f = await stream(c, `subscription { forecastUpdated(regionId: "nyc", horizonMinutes: 60) { regionId demand lower upper horizonMinutes source } }`).next();
    assert.equal(f.r.data.forecastUpdated.regionId, 'nyc');
    assert.equal(f.r.data.forecastUpdated.horizonMinutes, 60);
    assert.ok(f.r.data.forecastUpdated.upper >= f.r.data.forecastUpdated.lower);
    const bad = await failed(stream(c, `subscription { forecastUpdated(regionId: "nyc", intervalSeconds: 0) { demand } }`));
    assert.equal(bad[0].extensions.field, 'intervalSeconds');
    const ro = await stream(c, `subscription { rolloutUpdated { state candidate } }`).next();
    assert.deepEqual(ro.r.data, { rolloutUpdated: null }); // no rollout on a fresh stack
  } finally {
    await c.dispose();
  }
});

test('more subscriptions than a connection may hold are refused, naming the limit', async () => {
  const c = client(base);
  try {
    const open = [];
    for (let i = 0; i < maxPerConnection; i++) {
      const s = stream(c, SURGE, { r: ['sf'], p: ['ride'] });
      assert.ok((await s.next()).r);
      open.push(s);
    }
    const errs = await failed(stream(c, SURGE, { r: ['sf'] }));
    assert.equal(errs[0].extensions.code, 'TOO_MANY_SUBSCRIPTIONS');
    assert.match(errs[0].message, new RegExp(`at most ${maxPerConnection} per connection`));
    open[0].dispose(); // one ends: there is room again (released when the server sees it)
    let again;
    for (;;) {
      again = await stream(c, SURGE, { r: ['sf'], p: ['ride'] }).next();
      if (again.r?.data) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(again.r.data.surgeUpdated.regionId, 'sf');
  } finally {
    await c.dispose();
  }
});

test('malformed protocol messages close the connection with 4400', async () => {
  assert.equal(await closeCode('graphql-transport-ws', [{ type: 'connection_init' }, { type: 'bogus' }]), 4400);
  assert.equal(await closeCode('graphql-transport-ws', ['{not json']), 4400);
});

test('connection_init with a wrong key is closed with 4403; the right key is accepted', async () => {
  assert.equal(await closeCode('graphql-transport-ws', [{ type: 'connection_init', payload: { 'X-Admin-Key': 'wrong' } }]), 4403);
  assert.equal(await closeCode('graphql-transport-ws', [{ type: 'connection_init', payload: { headers: { Authorization: 'Bearer wrong' } } }]), 4403);
  const c = client(base, { 'X-Admin-Key': adminKey });
  try {
    const { r } = await stream(c, SURGE, { r: ['london'], p: ['ride'] }).next();
    assert.equal(r.data.surgeUpdated.regionId, 'london');
  } finally {
    await c.dispose();
  }
});

test('graphql-transport-ws clients are pinged', async () => {
  let pinged;
  const got = new Promise((res) => { pinged = res; });
  const c = createClient({ url: wsURL(base), webSocketImpl: WebSocket, retryAttempts: 0, lazy: false, on: { ping: (received) => received && pinged() } });
  try {
    await got; // the server's ping; graphql-ws answers with a pong
  } finally {
    await c.dispose();
  }
});

test('the legacy subscriptions-transport-ws "graphql-ws" subprotocol works', async () => {
  const ws = new WebSocket(wsURL(base), 'graphql-ws');
  const msgs = [];
  let wake = null;
  ws.on('message', (m) => { msgs.push(JSON.parse(m)); if (wake) { wake(); wake = null; } });
  const nextMsg = async (type) => {
    for (;;) {
      const i = msgs.findIndex((m) => m.type === type);
      if (i >= 0) return msgs.splice(i, 1)[0];
      await new Promise((res) => { wake = res; });
    }
  };
  await new Promise((res, rej) => { ws.on('open', res); ws.on('error', rej); });
  try {
    ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
    await nextMsg('connection_ack');
    await nextMsg('ka'); // keep-alive
    ws.send(JSON.stringify({ id: '1', type: 'start', payload: { query: SURGE, variables: { r: ['nyc'], p: ['xl'] } } }));
    const data = await nextMsg('data');
    assert.equal(data.id, '1');
    assert.equal(data.payload.data.surgeUpdated.regionId, 'nyc');
    assert.equal(data.payload.data.surgeUpdated.snapshot, true);
    ws.send(JSON.stringify({ id: '1', type: 'stop' }));
    assert.equal((await nextMsg('complete')).id, '1');
  } finally {
    ws.close();
  }
});
