import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient } from '../wsgate.js';
import { FakeWebSocket, until } from './fake-websocket.mjs';

let clients = [];
function connect(options = {}) {
  const client = createClient({ url: 'ws://gw.test/ws', WebSocket: FakeWebSocket, backoff: { minMs: 1, maxMs: 1 }, ...options });
  clients.push(client);
  return client;
}

beforeEach(() => FakeWebSocket.reset());
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

test('a token goes in @@wsgate/AUTH, first, and nothing else goes before WELCOME', async () => {
  const client = connect({ token: 'secret' });
  client.join('acme:orders/1').catch(() => {}); // rejects at the test's close
  client.dispatch({ type: 'chat/EARLY' });
  const ws = FakeWebSocket.last;
  ws.accept(false);
  await until(() => ws.sent.length === 1);
  assert.deepEqual(ws.sent, [{ type: '@@wsgate/AUTH', payload: { token: 'secret' } }]);
  assert.equal(client.state, 'connecting');
  ws.receive({ type: '@@wsgate/WELCOME', payload: { connectionId: 'n1.a', userId: 'alice', heartbeatMs: 0 } });
  assert.equal(client.state, 'open');
  assert.deepEqual(ws.sent.map((a) => a.type), ['@@wsgate/AUTH', '@@wsgate/JOIN', 'chat/EARLY']);
});

test('getToken is asked on every connection', async () => {
  let n = 0;
  const client = connect({ getToken: async () => `t${++n}` });
  const first = FakeWebSocket.last;
  first.accept(false);
  await until(() => first.sent.length === 1);
  first.receive({ type: '@@wsgate/WELCOME', payload: { heartbeatMs: 0 } });
  first.serverClose(1012);
  await until(() => FakeWebSocket.instances.length === 2);
  const second = FakeWebSocket.last;
  second.accept(false);
  await until(() => second.sent.length === 1);
  assert.deepEqual([first.sent[0].payload, second.sent[0].payload], [{ token: 't1' }, { token: 't2' }]);
  assert.equal(client.state, 'connecting');
});

test('SESSION_EXPIRING is answered with REFRESH and a fresh token', async () => {
  let n = 0;
  const client = connect({ getToken: () => `t${++n}` });
  const expiring = [];
  client.on('sessionExpiring', (p) => expiring.push(p));
  const ws = FakeWebSocket.last;
  ws.accept(false);
  await until(() => ws.sent.length === 1);
  ws.receive({ type: '@@wsgate/WELCOME', payload: { heartbeatMs: 0 } });
  ws.receive({ type: '@@wsgate/SESSION_EXPIRING', payload: { exp: 1234 } });
  await until(() => ws.sentOf('@@wsgate/REFRESH').length === 1);
  assert.deepEqual(ws.lastSent('@@wsgate/REFRESH').payload, { token: 't2' });
  assert.deepEqual(expiring, [{ exp: 1234 }]);
});

test('with a cookie, refresh() sends REFRESH with no token', () => {
  const client = connect();
  const ws = FakeWebSocket.last;
  ws.accept();
  assert.equal(client.refresh(), true);
  assert.deepEqual(ws.lastSent('@@wsgate/REFRESH'), { type: '@@wsgate/REFRESH', payload: {} });
});
