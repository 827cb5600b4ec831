/**
 * Redux middleware: the store and the gateway share one stream of actions.
 *
 * - An action for which `remote(action)` is true is sent to the gateway
 *   (`client.dispatch`, with `meta.remote` stripped) and then passed on to
 *   the next middleware, so local reducers see it too (optimistic updates).
 * - Every action received from the gateway is dispatched into the store. An
 *   action that came from the gateway is never sent back, whatever `remote`
 *   says of it.
 * - The connection status is dispatched as `@@wsgate/STATUS {state}`: the
 *   client's state when the middleware is applied (after a microtask, since
 *   Redux forbids dispatching while middleware is built), then every change.
 *   It is the store's, never sent to the gateway.
 *
 * ```js
 * import { createStore, applyMiddleware } from 'redux';
 * import { createClient, wsgateMiddleware } from '/js/wsgate.js';
 * const client = createClient();
 * const store = createStore(reducer, applyMiddleware(wsgateMiddleware(client)));
 * store.dispatch({ type: 'chat/MESSAGE', payload: { text: 'hi' },
 *                  meta: { remote: true, channel: 'acme:orders/42' } });
 * ```
 *
 * @module wsgate/redux
 */

import { Types as T } from './protocol.js';

/**
 * @typedef {object} MiddlewareOptions
 * @property {(action: any) => boolean} [remote]  which actions go to the
 *   gateway; default: `action.meta?.remote === true`
 */

/**
 * The default `remote` test.
 *
 * @param {any} action
 * @returns {boolean}
 */
export function isRemote(action) {
  return action?.meta?.remote === true;
}

/**
 * Build the middleware for `client` (a {@link import('./wsgate.js').WsgateClient}).
 * Apply it to one store: each store it is applied to receives every action
 * from the gateway.
 *
 * @param {{dispatch: (action: any) => boolean, on: (p: string, h: (a: any) => void) => () => void, state?: string}} client
 * @param {MiddlewareOptions} [options]
 * @returns {(store: {dispatch: (action: any) => any}) => (next: (action: any) => any) => (action: any) => any}
 */
export function wsgateMiddleware(client, { remote = isRemote } = {}) {
  return (store) => {
    /** Actions that came from the gateway: never sent back. */
    const received = new WeakSet();
    client.on('*', (action) => {
      received.add(action);
      store.dispatch(action);
    });
    /** @param {string} state */
    const status = (state) => {
      const action = { type: T.STATUS, payload: { state } };
      received.add(action);
      store.dispatch(action);
    };
    const initial = client.state;
    let changed = false;
    client.on('state', (state) => {
      changed = true;
      status(state);
    });
    if (initial !== undefined) {
      queueMicrotask(() => {
        if (!changed) status(initial);
      });
    }
    return (next) => (action) => {
      if (action && typeof action === 'object' && !received.has(action) && remote(action)) {
        client.dispatch(withoutRemoteFlag(action));
      }
      return next(action);
    };
  };
}

/**
 * The action as it goes on the wire: `meta.remote` is the store's business.
 *
 * @param {any} action
 * @returns {any}
 */
function withoutRemoteFlag(action) {
  if (!action.meta || !('remote' in action.meta)) return action;
  const { remote: _remote, ...meta } = action.meta;
  return { ...action, meta };
}
