// Shared by the browser tests: the server under test, a headless Chromium and
// the events API.
import { chromium } from 'playwright-core';

export const SURGE_URL = (process.env.SURGE_URL || '').replace(/\/$/, '');
/** Where the pages are loaded from: the server itself, or a dev proxy (e2e/devproxy.mjs). */
export const WEB_URL = (process.env.SURGE_WEB_URL || SURGE_URL).replace(/\/$/, '');
export const ADMIN_KEY = process.env.SURGE_ADMIN_KEY || '';
export const INGEST_KEY = process.env.SURGE_INGEST_KEY || '';
export const skip = !SURGE_URL && 'SURGE_URL is not set (e.g. http://127.0.0.1:8000)';
/** Overall budget of one test; every wait inside polls until it. */
export const TIMEOUT = 180_000;
export const WAIT = 120_000;

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** A page that records console errors and uncaught exceptions. */
export async function open(browser, path = '/', viewport = { width: 1366, height: 768 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()} (${m.location().url})`));
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(WAIT);
  await page.goto(WEB_URL + path);
  return { page, problems };
}

export async function gql(query, variables = {}) {
  const res = await fetch(`${SURGE_URL}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  const body = await res.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

let seq = 0;
/** POSTs events (at most 1,000) to /v1/events; each gets a unique eventId and the current time. */
export async function postEvents(events) {
  const stamp = new Date().toISOString();
  const body = { events: events.map((e) => ({ eventId: `e2e-${process.pid}-${Date.now()}-${seq++}`, timestamp: stamp, ...e })) };
  const res = await fetch(`${SURGE_URL}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json', 'X-Api-Key': INGEST_KEY }, body: JSON.stringify(body) });
  if (res.status !== 202) throw new Error(`POST /v1/events: ${res.status} ${await res.text()}`);
  return res.json();
}
