// Writes a PNG of the dashboard at 1366×900 once live data has arrived.
//   SURGE_URL=http://127.0.0.1:8000 node e2e/screenshot.mjs [out.png]   (default docs/dashboard.png of the repository)
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, open, skip } from './helpers.mjs';

if (skip) {
  console.error(skip);
  process.exit(2);
}
const out = process.argv[2] ? resolve(process.argv[2]) : fileURLToPath(new URL('../../docs/dashboard.png', import.meta.url));
const browser = await launch();
try {
  const { page, problems } = await open(browser, '/', { width: 1366, height: 900 });
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('#surge-grid td[data-region]')];
    return cells.length > 0 && cells.every((td) => td.dataset.multiplier);
  }, null, { polling: 250 });
  await page.waitForFunction(() => !/Waiting/.test(document.querySelector('#forecast-summary')?.textContent ?? 'Waiting'), null, { polling: 250 });
  await page.locator('#models-list table, #models-list p').first().waitFor();
  await page.waitForTimeout(500); // let the last cell flash fade
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
  if (problems.length) console.error(problems.join('\n'));
} finally {
  await browser.close();
}
