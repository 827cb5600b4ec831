import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient } from '../wsgate.js';
import { FakeWebSocket, until } from './fake-websocket.mjs';

let clients = [];

function connect() {
  const client = createClient({
    url: 'ws://gw.test/ws',
    WebSocket: FakeWebSocket,
    backoff: { minMs: 1, maxMs: 2, laterMs: 3 },
    random: () => 0.5,
  });
  clients.push(client);
  return client;
}

const WELCOME = { connectionId: 'n1.a', userId: 'alice', node: 'n1', hubs: ['system'], heartbeatMs: 25000 };

function note(offset, extra = {}) {
  return { type: 'note/NEW', payload: { offset }, meta: { offset, ...extra } };
}

beforeEach(() => FakeWebSocket.reset());
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

test('a reconnect sends RESUME first with the last inbox offset seen, then rejoins', async () => {
  const client = connect();
  const got = [];
  client.on('note/NEW', (a) => got.push(a.meta.offset));
  FakeWebSocket.last.accept({ ...WELCOME, inbox: 100 });
  assert.equal(client.inbox, 100);
  client.join('acme:orders/1').catch(() => {}); // its JOINED never comes here
  FakeWebSocket.last.receive(note(101));
  FakeWebSocket.last.serverClose(1006);
  await until(() => FakeWebSocket.instances.length === 2);
  const ws = FakeWebSocket.last;
  ws.accept({ ...WELCOME, inbox: 104 });
  assert.deepEqual(ws.sent[0], { type: '@@wsgate/RESUME', payload: { inbox: 101 } });
  assert.equal(ws.sent[1].type, '@@wsgate/JOIN');
  ws.receive({ type: '@@wsgate/RESUMED', payload: { inbox: 104, recovered: true } });
  for (const o of [102, 103, 104, 103]) ws.receive(note(o)); // a repeat is dropped
  assert.deepEqual(got, [101, 102, 103, 104]);
  assert.equal(client.inbox, 104);
});

test('the first connection sends no RESUME; a lost window moves on to the WELCOME offset', async () => {
  const client = connect();
  FakeWebSocket.last.accept({ ...WELCOME, inbox: 10 });
  assert.equal(FakeWebSocket.last.sentOf('@@wsgate/RESUME').length, 0);
  FakeWebSocket.last.serverClose(1006);
  await until(() => FakeWebSocket.instances.length === 2);
  FakeWebSocket.last.accept({ ...WELCOME, inbox: 50 });
  FakeWebSocket.last.receive({ type: '@@wsgate/RESUMED', payload: { inbox: 50, recovered: false } });
  assert.equal(client.inbox, 50);
});

test('an acknowledged action is dispatched once, then ACKed, and a redelivery only ACKed', () => {
  const client = connect();
  const order = [];
  client.on('note/NEW', (a) => order.push(`dispatch ${a.meta.offset}`));
  const ws = FakeWebSocket.last;
  ws.accept({ ...WELCOME, inbox: 10 });
  const send = ws.send.bind(ws);
  ws.send = (data) => {
    const action = JSON.parse(data);
    if (action.type === '@@wsgate/ACK') order.push(`ack ${action.payload.offset}`);
    send(data);
  };
  ws.receive(note(11, { ack: true }));
  ws.receive(note(11, { ack: true })); // sent again: acknowledged again, not dispatched
  assert.deepEqual(order, ['dispatch 11', 'ack 11', 'ack 11']);
  assert.equal(client.inbox, 10); // an ack'd offset never moves the RESUME offset
});

test('a push that arrives before RESUMED is handed over after the replay, in order', async () => {
  // The gateway sends a push made before it read RESUME live, ahead of RESUMED.
  const client = connect();
  const got = [];
  client.on('note/NEW', (a) => got.push(a.meta.offset));
  FakeWebSocket.last.accept({ ...WELCOME, inbox: 100 });
  FakeWebSocket.last.receive(note(101));
  FakeWebSocket.last.serverClose(1006);
  await until(() => FakeWebSocket.instances.length === 2);
  const ws = FakeWebSocket.last;
  ws.accept({ ...WELCOME, inbox: 104 });
  assert.deepEqual(ws.sent[0], { type: '@@wsgate/RESUME', payload: { inbox: 101 } });
  ws.receive(note(105)); // live, before RESUMED
  assert.deepEqual(got, [101]);
  ws.receive({ type: '@@wsgate/RESUMED', payload: { inbox: 104, recovered: true } });
  for (const o of [102, 103, 104]) ws.receive(note(o));
  ws.receive(note(106));
  assert.deepEqual(got, [101, 102, 103, 104, 105, 106]);
  assert.equal(client.inbox, 106);
});

test('with RESUMED {recovered: false} a held push goes on at once', async () => {
  const client = connect();
  const got = [];
  client.on('note/NEW', (a) => got.push(a.meta.offset));
  FakeWebSocket.last.accept({ ...WELCOME, inbox: 100 });
  FakeWebSocket.last.serverClose(1006);
  await until(() => FakeWebSocket.instances.length === 2);
  const ws = FakeWebSocket.last;
  ws.accept({ ...WELCOME, inbox: 150 });
  ws.receive(note(151));
  assert.deepEqual(got, []);
  ws.receive({ type: '@@wsgate/RESUMED', payload: { inbox: 150, recovered: false } });
  assert.deepEqual(got, [151]);
});
