import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient, WsgateError } from '../wsgate.js';
import { FakeWebSocket, tick } from './fake-websocket.mjs';

/** @type {import('../wsgate.js').WsgateClient[]} */
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

test('connects with the v1 subprotocol and reports welcome', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  assert.equal(ws.url, 'ws://gw.test/ws');
  assert.deepEqual(ws.protocols, ['wsgate.v1.json']);
  assert.equal(client.state, 'connecting');
  const events = [];
  client.on('open', () => events.push('open'));
  client.on('welcome', (w) => events.push(`welcome ${w.connectionId}`));
  ws.accept();
  assert.equal(client.state, 'open');
  assert.deepEqual(events, ['open', 'welcome n1.a']);
  assert.equal(client.welcome.userId, 'alice');
});

test('send() adds meta.id and resolves with the first reply carrying inReplyTo', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const reply = client.send('orders/GET', { id: 42 }, { channel: 'acme:orders/42' });
  const sent = ws.lastSent('orders/GET');
  assert.equal(typeof sent.meta.id, 'string');
  assert.equal(sent.meta.channel, 'acme:orders/42');
  assert.deepEqual(sent.payload, { id: 42 });
  ws.receive({ type: 'orders/OTHER', payload: 1, meta: { inReplyTo: 'nope' } });
  ws.receive({ type: 'orders/ORDER', payload: { id: 42 }, meta: { inReplyTo: sent.meta.id } });
  ws.receive({ type: 'orders/LATE', payload: 2, meta: { inReplyTo: sent.meta.id } });
  const action = await reply;
  assert.equal(action.type, 'orders/ORDER');
});

test('each send gets its own id', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const a = client.send('x/A');
  const b = client.send('x/B');
  const [ida, idb] = [ws.lastSent('x/A').meta.id, ws.lastSent('x/B').meta.id];
  assert.notEqual(ida, idb);
  ws.receive({ type: 'x/B_OK', meta: { inReplyTo: idb } });
  ws.receive({ type: 'x/A_OK', meta: { inReplyTo: ida } });
  assert.equal((await a).type, 'x/A_OK');
  assert.equal((await b).type, 'x/B_OK');
});

test('an @@wsgate/ERROR answer rejects with its code', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const reply = client.send('orders/GET', {});
  const id = ws.lastSent('orders/GET').meta.id;
  ws.receive({
    type: '@@wsgate/ERROR',
    error: true,
    payload: { code: 'NO_ROUTE', message: 'no route for orders/GET' },
    meta: { inReplyTo: id },
  });
  await assert.rejects(reply, (err) => {
    assert.ok(err instanceof WsgateError);
    assert.equal(err.code, 'NO_ROUTE');
    assert.equal(err.message, 'no route for orders/GET');
    assert.equal(err.action.type, '@@wsgate/ERROR');
    return true;
  });
});

test('an error action from a service rejects too, with retryAfterMs', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const reply = client.send('profile/SET_NICKNAME', 'x');
  const id = ws.lastSent('profile/SET_NICKNAME').meta.id;
  ws.receive({
    type: '@@wsgate/ERROR',
    error: true,
    payload: { code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 60000 },
    meta: { inReplyTo: id },
  });
  await assert.rejects(reply, { code: 'RATE_LIMITED', retryAfterMs: 60000 });
  const other = client.send('orders/PACK', {});
  ws.receive({ type: 'orders/PACK_FAILED', error: true, payload: { code: 'OUT_OF_STOCK', message: 'none left' },
    meta: { inReplyTo: ws.lastSent('orders/PACK').meta.id } });
  await assert.rejects(other, { code: 'OUT_OF_STOCK' });
});

test('an ERROR answering nothing pending goes to the error event', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  ws.receive({ type: '@@wsgate/ERROR', error: true, payload: { code: 'BAD_REQUEST', message: 'bad' } });
  assert.deepEqual(errors, ['BAD_REQUEST']);
});

test('send() times out with TIMEOUT', async () => {
  const client = connect();
  FakeWebSocket.last.accept();
  await assert.rejects(client.send('x/SLOW', null, {}, { timeoutMs: 20 }), { code: 'TIMEOUT' });
  const fast = connect({ timeoutMs: 10 });
  FakeWebSocket.last.accept();
  await assert.rejects(fast.send('x/SLOW'), { code: 'TIMEOUT' });
});

test('actions sent before the socket opens are queued, then flushed in order', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  const reply = client.send('x/FIRST', 1);
  assert.equal(client.dispatch({ type: 'x/SECOND', payload: 2 }), true);
  assert.equal(ws.sent.length, 0);
  ws.accept();
  assert.deepEqual(ws.sent.map((a) => a.type), ['x/FIRST', 'x/SECOND']);
  ws.receive({ type: 'x/OK', meta: { inReplyTo: ws.sent[0].meta.id } });
  assert.equal((await reply).type, 'x/OK');
});

