import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient } from '../wsgate.js';
import { FakeWebSocket, tick } from './fake-websocket.mjs';

let clients = [];

function connect(options = {}) {
  const client = createClient({ url: 'ws://gw.test/ws', WebSocket: FakeWebSocket, ...options });
  clients.push(client);
  return client;
}

beforeEach(() => FakeWebSocket.reset());
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

const alice = { userId: 'alice', connectionId: 'n1.a', name: 'Alice' };
const bob = { userId: 'bob', connectionId: 'n1.b', name: 'Bob' };
const carol = { userId: 'carol', connectionId: 'n2.c', name: 'Carol' };

/** Answer the last JOIN/NAVIGATE of `ws` with a JOINED. */
function answerJoin(ws, type, payload) {
  const req = ws.lastSent(type);
  ws.receive({ type: '@@wsgate/JOINED', payload, meta: { inReplyTo: req.meta.id } });
  return req;
}

test('join() resolves with JOINED and presence follows JOINED and PRESENCE diffs', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const updates = [];
  client.on('presence', (p) => updates.push([p.channel, p.members.map((m) => m.userId), p.count]));
  const joined = client.join('acme:orders/42');
  const req = answerJoin(ws, '@@wsgate/JOIN', { channel: 'acme:orders/42', members: [alice, bob], count: 2, offset: 7 });
  assert.deepEqual(req.payload, { channel: 'acme:orders/42' });
  assert.equal((await joined).payload.channel, 'acme:orders/42');
  assert.deepEqual(client.presence('acme:orders/42').map((m) => m.userId), ['alice', 'bob']);

  ws.receive({ type: '@@wsgate/PRESENCE', payload: { channel: 'acme:orders/42', joined: [carol], left: [bob], count: 2 } });
  assert.deepEqual(client.presence('acme:orders/42'), [alice, carol]);
  assert.equal(client.presenceCount('acme:orders/42'), 2);
  assert.deepEqual(updates, [
    ['acme:orders/42', ['alice', 'bob'], 2],
    ['acme:orders/42', ['alice', 'carol'], 2],
  ]);
  assert.deepEqual(client.channels, ['acme:orders/42']);
  assert.equal(client.offset('acme:orders/42'), 7);
});

test('PRESENCE for a channel not joined is ignored', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  ws.receive({ type: '@@wsgate/PRESENCE', payload: { channel: 'acme:x', joined: [bob], left: [], count: 1 } });
  assert.deepEqual(client.presence('acme:x'), []);
});

test('counts only past the threshold: JOINED without members', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const joined = client.join('public:lobby');
  answerJoin(ws, '@@wsgate/JOIN', { channel: 'public:lobby', count: 20000, offset: 0 });
  await joined;
  assert.deepEqual(client.presence('public:lobby'), []);
  assert.equal(client.presenceCount('public:lobby'), 20000);
});

test('a refused join rejects and the channel is forgotten', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const joined = client.join('globex:orders/1');
  const req = ws.lastSent('@@wsgate/JOIN');
  ws.receive({ type: '@@wsgate/ERROR', error: true, payload: { code: 'FORBIDDEN', message: 'no' }, meta: { inReplyTo: req.meta.id } });
  await assert.rejects(joined, { code: 'FORBIDDEN' });
  assert.deepEqual(client.channels, []);
});

test('leave() forgets at once and sends LEAVE', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const joined = client.join('acme:orders/42');
  answerJoin(ws, '@@wsgate/JOIN', { channel: 'acme:orders/42', members: [alice], count: 1, offset: 0 });
  await joined;
  const left = client.leave('acme:orders/42');
  assert.deepEqual(client.channels, []);
  assert.deepEqual(client.presence('acme:orders/42'), []);
  const req = ws.lastSent('@@wsgate/LEAVE');
  assert.deepEqual(req.payload, { channel: 'acme:orders/42' });
  ws.receive({ type: '@@wsgate/LEFT', payload: { channel: 'acme:orders/42' }, meta: { inReplyTo: req.meta.id } });
  assert.equal((await left).type, '@@wsgate/LEFT');
});

