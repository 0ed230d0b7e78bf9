// The dashboard in a real browser against a running server (SURGE_URL).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TIMEOUT, WAIT, gql, launch, open, postEvents, skip } from './helpers.mjs';

let browser;
before(async () => {
  if (!skip) browser = await launch();
});
after(async () => browser?.close());

test('the dashboard loads without errors and shows one cell per region and product', { skip, timeout: TIMEOUT }, async () => {
  const { regions } = await gql('{ regions { id products } }');
  const want = regions.reduce((n, r) => n + r.products.length, 0);
  const { page, problems } = await open(browser);
  const cells = page.locator('#surge-grid td[data-region][data-product]');
  await page.waitForFunction((n) => document.querySelectorAll('#surge-grid td[data-region][data-product]').length === n, want, { polling: 250 });
  // Live data arrived: every cell carries a multiplier.
  await page.waitForFunction(() => [...document.querySelectorAll('#surge-grid td[data-region]')].every((td) => td.dataset.multiplier), null, { polling: 250 });
  assert.equal(await cells.count(), want);
  for (const r of regions)
    for (const p of r.products) assert.equal(await page.locator(`#surge-grid td[data-region="${r.id}"][data-product="${p}"]`).count(), 1, `${r.id}/${p}`);
  const m = Number(await cells.first().getAttribute('data-multiplier'));
  assert.ok(m > 0, `multiplier ${m}`);
  // Live over the websocket (not the polling fallback).
  await page.locator('#live-status[data-state="connected"]').waitFor();
  // The other views rendered something (the region chart, models, experiments).
  await page.locator('#region .uplot').waitFor();
  await page.locator('#models-list table, #models-list p').first().waitFor();
  await page.locator('#experiments-list ul, #no-experiments').first().waitFor();
  assert.deepEqual(problems, []);
});

test('a burst of events in one region changes its surge on the page', { skip, timeout: TIMEOUT }, async () => {
  const region = 'sf';
  const { regions } = await gql('{ regions { id products } }');
  const product = regions.find((r) => r.id === region)?.products[0];
  assert.ok(product, `region ${region} with products`);
  const { page, problems } = await open(browser);
  const sel = `#surge-grid td[data-region="${region}"][data-product="${product}"]`;
  await page.waitForFunction((s) => document.querySelector(s)?.dataset.multiplier, sel, { polling: 250 });
  const before = await page.locator(sel).getAttribute('data-multiplier');
  // Push the multiplier away from where it is: no supply (and many searches) when
  // it is low, plenty of supply when it is already high.
  const scarce = Number(before) < 2;
  const burst = () =>
    postEvents([
      { type: 'supply_update', regionId: region, productType: product, availableSupply: scarce ? 0.5 : 100000 },
      { type: 'supply_update', regionId: region, availableSupply: scarce ? 0.5 : 100000 },
      ...(scarce ? Array.from({ length: 500 }, () => ({ type: 'search', regionId: region, productType: product })) : []),
    ]);
  await burst();
  const timer = setInterval(() => burst().catch(() => {}), 3000);
  try {
    await page.waitForFunction(([s, b]) => document.querySelector(s)?.dataset.multiplier !== b, [sel, before], { polling: 250, timeout: WAIT });
  } finally {
    clearInterval(timer);
  }
  const afterValue = await page.locator(sel).getAttribute('data-multiplier');
  assert.notEqual(afterValue, before);
  assert.match((await page.locator(sel).textContent()) ?? '', /×\d/);
  assert.deepEqual(problems, []);
});
