// The playground's example operations are valid against the schema the server serves.
import { buildSchema, parse, validate } from 'graphql';
import * as esbuild from 'esbuild';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const here = new URL('.', import.meta.url);
const schema = buildSchema(readFileSync(new URL('../../schema.graphqls', here), 'utf8'));

async function load(file) {
  const { code } = await esbuild.transform(readFileSync(new URL(`../src/${file}`, here), 'utf8'), { loader: 'ts', format: 'esm' });
  return import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`);
}

test('every playground example is a valid operation', async () => {
  const { examples } = await load('examples.ts');
  const xs = examples(new Date('2026-12-04T12:00:00Z'));
  const names = xs.map((x) => x.name.split(' ')[0]);
  for (const want of ['price', 'prices', 'forecast', 'factorBreakdown', 'demandHistory', 'models', 'rollout', 'surgeUpdated', 'experimentResults'])
    assert.ok(names.includes(want), `no example for ${want}`);
  for (const x of xs) {
    const errors = validate(schema, parse(x.query));
    assert.deepEqual(errors.map((e) => e.message), [], `example ${x.name}`);
    if (x.variables) JSON.parse(x.variables);
    if (x.headers) JSON.parse(x.headers);
  }
  assert.equal(parse(xs.find((x) => x.name === 'surgeUpdated').query).definitions[0].operation, 'subscription');
});

test('every operation of the dashboard is valid', async () => {
  // The views keep their operations in string constants: pull out every template
  // literal that starts with an operation keyword and validate it.
  for (const file of ['main.ts', 'grid.ts', 'region.ts', 'models.ts', 'rules.ts', 'experiments.ts']) {
    const src = readFileSync(new URL(`../src/${file}`, here), 'utf8');
    const ops = [...src.matchAll(/`((?:query|mutation|subscription) [^`]*)`/g)].map((m) =>
      // Interpolations are constants of the same module: substitute them.
      m[1].replace(/\$\{(\w+)\}/g, (_, name) => {
        const def = src.match(new RegExp(`const ${name} = (?:\`([^\`]*)\`|(\\d+))`));
        assert.ok(def, `${file}: unknown interpolation ${name}`);
        return def[1] ?? def[2];
      }),
    );
    assert.ok(ops.length > 0, `${file} has no operation`);
    for (const op of ops) assert.deepEqual(validate(schema, parse(op)).map((e) => e.message), [], `${file}: ${op}`);
  }
});