test('navigate() resolves with JOINED, not the LEFT of the old view that answers it too', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const first = client.navigate('orders/42');
  answerJoin(ws, '@@wsgate/NAVIGATE', { channel: 'acme:orders/42', members: [alice], count: 1, offset: 3 });
  await first;
  const second = client.navigate('orders/43');
  const id = ws.lastSent('@@wsgate/NAVIGATE').meta.id;
  ws.receive({ type: '@@wsgate/LEFT', payload: { channel: 'acme:orders/42' }, meta: { inReplyTo: id } });
  answerJoin(ws, '@@wsgate/NAVIGATE', { channel: 'acme:orders/43', members: [alice], count: 1, offset: 0 });
  assert.equal((await second).type, '@@wsgate/JOINED');
  assert.deepEqual(client.channels, ['acme:orders/43']);
});

test('an unsolicited LEFT (server-side removal) forgets the channel', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const joined = client.join('acme:orders/42');
  answerJoin(ws, '@@wsgate/JOIN', { channel: 'acme:orders/42', members: [alice], count: 1, offset: 0 });
  await joined;
  ws.receive({ type: '@@wsgate/LEFT', payload: { channel: 'acme:orders/42' } });
  assert.deepEqual(client.channels, []);
});

test('navigate() sends NAVIGATE and swaps the view of the hub', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const first = client.navigate('orders/42');
  assert.deepEqual(ws.lastSent('@@wsgate/NAVIGATE').payload, { view: 'orders/42' });
  answerJoin(ws, '@@wsgate/NAVIGATE', { channel: 'acme:orders/42', members: [alice, bob], count: 2, offset: 3 });
  assert.equal((await first).payload.channel, 'acme:orders/42');

  const second = client.navigate('orders/43');
  answerJoin(ws, '@@wsgate/NAVIGATE', { channel: 'acme:orders/43', members: [alice], count: 1, offset: 0 });
  await second;
  assert.deepEqual(client.channels, ['acme:orders/43']);
  assert.deepEqual(client.presence('acme:orders/42'), []);
  // The gateway left the previous view itself: no explicit LEAVE.
  assert.equal(ws.sentOf('@@wsgate/LEAVE').length, 0);

  const third = client.navigate('lobby', 'public');
  assert.deepEqual(ws.lastSent('@@wsgate/NAVIGATE').payload, { view: 'lobby', hub: 'public' });
  answerJoin(ws, '@@wsgate/NAVIGATE', { channel: 'public:lobby', members: [], count: 0, offset: 0 });
  await third;
  assert.deepEqual(client.channels.sort(), ['acme:orders/43', 'public:lobby']);
});

test('meta.offset of received actions advances the channel offset', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const joined = client.join('acme:orders/42');
  answerJoin(ws, '@@wsgate/JOIN', { channel: 'acme:orders/42', members: [], count: 1, offset: 10 });
  await joined;
  ws.receive({ type: 'orders/UPDATE', payload: {}, meta: { channel: 'acme:orders/42', offset: 11 } });
  ws.receive({ type: 'orders/UPDATE', payload: {}, meta: { channel: 'acme:orders/42', offset: 12 } });
  ws.receive({ type: 'orders/UPDATE', payload: {}, meta: { channel: 'acme:other', offset: 99 } });
  assert.equal(client.offset('acme:orders/42'), 12);
});

test('join() while connecting waits for the connection and sends one JOIN', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  const joined = client.join('acme:orders/42');
  assert.equal(ws.sent.length, 0);
  ws.accept();
  assert.equal(ws.sentOf('@@wsgate/JOIN').length, 1);
  answerJoin(ws, '@@wsgate/JOIN', { channel: 'acme:orders/42', members: [alice], count: 1, offset: 0 });
  assert.equal((await joined).payload.channel, 'acme:orders/42');
  await tick(1);
  assert.equal(ws.sentOf('@@wsgate/JOIN').length, 1);
});
