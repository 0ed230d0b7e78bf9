// The playground loads the schema by introspection: the docs explorer lists Query.price.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TIMEOUT, launch, open, skip } from './helpers.mjs';

let browser;
before(async () => {
  if (!skip) browser = await launch();
});
after(async () => browser?.close());

test('the playground loads the schema into the docs explorer', { skip, timeout: TIMEOUT }, async () => {
  const { page, problems } = await open(browser, '/playground');
  await page.locator('.graphiql-container').waitFor();
  await page.locator('button[aria-label="Show Documentation Explorer"]').click();
  const docs = page.locator('.graphiql-doc-explorer');
  await docs.locator('a.graphiql-doc-explorer-type-name', { hasText: /^Query$/ }).click();
  await docs.locator('a.graphiql-doc-explorer-field-name', { hasText: /^price$/ }).waitFor();
  assert.equal(await docs.locator('.graphiql-doc-explorer-title').textContent(), 'Query');
  // The example tabs are there.
  assert.ok((await page.locator('.graphiql-tab').count()) >= 9);
  assert.deepEqual(problems, []);
});

test('the playground runs a query and a subscription from its example tabs', { skip, timeout: TIMEOUT }, async () => {
  const { page, problems } = await open(browser, '/playground');
  await page.locator('.graphiql-container').waitFor();
  const result = page.locator('.result-window');
  for (const [tab, want] of [
    ['Prices', '"prices"'],
    ['SurgeUpdated', '"surgeMultiplier"'], // over graphql-ws
    ['Models', '"models"'],
  ]) {
    await page.locator('.graphiql-tab').filter({ has: page.getByText(tab, { exact: true }) }).click();
    await page.locator('.graphiql-execute-button').click();
    await result.filter({ hasText: want }).waitFor();
    assert.doesNotMatch(await result.innerText(), /"errors"/, tab);
    if (tab === 'SurgeUpdated') await page.locator('.graphiql-execute-button').click(); // stop it
  }
  assert.deepEqual(problems, []);
});
