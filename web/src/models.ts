// Models: registered versions, the rollout in progress (live) and forecast accuracy.
import { errorText, fmt, gql, h, live, pct, time } from './api';

const MODELS = `query Models { models { version status serving schemaVersion trainingData createdAt metrics { name value } } }`;
const ACCURACY = `query Accuracy { forecastAccuracy(windowHours: 24) { region modelVersion points mape mapePoints wape bias alert threshold } }`;
const ROLLOUT_FIELDS = `candidate stable state phase phases percent shadow phaseEndsAt reason waiting`;
const ROLLOUT_SUB = `subscription Rollout { rolloutUpdated { ${ROLLOUT_FIELDS} } }`;
const ROLLOUT = `query Rollout { rollout { ${ROLLOUT_FIELDS} } }`;

interface Model { version: string; status: string; serving: string | null; schemaVersion: string | null; trainingData: string | null; createdAt: string; metrics: { name: string; value: number }[] }
interface Rollout { candidate: string; stable: string; state: string; phase: number; phases: number; percent: number; shadow: boolean; phaseEndsAt: string | null; reason: string | null; waiting: string | null }
interface Accuracy { region: string; modelVersion: string; points: number; mape: number | null; mapePoints: number; wape: number | null; bias: number | null; alert: boolean; threshold: number }

function table(headers: string[], rows: (string | Node)[][], empty: string): HTMLElement {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h(
    'table',
    { class: 'data' },
    h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, ...rows.map((r) => h('tr', {}, ...r.map((c) => h('td', {}, c))))),
  );
}

export function mountModels(root: HTMLElement): void {
  const rollout = h('div', { id: 'rollout', 'aria-live': 'polite' }, 'Loading the rollout…');
  const models = h('div', { id: 'models-list' }, 'Loading…');
  const accuracy = h('div', { id: 'accuracy' }, 'Loading…');
  root.replaceChildren(h('h3', {}, 'Rollout'), rollout, h('h3', {}, 'Versions'), models, h('h3', {}, 'Forecast accuracy, last 24 h'), accuracy);

  const load = async () => {
    try {
      const d = await gql<{ models: Model[] }>(MODELS);
      models.replaceChildren(
        table(
          ['Version', 'Status', 'Serving', 'Schema', 'Data', 'Created', 'Metrics'],
          [...d.models].reverse().map((m) => [
            m.version,
            m.status,
            m.serving ?? '—',
            m.schemaVersion ?? '—',
            m.trainingData ?? '—',
            new Date(m.createdAt).toLocaleString('en-GB'),
            h('span', { class: 'metrics' }, m.metrics.filter((x) => /wape|mape/i.test(x.name)).map((x) => `${x.name} ${fmt(x.value, 3)}`).join(', ') || '—'),
          ]),
          'No model registered.',
        ),
      );
    } catch (err) {
      models.textContent = errorText(err);
    }
    try {
      const d = await gql<{ forecastAccuracy: Accuracy[] }>(ACCURACY);
      accuracy.replaceChildren(
        table(
          ['Region', 'Model', 'Points', 'MAPE', 'WAPE', 'Bias', 'Alert'],
          d.forecastAccuracy.map((a) => [a.region, a.modelVersion, String(a.points), pct(a.mape), pct(a.wape), pct(a.bias), a.alert ? `above ${pct(a.threshold, 0)}` : 'ok']),
          'No scored forecasts yet (a forecast is scored once its horizon has passed).',
        ),
      );
    } catch (err) {
      accuracy.textContent = errorText(err);
    }
  };
  void load();
  setInterval(load, 60_000);

  const showRollout = (r: Rollout | null) => {
    if (!r) {
      rollout.replaceChildren(h('p', { class: 'muted' }, 'No rollout since the service started.'));
      return;
    }
    rollout.replaceChildren(
      h('p', {}, h('strong', {}, `${r.candidate}`), ` against stable ${r.stable}: ${r.state}${r.shadow ? ' (shadow)' : ''}, phase ${r.phase} of ${r.phases}, ${r.percent} % of regions`),
      h('progress', { max: 100, value: r.percent, 'aria-label': 'Share of regions on the candidate' }),
      h('p', { class: 'muted' }, r.phaseEndsAt ? `Phase ends at ${time(r.phaseEndsAt)}. ` : '', r.waiting ? `Waiting: ${r.waiting}. ` : '', r.reason ? `Reason: ${r.reason}` : ''),
    );
  };
  live<{ rolloutUpdated: Rollout | null }>(ROLLOUT_SUB, {}, {
    next: (d) => showRollout(d.rolloutUpdated),
    poll: { intervalMs: 10_000, run: async () => showRollout((await gql<{ rollout: Rollout | null }>(ROLLOUT)).rollout) },
  });
}
