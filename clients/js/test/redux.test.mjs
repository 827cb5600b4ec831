import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient, wsgateMiddleware } from '../wsgate.js';
import { FakeWebSocket } from './fake-websocket.mjs';

/** The smallest Redux: enough to run a middleware chain. */
function createStore(reducer, middleware) {
  let state = reducer(undefined, { type: '@@INIT' });
  const store = {
    getState: () => state,
    dispatch: (action) => {
      state = reducer(state, action);
      return action;
    },
  };
  const api = { getState: store.getState, dispatch: (a) => store.dispatch(a) };
  store.dispatch = middleware(api)(store.dispatch);
  return store;
}

const log = (state = [], action) => [...state, action.type];

let client;
beforeEach(() => {
  FakeWebSocket.reset();
  client = createClient({ url: 'ws://gw.test/ws', WebSocket: FakeWebSocket });
  FakeWebSocket.last.accept();
});
afterEach(() => client.close());

test('remote actions go to the gateway (without meta.remote) and to the reducers', () => {
  const store = createStore(log, wsgateMiddleware(client));
  store.dispatch({ type: 'chat/MESSAGE', payload: { text: 'hi' }, meta: { remote: true, channel: 'acme:orders/42' } });
  store.dispatch({ type: 'ui/TOGGLE' });
  const ws = FakeWebSocket.last;
  assert.deepEqual(ws.sentOf('chat/MESSAGE'), [
    { type: 'chat/MESSAGE', payload: { text: 'hi' }, meta: { channel: 'acme:orders/42' } },
  ]);
  assert.equal(ws.sentOf('ui/TOGGLE').length, 0);
  assert.deepEqual(store.getState().slice(-2), ['chat/MESSAGE', 'ui/TOGGLE']);
});

test('actions from the gateway are dispatched into the store and never sent back', () => {
  const store = createStore(log, wsgateMiddleware(client, { remote: (a) => a.type.startsWith('chat/') }));
  const ws = FakeWebSocket.last;
  ws.receive({ type: 'chat/MESSAGE', payload: { text: 'yo' }, meta: { channel: 'acme:orders/42', from: { userId: 'bob', connectionId: 'n1.b' } } });
  assert.deepEqual(store.getState().slice(-1), ['chat/MESSAGE']);
  assert.equal(ws.sentOf('chat/MESSAGE').length, 0);
  store.dispatch({ type: 'chat/MESSAGE', payload: { text: 'mine' } });
  assert.equal(ws.sentOf('chat/MESSAGE').length, 1);
});

test('connection status reaches the store as @@wsgate/STATUS actions, never the gateway', async () => {
  FakeWebSocket.reset();
  const fresh = createClient({ url: 'ws://gw.test/ws', WebSocket: FakeWebSocket, backoff: { minMs: 1, maxMs: 1 } });
  const statuses = (state = [], action) =>
    action.type === '@@wsgate/STATUS' ? [...state, action.payload.state] : state;
  const store = createStore(statuses, wsgateMiddleware(fresh, { remote: () => true }));
  await Promise.resolve(); // the current state is dispatched after the middleware is built
  assert.deepEqual(store.getState(), ['connecting']);
  const ws = FakeWebSocket.last;
  ws.accept();
  ws.serverClose(1012);
  fresh.close();
  assert.deepEqual(store.getState(), ['connecting', 'open', 'reconnecting', 'closed']);
  assert.equal(ws.sentOf('@@wsgate/STATUS').length, 0);
});
