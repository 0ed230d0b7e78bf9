// GraphQL helpers: queries and mutations by fetch POST to /graphql on the same
// origin, subscriptions over graphql-ws (graphql-transport-ws protocol).
import { createClient, type Client } from 'graphql-ws';

export interface GraphQLErrorShape {
  message: string;
  extensions?: { code?: string; [k: string]: unknown };
}

/** An error answer of the API; message reads "CODE: message" when the server gave a code. */
export class APIError extends Error {
  constructor(
    readonly code: string | undefined,
    readonly detail: string,
  ) {
    super(code ? `${code}: ${detail}` : detail);
  }
  static from(errors: readonly GraphQLErrorShape[]): APIError {
    const e = errors[0];
    return new APIError(e?.extensions?.code, e?.message ?? 'unknown error');
  }
}

const KEY = 'surge.apiKey';

/** The API key every request sends (X-Api-Key, and connection_init), kept for the tab's session. */
export function apiKey(): string {
  return sessionStorage.getItem(KEY) ?? '';
}

/** Sets the key; the page reloads to reconnect with it. */
export function setAPIKey(key: string): void {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export async function gql<T>(query: string, variables: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<T> {
  let res: Response;
  const key = apiKey();
  try {
    res = await fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...(key ? { 'X-Api-Key': key } : {}), ...headers },
      body: JSON.stringify({ query, variables }),
    });
  } catch (err) {
    throw new APIError('NETWORK', `the server did not answer (${(err as Error).message})`);
  }
  let body: { data?: T; errors?: GraphQLErrorShape[] };
  try {
    body = await res.json();
  } catch {
    throw new APIError(`HTTP_${res.status}`, res.statusText || 'the answer was not JSON');
  }
  if (body.errors?.length) throw APIError.from(body.errors);
  if (!res.ok || body.data == null) throw new APIError(`HTTP_${res.status}`, res.statusText || 'no data');
  return body.data;
}

export type LinkState = 'connecting' | 'connected' | 'reconnecting' | 'polling';
type StateListener = (state: LinkState, detail?: string) => void;

const listeners = new Set<StateListener>();
let wsClient: Client | undefined;
let everConnected = false;

export function onLinkState(fn: StateListener): void {
  listeners.add(fn);
}
function emit(state: LinkState, detail?: string): void {
  for (const fn of listeners) fn(state, detail);
}

function client(): Client {
  if (!wsClient) {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
    wsClient = createClient({
      url,
      connectionParams: () => (apiKey() ? { 'X-Api-Key': apiKey() } : {}),
      lazy: false,
      retryAttempts: Infinity,
      shouldRetry: () => true,
      retryWait: async (retries) => new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** retries, 15000))),
      on: {
        connecting: () => emit(everConnected ? 'reconnecting' : 'connecting'),
        connected: () => {
          everConnected = true;
          emit('connected');
        },
        closed: () => emit('reconnecting'),
      },
    });
  }
  return wsClient;
}

export interface LiveOptions<T> {
  /** Called with each value the subscription sends. */
  next: (data: T) => void;
  /**
   * When the server refuses the subscription (an error answer rather than a lost
   * connection), poll this instead every intervalMs so that the view stays current.
   */
  poll?: { run: () => Promise<void>; intervalMs: number };
  onError?: (err: APIError) => void;
}

/**
 * Subscribes; returns the function that ends the subscription (and its polling).
 * With opts.poll the view stays current without the subscription: it polls when
 * the server refuses the subscription, and while the websocket is down (after a
 * few seconds' grace) until it is connected again.
 */
export function live<T>(query: string, variables: Record<string, unknown>, opts: LiveOptions<T>): () => void {
  let timer: ReturnType<typeof setInterval> | undefined;
  let grace: ReturnType<typeof setTimeout> | undefined;
  let refused = false;
  let stopped = false;
  const startPolling = () => {
    const p = opts.poll;
    if (!p || timer || stopped) return;
    const tick = () => p.run().catch((e: unknown) => opts.onError?.(e instanceof APIError ? e : new APIError(undefined, String(e))));
    tick();
    timer = setInterval(tick, p.intervalMs);
  };
  const stopPolling = () => {
    if (timer) clearInterval(timer);
    timer = undefined;
  };
  const onState: StateListener = (state) => {
    if (refused || !opts.poll) return;
    if (state === 'connected') {
      if (grace) clearTimeout(grace);
      grace = undefined;
      stopPolling();
    } else if (state !== 'polling' && !grace && !timer) {
      grace = setTimeout(() => {
        grace = undefined;
        startPolling();
      }, 5000);
    }
  };
  listeners.add(onState);
  const stop = client().subscribe<T>(
    { query, variables },
    {
      next: (msg) => {
        if (msg.errors?.length) return fail(APIError.from(msg.errors as GraphQLErrorShape[]));
        if (msg.data !== undefined && msg.data !== null) opts.next(msg.data);
      },
      error: (err) => {
        if (Array.isArray(err)) fail(APIError.from(err as GraphQLErrorShape[]));
        else fail(new APIError('SUBSCRIPTION', String((err as Error)?.message ?? err)));
      },
      complete: () => {},
    },
  );
  function fail(err: APIError): void {
    if (stopped) return;
    refused = true;
    opts.onError?.(err);
    if (opts.poll) {
      emit('polling', err.message);
      startPolling();
    }
  }
  return () => {
    stopped = true;
    listeners.delete(onState);
    if (grace) clearTimeout(grace);
    stop();
    stopPolling();
  };
}

/** Starts the websocket now, so the status indicator says something from the start. */
export function connect(): void {
  client();
}

// --- small DOM helpers shared by the views ---

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === 'class') el.className = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c != null) el.append(c);
  return el;
}

export function fmt(n: number | null | undefined, digits = 2): string {
  return n == null || Number.isNaN(n) ? '—' : n.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function pct(n: number | null | undefined, digits = 1): string {
  return n == null ? '—' : `${(n * 100).toFixed(digits)} %`;
}

export function time(t: string | null | undefined): string {
  return t ? new Date(t).toLocaleTimeString('en-GB') : '—';
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
