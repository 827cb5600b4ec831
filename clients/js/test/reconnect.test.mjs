import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient } from '../wsgate.js';
import { FakeWebSocket, tick, until } from './fake-websocket.mjs';

let clients = [];

/** A client with tiny, deterministic delays. */
function connect(options = {}) {
  const client = createClient({
    url: 'ws://gw.test/ws',
    WebSocket: FakeWebSocket,
    backoff: { minMs: 10, maxMs: 40, laterMs: 60 },
    random: () => 0.5,
    ...options,
  });
  clients.push(client);
  return client;
}

function closes(client) {
  const list = [];
  client.on('close', (e) => list.push(e));
  return list;
}

beforeEach(() => FakeWebSocket.reset());
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

for (const code of [1001, 1012]) {
  test(`${code}: reconnect at once`, async () => {
    const client = connect();
    const seen = closes(client);
    FakeWebSocket.last.accept();
    FakeWebSocket.last.serverClose(code, 'restart');
    assert.deepEqual(seen, [{ code, reason: 'restart', willReconnect: true, delayMs: 0 }]);
    assert.equal(client.state, 'reconnecting');
    await until(() => FakeWebSocket.instances.length === 2);
    assert.equal(client.state, 'connecting');
  });
}

for (const code of [1006, 4000, 4408, 1011, 1013]) {
  test(`${code}: reconnect with backoff that grows until a welcome`, async () => {
    const client = connect();
    const seen = closes(client);
    FakeWebSocket.last.accept();
    FakeWebSocket.last.serverClose(code);
    assert.equal(seen[0].willReconnect, true);
    assert.equal(seen[0].delayMs, 7.5); // step 10: 5 + 0.5 * 5
    await until(() => FakeWebSocket.instances.length === 2);
    FakeWebSocket.last.serverClose(1006); // the attempt fails
    assert.equal(seen[1].delayMs, 15); // step 20
    await until(() => FakeWebSocket.instances.length === 3);
    FakeWebSocket.last.accept(); // a welcome resets the backoff
    FakeWebSocket.last.serverClose(code);
    assert.equal(seen[2].delayMs, 7.5);
  });
}

test('4429: reconnect after the longer delay, or the ERROR retryAfterMs', async () => {
  const client = connect();
  const seen = closes(client);
  FakeWebSocket.last.accept();
  FakeWebSocket.last.serverClose(4429, 'too many connections');
  assert.equal(seen[0].willReconnect, true);
  assert.ok(seen[0].delayMs >= 60, `delay ${seen[0].delayMs}`);
  await tick(30);
  assert.equal(FakeWebSocket.instances.length, 1, 'not before the longer delay');
  await until(() => FakeWebSocket.instances.length === 2);

  const ws = FakeWebSocket.last;
  ws.accept();
  ws.receive({ type: '@@wsgate/ERROR', error: true, payload: { code: 'RATE_LIMITED', message: 'flooding', retryAfterMs: 500 } });
  ws.serverClose(4429);
  assert.ok(seen[1].delayMs >= 500, `delay ${seen[1].delayMs}`);
});

test('4401: never reconnect; unauthenticated carries the signInUrl of the ERROR', async () => {
  const client = connect();
  const seen = closes(client);
  const unauth = [];
  client.on('unauthenticated', (e) => unauth.push(e));
  const ws = FakeWebSocket.last;
  ws.accept(false);
  ws.receive({
    type: '@@wsgate/ERROR',
    error: true,
    payload: { code: 'FORBIDDEN', message: 'sign in', signInUrl: '/sign-in?next=%2F' },
  });
  ws.serverClose(4401);
  assert.equal(seen[0].willReconnect, false);
  assert.equal(client.state, 'closed');
  assert.deepEqual(unauth, [{ signInUrl: '/sign-in?next=%2F' }]);
  await tick(30);
  assert.equal(FakeWebSocket.instances.length, 1);
});

for (const code of [4403, 1000, 1008, 1009, 4404]) {
  test(`${code}: never reconnect`, async () => {
    const client = connect();
    const seen = closes(client);
    FakeWebSocket.last.accept();
    const pending = client.send('x/A');
    FakeWebSocket.last.serverClose(code);
    assert.equal(seen[0].willReconnect, false);
    assert.equal(client.state, 'closed');
    await assert.rejects(pending, { code: 'DISCONNECTED' });
    await tick(30);
    assert.equal(FakeWebSocket.instances.length, 1);
  });
}

test('reconnect: false never reconnects; connect() starts again', async () => {
  const client = connect({ reconnect: false });
  const seen = closes(client);
  FakeWebSocket.last.accept();
  FakeWebSocket.last.serverClose(1012);
  assert.equal(seen[0].willReconnect, false);
  assert.equal(client.state, 'closed');
  client.connect();
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(client.state, 'connecting');
});

test('requests sent on a closed socket reject DISCONNECTED; queued ones survive', async () => {
  const client = connect();
  FakeWebSocket.last.accept();
  const sent = client.send('x/SENT');
  FakeWebSocket.last.serverClose(1012);
  await assert.rejects(sent, { code: 'DISCONNECTED' });
  const queued = client.send('x/QUEUED');
  await until(() => FakeWebSocket.instances.length === 2);
  const ws = FakeWebSocket.last;
  ws.accept();
  const req = ws.lastSent('x/QUEUED');
  ws.receive({ type: 'x/OK', meta: { inReplyTo: req.meta.id } });
  assert.equal((await queued).type, 'x/OK');
});

