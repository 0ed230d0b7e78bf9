// The dashboard against a server that opens no role (surge serve's default):
// without a key it says why it shows nothing; with a key typed into the header
// it loads every view and goes live over the websocket (the key in
// connection_init). Run by TestE2EBrowserWithKeys with SURGE_URL and
// SURGE_API_KEY (a key holding the analyst role); not part of `node --test e2e/`.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TIMEOUT, launch, open } from './helpers.mjs';

const key = process.env.SURGE_API_KEY;
let browser;
before(async () => {
  assert.ok(process.env.SURGE_URL && key, 'SURGE_URL and SURGE_API_KEY are required');
  browser = await launch();
});
after(async () => browser?.close());

test('without a key the page says it is refused; with one it loads and goes live', { timeout: TIMEOUT }, async () => {
  const { page } = await open(browser);
  await page.waitForFunction(() => /UNAUTHENTICATED/.test(document.getElementById('grid')?.textContent ?? ''), null, { polling: 250 });
  await page.fill('#api-key', key);
  await Promise.all([page.waitForEvent('load'), page.locator('#api-key').dispatchEvent('change')]);
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('#surge-grid td[data-region]')];
    return cells.length > 0 && cells.every((td) => td.dataset.multiplier);
  }, null, { polling: 250 });
  await page.locator('#live-status[data-state="connected"]').waitFor();
  await page.locator('#models-list table').waitFor();
  assert.equal(await page.inputValue('#api-key'), key, 'the key stays for the session');
});
