// The committed dist/ is what `npm run build` makes from src/ (rebuild and commit when this fails).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const web = fileURLToPath(new URL('..', import.meta.url));
const files = (dir) => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => relative(dir, join(d.parentPath ?? d.path, d.name))).sort();

test('dist/ is up to date with src/', { timeout: 120_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'surge-web-dist-'));
  try {
    execFileSync(process.execPath, [join(web, 'build.mjs'), '--out', out], { cwd: web, stdio: 'pipe' });
    const want = files(out);
    assert.deepEqual(files(join(web, 'dist')), want);
    for (const f of want) assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(web, 'dist', f))), `dist/${f} differs: run npm run build`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
