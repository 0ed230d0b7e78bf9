// Experiments: the list, and for the chosen one its verdict and a lift chart
// (relative lift of each treatment against the control with its 95 % interval).
import { errorText, fmt, gql, h, pct } from './api';

const LIST = `query Experiments { experiments { id hypothesis status primaryMetric startedAt variants { name weight control } } }`;
const RESULTS = `query Results($id: ID!) { experimentResults(experimentId: $id) {
  verdict verdictReason winner daysElapsed minDays computedAt sampleRatio { pValue mismatch }
  variants { name users convertedUsers conversions control }
  metrics { metric guardrail comparisons { variant relativeLift relativeInterval { lower upper } adjustedPValue significant better } } } }`;

interface Experiment { id: string; hypothesis: string; status: string; primaryMetric: string; startedAt: string | null; variants: { name: string; weight: number; control: boolean }[] }
interface Comparison { variant: string; relativeLift: number; relativeInterval: { lower: number; upper: number }; adjustedPValue: number; significant: boolean; better: boolean }
interface Results {
  verdict: string;
  verdictReason: string;
  winner: string | null;
  daysElapsed: number;
  minDays: number;
  computedAt: string;
  sampleRatio: { pValue: number; mismatch: boolean };
  variants: { name: string; users: number; convertedUsers: number; conversions: number; control: boolean }[];
  metrics: { metric: string; guardrail: boolean; comparisons: Comparison[] }[];
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Horizontal interval chart: one row per treatment, the control at 0 %. */
export function liftChart(metric: string, control: string, comps: Comparison[]): SVGElement {
  const W = 520, rowH = 34, left = 110, right = 20, top = 24;
  const H = top + rowH * comps.length + 26;
  const ext = Math.max(0.05, ...comps.flatMap((c) => [Math.abs(c.relativeInterval.lower), Math.abs(c.relativeInterval.upper)])) * 1.1;
  const x = (v: number) => left + ((v + ext) / (2 * ext)) * (W - left - right);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img', class: 'lift', 'aria-label': `${metric}: relative lift against ${control}` });
  root.append(svg('title', {}, `${metric}: relative lift of each variant against ${control}, with 95 % intervals`));
  root.append(svg('line', { x1: x(0), x2: x(0), y1: top - 8, y2: H - 22, stroke: '#555', 'stroke-dasharray': '3 3' }));
  root.append(svg('text', { x: x(0), y: top - 12, 'text-anchor': 'middle', class: 'axis' }, `${control} (0 %)`));
  for (const v of [-ext, -ext / 2, ext / 2, ext]) root.append(svg('text', { x: x(v), y: H - 6, 'text-anchor': 'middle', class: 'axis' }, pct(v, 0)));
  comps.forEach((c, i) => {
    const y = top + i * rowH + rowH / 2;
    const colour = c.significant ? (c.better ? '#1b7a3a' : '#b3261e') : '#44546a';
    root.append(svg('text', { x: left - 8, y: y + 4, 'text-anchor': 'end' }, c.variant));
    root.append(svg('line', { x1: x(c.relativeInterval.lower), x2: x(c.relativeInterval.upper), y1: y, y2: y, stroke: colour, 'stroke-width': 3 }));
    for (const e of [c.relativeInterval.lower, c.relativeInterval.upper]) root.append(svg('line', { x1: x(e), x2: x(e), y1: y - 6, y2: y + 6, stroke: colour, 'stroke-width': 2 }));
    root.append(svg('circle', { cx: x(c.relativeLift), cy: y, r: 5, fill: colour }));
    root.append(svg('text', { x: x(c.relativeLift), y: y - 9, 'text-anchor': 'middle', class: 'axis' }, `${c.relativeLift >= 0 ? '+' : ''}${pct(c.relativeLift)}`));
  });
  return root;
}

export function mountExperiments(root: HTMLElement): void {
  const list = h('div', { id: 'experiments-list' }, 'Loading…');
  const detail = h('div', { id: 'experiment-detail', 'aria-live': 'polite' });
  root.replaceChildren(list, detail);

  async function open(id: string): Promise<void> {
    detail.replaceChildren(h('p', { class: 'muted' }, `Loading the results of ${id}…`));
    try {
      const r = (await gql<{ experimentResults: Results }>(RESULTS, { id })).experimentResults;
      const control = r.variants.find((v) => v.control)?.name ?? 'control';
      detail.replaceChildren(
        h('h3', {}, `Results of ${id}`),
        h('p', { class: `verdict verdict-${r.verdict.toLowerCase()}`, id: 'verdict' }, h('strong', {}, r.verdict), `: ${r.verdictReason}`),
        h('p', { class: 'muted' }, `Day ${fmt(r.daysElapsed, 1)} of at least ${fmt(r.minDays, 1)}; sample ratio p = ${fmt(r.sampleRatio.pValue, 3)}${r.sampleRatio.mismatch ? ' (MISMATCH)' : ''}; computed ${new Date(r.computedAt).toLocaleString('en-GB')}.`),
        h('p', {}, r.variants.map((v) => `${v.name}: ${v.users.toLocaleString('en')} users, ${v.convertedUsers.toLocaleString('en')} converted`).join(' · ')),
        ...r.metrics.map((m) =>
          h(
            'figure',
            { class: 'lift-figure' },
            m.comparisons.length ? liftChart(m.metric, control, m.comparisons) : h('p', { class: 'muted' }, 'No comparison yet.'),
            h('figcaption', {}, `${m.metric}${m.guardrail ? ' (guardrail)' : ' (primary)'}: ` + m.comparisons.map((c) => `${c.variant} ${pct(c.relativeLift)} [${pct(c.relativeInterval.lower)}, ${pct(c.relativeInterval.upper)}], adjusted p ${fmt(c.adjustedPValue, 4)}${c.significant ? ', significant' : ''}`).join('; ')),
          ),
        ),
      );
    } catch (err) {
      detail.replaceChildren(h('p', { class: 'muted' }, `No results for ${id}: ${errorText(err)}`));
    }
  }

  void (async () => {
    try {
      const xs = (await gql<{ experiments: Experiment[] }>(LIST)).experiments;
      if (!xs.length) {
        list.replaceChildren(h('p', { class: 'muted', id: 'no-experiments' }, 'No experiments yet.'));
        return;
      }
      list.replaceChildren(
        h(
          'ul',
          { class: 'experiments' },
          ...xs.map((x) =>
            h(
              'li',
              {},
              h('button', { type: 'button', 'data-experiment': x.id, class: 'link' }, x.id),
              ` ${x.status} · ${x.primaryMetric} · ${x.variants.map((v) => `${v.name} ${v.weight} %`).join(' / ')} — ${x.hypothesis}`,
            ),
          ),
        ),
      );
      list.querySelectorAll<HTMLButtonElement>('button[data-experiment]').forEach((b) => b.addEventListener('click', () => open(b.dataset.experiment!)));
      const first = xs.find((x) => x.status !== 'DRAFT');
      if (first) void open(first.id);
    } catch (err) {
      list.textContent = `Experiments: ${errorText(err)}`;
    }
  })();
}
