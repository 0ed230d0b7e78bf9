// Region detail: realised demand (searches per minute, last 2 hours) against the
// live forecast and its interval, drawn with uPlot.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { errorText, fmt, gql, h, live, time } from './api';

const HORIZON = 15;
const HISTORY = `query History($id: ID!, $from: Time!, $to: Time!) {
  demandHistory(regionId: $id, from: $from, to: $to, granularity: MINUTE) { bucket searches bookings cancels supply } }`;
const FORECAST_SUB = `subscription Forecast($id: ID!) {
  forecastUpdated(regionId: $id, horizonMinutes: ${HORIZON}, intervalSeconds: 5) { demand lower upper generatedAt source modelVersion } }`;
const FORECAST = `query Forecast($id: ID!) { forecast(regionId: $id, horizonMinutes: ${HORIZON}) { demand lower upper generatedAt source modelVersion } }`;

interface Point { bucket: string; searches: number; bookings: number; cancels: number; supply: number | null }
interface Forecast { demand: number; lower: number; upper: number; generatedAt: string; source: string; modelVersion: string | null }

export function mountRegion(root: HTMLElement): { show: (regionId: string, name: string) => void } {
  const title = h('h3', { id: 'region-title' }, 'Region');
  const summary = h('p', { id: 'forecast-summary', 'aria-live': 'polite' }, 'Waiting for the forecast…');
  const chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': 'Demand per minute against the forecast' });
  const error = h('p', { class: 'muted' });
  root.replaceChildren(title, summary, chartBox, error);

  let history: Point[] = [];
  let forecasts: Forecast[] = [];
  let stop: (() => void) | undefined;
  let historyTimer: ReturnType<typeof setInterval> | undefined;
  let generation = 0;

  const plot = new uPlot(
    {
      width: Math.max(chartBox.clientWidth, 320),
      height: 240,
      scales: { x: { time: true } },
      series: [
        {},
        { label: 'searches / min', stroke: '#1f5fa8', width: 2, spanGaps: false },
        { label: `forecast / min (next ${HORIZON} min)`, stroke: '#b3261e', width: 2, spanGaps: true, points: { show: true, size: 7 } },
        { label: 'lower', stroke: 'rgba(179,38,30,0.4)', dash: [4, 4], spanGaps: true },
        { label: 'upper', stroke: 'rgba(179,38,30,0.4)', dash: [4, 4], spanGaps: true },
      ],
      bands: [{ series: [4, 3], fill: 'rgba(179,38,30,0.12)' }],
      axes: [{}, { label: 'per minute', size: 60 }],
    },
    [[], [], [], [], []],
    chartBox,
  );
  new ResizeObserver(() => plot.setSize({ width: Math.max(chartBox.clientWidth, 320), height: 240 })).observe(chartBox);

  function redraw(): void {
    const rows = new Map<number, (number | null)[]>();
    const row = (t: number) => rows.get(t) ?? (rows.set(t, [t, null, null, null, null]), rows.get(t)!);
    for (const p of history) row(Date.parse(p.bucket) / 1000)[1] = p.searches;
    for (const f of forecasts) {
      const r = row(Date.parse(f.generatedAt) / 1000);
      r[2] = f.demand / HORIZON;
      r[3] = f.lower / HORIZON;
      r[4] = f.upper / HORIZON;
    }
    const sorted = [...rows.values()].sort((a, b) => a[0]! - b[0]!);
    plot.setData([0, 1, 2, 3, 4].map((i) => sorted.map((r) => r[i])) as uPlot.AlignedData);
  }

  function addForecast(f: Forecast): void {
    forecasts.push(f);
    if (forecasts.length > 720) forecasts.shift();
    summary.textContent = `Forecast for the next ${HORIZON} min: ${fmt(f.demand, 0)} searches (80 % interval ${fmt(f.lower, 0)}–${fmt(f.upper, 0)}), ${f.source}${f.modelVersion ? ` model ${f.modelVersion}` : ''}, at ${time(f.generatedAt)}.`;
    chartBox.setAttribute('aria-label', summary.textContent);
    redraw();
  }

  async function loadHistory(id: string, gen: number): Promise<void> {
    const to = new Date();
    const from = new Date(to.getTime() - 2 * 3600 * 1000);
    try {
      const d = await gql<{ demandHistory: Point[] }>(HISTORY, { id, from: from.toISOString(), to: to.toISOString() });
      if (gen !== generation) return;
      history = d.demandHistory;
      redraw();
    } catch (err) {
      error.textContent = `Demand history: ${errorText(err)}`;
    }
  }

  return {
    show(id, name) {
      const gen = ++generation;
      stop?.();
      if (historyTimer) clearInterval(historyTimer);
      history = [];
      forecasts = [];
      error.textContent = '';
      title.textContent = `${name}: demand against forecast`;
      summary.textContent = 'Waiting for the forecast…';
      redraw();
      void loadHistory(id, gen);
      historyTimer = setInterval(() => void loadHistory(id, gen), 60_000);
      stop = live<{ forecastUpdated: Forecast }>(FORECAST_SUB, { id }, {
        next: (d) => gen === generation && addForecast(d.forecastUpdated),
        onError: (err) => (error.textContent = `Live forecast: ${errorText(err)}`),
        poll: {
          intervalMs: 5000,
          run: async () => {
            const d = await gql<{ forecast: Forecast }>(FORECAST, { id });
            if (gen === generation) addForecast(d.forecast);
          },
        },
      });
    },
  };
}
