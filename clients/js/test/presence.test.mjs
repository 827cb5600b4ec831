import { test } from 'node:test';
import assert from 'node:assert/strict';

import { PresenceBook } from '../presence.js';

const alice = { userId: 'alice', connectionId: 'n1.a', name: 'Alice' };
const bob = { userId: 'bob', connectionId: 'n1.b', name: 'Bob' };
const bob2 = { userId: 'bob', connectionId: 'n2.b', name: 'Bob' };

test('reset, then diffs, keyed by connection', () => {
  const book = new PresenceBook();
  book.reset('acme:orders/42', [alice], 1);
  assert.deepEqual(book.members('acme:orders/42'), [alice]);
  assert.equal(book.apply('acme:orders/42', [bob, bob2], [], 3), true);
  assert.deepEqual(book.members('acme:orders/42').map((m) => m.connectionId), ['n1.a', 'n1.b', 'n2.b']);
  book.apply('acme:orders/42', [], [bob], 2);
  assert.deepEqual(book.members('acme:orders/42'), [alice, bob2]);
  assert.equal(book.count('acme:orders/42'), 2);
});

test('a diff for an unknown channel is ignored', () => {
  const book = new PresenceBook();
  assert.equal(book.apply('acme:x', [alice], [], 1), false);
  assert.deepEqual(book.members('acme:x'), []);
  assert.equal(book.count('acme:x'), 0);
});

test('counts only, past the size threshold', () => {
  const book = new PresenceBook();
  book.reset('public:lobby', undefined, 12000);
  assert.deepEqual(book.members('public:lobby'), []);
  book.apply('public:lobby', undefined, undefined, 12001);
  assert.equal(book.count('public:lobby'), 12001);
});

test('drop and clear forget channels', () => {
  const book = new PresenceBook();
  book.reset('a:1', [alice], 1);
  book.reset('a:2', [bob], 1);
  book.drop('a:1');
  assert.deepEqual(book.members('a:1'), []);
  book.clear();
  assert.deepEqual(book.members('a:2'), []);
});
