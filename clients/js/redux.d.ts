/** Redux middleware (`redux.js`): the store and the gateway share one stream of actions. */

import type { Action, ClientState } from './wsgate.js';

export interface MiddlewareOptions {
  /** Which actions go to the gateway; default `action.meta?.remote === true`. */
  remote?: (action: any) => boolean;
}

/** What the middleware needs of a client (a `WsgateClient` has it). */
export interface MiddlewareClient {
  dispatch(action: Action): boolean;
  on(pattern: string, handler: (value: any) => void): () => void;
  readonly state?: ClientState | string;
}

/** `@@wsgate/STATUS`: the connection status, dispatched into the store (never sent). */
export interface StatusAction {
  type: '@@wsgate/STATUS';
  payload: { state: ClientState };
}

/** The smallest store API a Redux middleware sees. */
export interface MiddlewareAPI {
  dispatch: (action: any) => any;
  getState?: () => any;
}

export type Middleware = (
  store: MiddlewareAPI,
) => (next: (action: any) => any) => (action: any) => any;

/** The default `remote` test. */
export declare function isRemote(action: any): boolean;

/** Build the middleware for `client`; apply it to one store. */
export declare function wsgateMiddleware(
  client: MiddlewareClient,
  options?: MiddlewareOptions,
): Middleware;