test('rejoins joined channels with since = the last offset seen', async () => {
  const client = connect();
  let ws = FakeWebSocket.last;
  ws.accept();
  const a = client.join('acme:orders/42');
  const b = client.join('system:announcements');
  const [ja, jb] = ws.sentOf('@@wsgate/JOIN');
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/42', members: [], count: 1, offset: 5 }, meta: { inReplyTo: ja.meta.id } });
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'system:announcements', count: 3000, offset: 0 }, meta: { inReplyTo: jb.meta.id } });
  await Promise.all([a, b]);
  ws.receive({ type: 'orders/UPDATE', payload: {}, meta: { channel: 'acme:orders/42', offset: 6 } });
  ws.receive({ type: 'orders/UPDATE', payload: {}, meta: { channel: 'acme:orders/42', offset: 8 } });
  const c = client.join('acme:orders/77');
  client.leave('acme:orders/77');
  await assert.rejects(c, { code: 'LEFT' });

  ws.serverClose(1012);
  await until(() => FakeWebSocket.instances.length === 2);
  ws = FakeWebSocket.last;
  ws.accept();
  assert.deepEqual(ws.sentOf('@@wsgate/JOIN').map((j) => j.payload), [
    { channel: 'acme:orders/42', since: 8 },
    { channel: 'system:announcements', since: 0 },
  ]);
  const rejoin = ws.sentOf('@@wsgate/JOIN')[0];
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/42', members: [], count: 2, offset: 10, recovered: true }, meta: { inReplyTo: rejoin.meta.id } });
  // missed actions follow the JOINED and advance the offset
  assert.equal(client.offset('acme:orders/42'), 8);
  ws.receive({ type: 'orders/UPDATE', payload: {}, meta: { channel: 'acme:orders/42', offset: 9 } });
  ws.receive({ type: 'orders/UPDATE', payload: {}, meta: { channel: 'acme:orders/42', offset: 10 } });
  assert.equal(client.offset('acme:orders/42'), 10);
});

test('a rejoin past the history window (recovered: false) takes the new offset', async () => {
  const client = connect();
  let ws = FakeWebSocket.last;
  ws.accept();
  const a = client.join('acme:orders/42');
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/42', members: [], count: 1, offset: 5 }, meta: { inReplyTo: ws.lastSent('@@wsgate/JOIN').meta.id } });
  await a;
  ws.serverClose(1006);
  await until(() => FakeWebSocket.instances.length === 2);
  ws = FakeWebSocket.last;
  ws.accept();
  const rejoin = ws.lastSent('@@wsgate/JOIN');
  assert.equal(rejoin.payload.since, 5);
  const recovered = [];
  client.on('@@wsgate/JOINED', (j) => recovered.push(j.payload.recovered));
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/42', members: [], count: 1, offset: 900, recovered: false }, meta: { inReplyTo: rejoin.meta.id } });
  assert.equal(client.offset('acme:orders/42'), 900);
  assert.deepEqual(recovered, [false]);
});

test('the view channel is rejoined, and the next navigate leaves it explicitly', async () => {
  const client = connect();
  let ws = FakeWebSocket.last;
  ws.accept();
  const nav = client.navigate('orders/42');
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/42', members: [], count: 1, offset: 3 }, meta: { inReplyTo: ws.lastSent('@@wsgate/NAVIGATE').meta.id } });
  await nav;
  ws.serverClose(1001);
  await until(() => FakeWebSocket.instances.length === 2);
  ws = FakeWebSocket.last;
  ws.accept();
  assert.deepEqual(ws.lastSent('@@wsgate/JOIN').payload, { channel: 'acme:orders/42', since: 3 });
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/42', members: [], count: 1, offset: 3, recovered: true }, meta: { inReplyTo: ws.lastSent('@@wsgate/JOIN').meta.id } });

  // The new connection joined it with JOIN: the gateway does not know it as
  // the view, so navigating away must leave it explicitly.
  const next = client.navigate('orders/43');
  assert.deepEqual(ws.sent.slice(-2).map((a) => [a.type, a.payload]), [
    ['@@wsgate/LEAVE', { channel: 'acme:orders/42' }],
    ['@@wsgate/NAVIGATE', { view: 'orders/43' }],
  ]);
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/43', members: [], count: 1, offset: 0 }, meta: { inReplyTo: ws.lastSent('@@wsgate/NAVIGATE').meta.id } });
  await next;
  assert.deepEqual(client.channels, ['acme:orders/43']);

  // ...and once the gateway knows the view, NAVIGATE alone is enough.
  const again = client.navigate('orders/44');
  assert.equal(ws.lastSent('@@wsgate/LEAVE').payload.channel, 'acme:orders/42');
  ws.receive({ type: '@@wsgate/JOINED', payload: { channel: 'acme:orders/44', members: [], count: 1, offset: 0 }, meta: { inReplyTo: ws.lastSent('@@wsgate/NAVIGATE').meta.id } });
  await again;
  assert.deepEqual(client.channels, ['acme:orders/44']);
});

test('state events follow the lifecycle', async () => {
  const client = connect();
  const states = [client.state];
  client.on('state', (s) => states.push(s));
  FakeWebSocket.last.accept();
  FakeWebSocket.last.serverClose(1012);
  await until(() => FakeWebSocket.instances.length === 2);
  FakeWebSocket.last.accept();
  client.close();
  assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'connecting', 'open', 'closed']);
});
