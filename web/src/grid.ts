// The live grid: one cell per region × product, coloured by surge multiplier,
// fed by the surgeUpdated subscription.
import { errorText, fmt, gql, h, live, time } from './api';

export interface Region {
  id: string;
  name: string;
  currency: string;
  products: string[];
}

interface SurgeUpdate {
  regionId: string;
  productType: string;
  surgeMultiplier: number;
  previous: number | null;
  demand: number | null;
  supply: number | null;
  at: string;
  reason: string;
  snapshot: boolean;
}

const SURGE = `subscription Surge { surgeUpdated { regionId productType surgeMultiplier previous demand supply at reason snapshot } }`;
// What the grid polls when the server refuses the subscription.
const CURRENT = `query CurrentPrices { regions { id currentPrices { productType surgeMultiplier demandForecast supply createdAt factors { name contribution description } } } }`;

interface CurrentPrices {
  regions: {
    id: string;
    currentPrices: {
      productType: string;
      surgeMultiplier: number;
      demandForecast: number;
      supply: number | null;
      createdAt: string;
      factors: { name: string; contribution: number; description: string }[];
    }[];
  }[];
}

/** Background colour of a multiplier: 1.0 neutral grey → 2.0 amber → 3.0 red; below 1 a pale blue. */
export function surgeColour(m: number): { bg: string; fg: string } {
  const stops: [number, [number, number, number]][] = [
    [0.8, [214, 230, 245]],
    [1.0, [240, 242, 245]],
    [2.0, [255, 196, 92]],
    [3.0, [196, 30, 30]],
  ];
  const x = Math.min(Math.max(m, stops[0][0]), 3);
  let i = 1;
  while (i < stops.length - 1 && x > stops[i][0]) i++;
  const [x0, c0] = stops[i - 1];
  const [x1, c1] = stops[i];
  const t = (x - x0) / (x1 - x0);
  const c = c0.map((v, k) => Math.round(v + (c1[k] - v) * t));
  // The text colour with the better WCAG contrast against the background.
  const lum = 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  return { bg: `rgb(${c.join(',')})`, fg: (lum + 0.05) / (0.0056 + 0.05) >= 1.05 / (lum + 0.05) ? '#111111' : '#ffffff' };
}

function lin(v: number): number {
  const x = v / 255;
  return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
}

export function mountGrid(root: HTMLElement, regions: Region[], onSelect: (regionId: string) => void): void {
  const products = [...new Set(regions.flatMap((r) => r.products))].sort();
  const cells = new Map<string, HTMLTableCellElement>();
  const lastUpdate = h('span', { id: 'grid-last-update' }, '—');
  const detail = h('p', { class: 'cell-detail', id: 'grid-detail' }, 'Hover or focus a cell to see why it is priced so.');
  const table = h(
    'table',
    { class: 'grid', id: 'surge-grid' },
    h('caption', {}, 'Surge multiplier per region and product (×1.0 neutral to ×3.0 hot). Select a cell to open its region.'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Region'), ...products.map((p) => h('th', { scope: 'col' }, p)))),
  );
  const body = h('tbody');
  for (const r of regions) {
    const row = h('tr', {}, h('th', { scope: 'row' }, r.name));
    for (const p of products) {
      if (!r.products.includes(p)) {
        row.append(h('td', { class: 'na' }, 'n/a'));
        continue;
      }
      const td = h('td', { class: 'cell', tabindex: 0, 'data-region': r.id, 'data-product': p, 'aria-label': `${r.name} ${p}: waiting for data` }, '…');
      const show = () => (detail.textContent = td.title || `${r.name} ${p}: waiting for data`);
      td.addEventListener('mouseenter', show);
      td.addEventListener('focus', show);
      td.addEventListener('click', () => onSelect(r.id));
      td.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          onSelect(r.id);
        }
      });
      cells.set(`${r.id}/${p}`, td);
      row.append(td);
    }
    body.append(row);
  }
  table.append(body);
  const error = h('p', { class: 'muted', id: 'grid-error' });
  root.replaceChildren(table, h('p', { class: 'muted' }, 'Last update: ', lastUpdate), detail, error);

  const names = new Map(regions.map((r) => [r.id, r.name]));
  function update(u: SurgeUpdate): void {
    const td = cells.get(`${u.regionId}/${u.productType}`);
    if (!td) return;
    const before = td.dataset.multiplier;
    const m = u.surgeMultiplier;
    td.dataset.multiplier = String(m);
    td.textContent = `×${m.toFixed(2)}`;
    const { bg, fg } = surgeColour(m);
    td.style.background = bg;
    td.style.color = fg;
    const label = `${names.get(u.regionId)} ${u.productType}: ×${m.toFixed(2)} — ${u.reason} (demand ${fmt(u.demand, 0)}, supply ${fmt(u.supply, 0)}, at ${time(u.at)})`;
    td.title = label;
    td.setAttribute('aria-label', label);
    if (before !== undefined && before !== String(m)) {
      td.classList.remove('flash');
      void td.offsetWidth; // restart the animation
      td.classList.add('flash');
    }
    lastUpdate.textContent = time(u.at);
  }

  live<{ surgeUpdated: SurgeUpdate }>(SURGE, {}, {
    next: (d) => update(d.surgeUpdated),
    onError: (err) => (error.textContent = `Live updates: ${errorText(err)}`),
    poll: {
      intervalMs: 3000,
      run: async () => {
        const d = await gql<CurrentPrices>(CURRENT);
        for (const r of d.regions)
          for (const q of r.currentPrices) {
            const top = q.factors.filter((f) => f.name !== 'base').sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution))[0];
            update({
              regionId: r.id,
              productType: q.productType,
              surgeMultiplier: q.surgeMultiplier,
              previous: null,
              demand: q.demandForecast,
              supply: q.supply,
              at: q.createdAt,
              reason: top ? `${top.name}: ${top.description}` : 'base price',
              snapshot: false,
            });
          }
      },
    },
  });
}