test('the queue is bounded', async () => {
  const client = connect({ maxQueue: 2 });
  assert.equal(client.dispatch({ type: 'x/A' }), true);
  assert.equal(client.dispatch({ type: 'x/B' }), true);
  assert.equal(client.dispatch({ type: 'x/C' }), false);
  await assert.rejects(client.send('x/D'), { code: 'QUEUE_FULL' });
});

test('dispatch() sends the action as is, with no id', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  client.dispatch({ type: 'chat/MESSAGE', payload: { text: 'hi' }, meta: { channel: 'acme:orders/42' } });
  assert.deepEqual(ws.lastSent('chat/MESSAGE'), {
    type: 'chat/MESSAGE',
    payload: { text: 'hi' },
    meta: { channel: 'acme:orders/42' },
  });
  assert.throws(() => client.dispatch({ payload: 1 }), TypeError);
});

test('on() matches exact types, prefixes and *; off() and the returned function unsubscribe', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const seen = [];
  const exact = (a) => seen.push(`exact ${a.type}`);
  client.on('chat/MESSAGE', exact);
  const offPrefix = client.on('chat/*', (a) => seen.push(`prefix ${a.type}`));
  client.on('*', (a) => seen.push(`all ${a.type}`));
  ws.receive({ type: 'chat/MESSAGE', payload: {} });
  ws.receive({ type: 'cursor/MOVE', payload: {} });
  assert.deepEqual(seen, ['exact chat/MESSAGE', 'prefix chat/MESSAGE', 'all chat/MESSAGE', 'all cursor/MOVE']);
  seen.length = 0;
  client.off('chat/MESSAGE', exact);
  offPrefix();
  ws.receive({ type: 'chat/MESSAGE', payload: {} });
  assert.deepEqual(seen, ['all chat/MESSAGE']);
});

test('a throwing handler does not stop the others', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const seen = [];
  const original = console.error;
  const reported = [];
  console.error = (e) => reported.push(e.message);
  try {
    client.on('x/*', () => {
      throw new Error('boom');
    });
    client.on('*', (a) => seen.push(a.type));
    ws.receive({ type: 'x/A' });
  } finally {
    console.error = original;
  }
  assert.deepEqual(seen, ['x/A']);
  assert.deepEqual(reported, ['boom']);
});

test('a non-JSON frame is reported, not thrown', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  ws.receive('not json');
  assert.deepEqual(errors, ['BAD_REQUEST']);
});

test('ping() resolves with the PONG', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const pong = client.ping('hello');
  const sent = ws.lastSent('@@wsgate/PING');
  assert.equal(sent.payload, 'hello');
  ws.receive({ type: '@@wsgate/PONG', payload: 'hello', meta: { inReplyTo: sent.meta.id } });
  assert.equal((await pong).payload, 'hello');
});

test('close() rejects what is pending and stops for good', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  const reply = client.send('x/A');
  const closes = [];
  client.on('close', (e) => closes.push(e));
  client.close();
  await assert.rejects(reply, { code: 'CLOSED' });
  assert.equal(client.state, 'closed');
  assert.deepEqual(ws.closedWith, { code: 1000, reason: '' });
  assert.deepEqual(closes, [{ code: 1000, reason: '', willReconnect: false }]);
  await assert.rejects(client.send('x/B'), { code: 'CLOSED' });
  assert.equal(client.dispatch({ type: 'x/C' }), false);
  await tick(5);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test('without a WebSocket class it says so', () => {
  assert.throws(() => createClient({ url: 'ws://x', WebSocket: undefined }), TypeError);
});

test('the liveness check pings an idle connection and reconnects when nothing answers', async () => {
  const client = connect({ backoff: { minMs: 1, maxMs: 2 } });
  const ws = FakeWebSocket.last;
  ws.accept({ connectionId: 'n1.a', userId: 'alice', node: 'n1', hubs: [], heartbeatMs: 40 });
  const closes = [];
  client.on('close', (e) => closes.push(e));
  await tick(80);
  assert.ok(ws.sentOf('@@wsgate/PING').length >= 1, 'an idle connection is pinged');
  await tick(80);
  assert.equal(closes[0]?.code, 4408);
  assert.equal(closes[0]?.willReconnect, true);
  assert.equal(ws.closedWith?.code, 4408);
  assert.ok(FakeWebSocket.instances.length >= 2, 'a new socket was opened');
});

test('traffic keeps the liveness check quiet', async () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept({ connectionId: 'n1.a', userId: 'alice', node: 'n1', hubs: [], heartbeatMs: 60 });
  for (let i = 0; i < 6; i++) {
    await tick(20);
    ws.receive({ type: 'x/TICK' });
  }
  assert.equal(ws.sentOf('@@wsgate/PING').length, 0);
  assert.equal(client.state, 'open');
});
