// The pricing-rules view: a change is saved with the admin key and refused without.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ADMIN_KEY, TIMEOUT, launch, open, skip } from './helpers.mjs';

let browser;
before(async () => {
  if (!skip) browser = await launch();
});
after(async () => browser?.close());

const REGION = 'london';

async function rulesPage() {
  const { page, problems } = await open(browser);
  await page.locator(`#region-select option[value="${REGION}"]`).waitFor({ state: 'attached' });
  await page.getByLabel('Region', { exact: true }).selectOption(REGION);
  await page.locator('#rules tbody tr[data-product]').first().waitFor();
  await page.waitForFunction(() => document.querySelector('#rule-basePrice')?.value !== '', null, { polling: 250 });
  return { page, problems };
}

test('saving a rule with the admin key shows the new version', { skip: skip || (!ADMIN_KEY && 'SURGE_ADMIN_KEY is not set'), timeout: TIMEOUT }, async () => {
  const { page, problems } = await rulesPage();
  const product = await page.locator('#rule-product').inputValue();
  const before = Number(await page.locator(`#rules tbody tr[data-product="${product}"]`).getAttribute('data-version'));
  // The same values again: a new version that prices exactly as the old one.
  await page.getByLabel('Admin key').fill(ADMIN_KEY);
  await page.getByRole('button', { name: 'Save new version' }).click();
  const status = page.locator('#rules-status');
  await status.filter({ hasText: /version \d+/ }).waitFor();
  const saved = Number(await status.getAttribute('data-version'));
  assert.ok(saved > before, `saved version ${saved} after ${before}`);
  await page.locator(`#rules tbody tr[data-product="${product}"][data-version="${saved}"]`).waitFor();
  assert.equal(await page.getByRole('alert').textContent(), '');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('surge.adminKey')), ADMIN_KEY);
  assert.deepEqual(problems, []);
});

test('saving a rule without the admin key is refused', { skip, timeout: TIMEOUT }, async () => {
  const { page } = await rulesPage();
  await page.getByLabel('Admin key').fill('');
  await page.getByRole('button', { name: 'Save new version' }).click();
  const alert = page.getByRole('alert');
  await alert.filter({ hasText: /UNAUTHENTICATED|FORBIDDEN/ }).waitFor();
  assert.match(await alert.textContent(), /^(UNAUTHENTICATED|FORBIDDEN): /);
  assert.equal(await page.locator('#rules-status').textContent(), '');
  // A wrong key is refused too.
  await page.getByLabel('Admin key').fill('not-the-key');
  await page.getByRole('button', { name: 'Save new version' }).click();
  await alert.filter({ hasText: /UNAUTHENTICATED|FORBIDDEN/ }).waitFor();
});
