// Every value a module exports at run time is declared in its .d.ts, and no
// more: the declarations cannot drift from the code without this failing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

/** Value names a .d.ts declares or re-exports (type-only exports left out). */
function declared(file) {
  const text = readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');
  const names = new Set();
  for (const m of text.matchAll(/^export declare (?:const|function|class) (\w+)/gm)) names.add(m[1]);
  for (const m of text.matchAll(/^export \{([^}]*)\} from/gm)) {
    for (const part of m[1].split(',')) {
      const name = part.trim();
      if (name) names.add(name);
    }
  }
  return [...names].sort();
}

for (const module of ['wsgate', 'protocol', 'policy', 'presence', 'redux']) {
  test(`${module}.d.ts declares exactly what ${module}.js exports`, async () => {
    const exported = Object.keys(await import(`../${module}.js`)).sort();
    assert.deepEqual(declared(`${module}.d.ts`), exported);
  });
}
