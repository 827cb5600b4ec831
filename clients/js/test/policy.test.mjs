import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_BACKOFF, reconnectDelay, shouldReconnect } from '../policy.js';

const backoff = { minMs: 100, maxMs: 1000, laterMs: 5000 };
const half = () => 0.5;

test('close codes that must not reconnect', () => {
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 4401, 4403, 4400, 4404, 4499]) {
    assert.equal(shouldReconnect(code), false, `code ${code}`);
    assert.equal(reconnectDelay(code, 0, backoff), null, `code ${code}`);
  }
});

test('close codes that mean "try again"', () => {
  for (const code of [1001, 1005, 1006, 1011, 1012, 1013, 4000, 4408, 4429, 4500]) {
    assert.equal(shouldReconnect(code), true, `code ${code}`);
  }
});

test('1001 and 1012 reconnect at once, then back off', () => {
  for (const code of [1001, 1012]) {
    assert.equal(reconnectDelay(code, 0, backoff, { random: half }), 0);
    assert.equal(reconnectDelay(code, 1, backoff, { random: half }), 150); // 200 * 0.75
  }
});

test('4000, 4408 and 1006 back off exponentially with jitter, up to maxMs', () => {
  for (const code of [4000, 4408, 1006]) {
    assert.equal(reconnectDelay(code, 0, backoff, { random: () => 0 }), 50);
    assert.equal(reconnectDelay(code, 0, backoff, { random: () => 1 }), 100);
    assert.equal(reconnectDelay(code, 2, backoff, { random: () => 1 }), 400);
    assert.equal(reconnectDelay(code, 20, backoff, { random: () => 1 }), 1000);
    assert.equal(reconnectDelay(code, 1000, backoff, { random: () => 0 }), 500);
  }
});

test('jitter spreads delays between half a step and a full step', () => {
  const seen = new Set();
  for (let i = 0; i < 50; i++) {
    const d = reconnectDelay(1006, 3, backoff);
    assert.ok(d >= 400 && d <= 800, `delay ${d}`);
    seen.add(d);
  }
  assert.ok(seen.size > 1);
});

test('4429 waits at least laterMs, or the retryAfterMs of the preceding ERROR', () => {
  assert.equal(reconnectDelay(4429, 0, backoff, { random: () => 0 }), 5050);
  assert.equal(reconnectDelay(4429, 0, backoff, { random: () => 0, retryAfterMs: 9000 }), 9050);
  assert.ok(reconnectDelay(4429, 0, backoff, { random: half }) > backoff.laterMs);
});

test('defaults apply when no backoff is given', () => {
  assert.equal(reconnectDelay(1006, 0, {}, { random: () => 1 }), DEFAULT_BACKOFF.minMs);
  assert.ok(reconnectDelay(4429, 0) >= DEFAULT_BACKOFF.laterMs);
});
