/**
 * wsgate client (`wsgate.js`): one WebSocket to a wsgate gateway, Redux-style
 * actions both ways, request/reply correlation, channels with presence, and
 * reconnection by close code. See docs/client.md.
 */

import type { Backoff } from './policy.js';
import type { Member } from './presence.js';

export { wsgateMiddleware } from './redux.js';
export type { MiddlewareOptions, MiddlewareClient, StatusAction, Middleware } from './redux.js';
export { DEFAULT_BACKOFF, reconnectDelay, shouldReconnect } from './policy.js';
export type { Backoff } from './policy.js';
export { PresenceBook } from './presence.js';
export type { Member } from './presence.js';
export {
  CloseCodes,
  ErrorCodes,
  GATEWAY_PREFIX,
  SUBPROTOCOL,
  Types,
  WsgateError,
  hubOf,
} from './protocol.js';
export type { ErrorCode } from './protocol.js';

/** A Flux Standard Action. */
export interface Action<P = any> {
  type: string;
  payload?: P;
  meta?: Record<string, any>;
  error?: boolean;
}

/** The WELCOME payload. */
export interface Welcome {
  connectionId: string;
  userId: string;
  node: string;
  hubs: string[];
  heartbeatMs: number;
  /** The user's inbox offset (signed-in users, `[inbox] enabled`). */
  inbox?: number;
  [key: string]: any;
}

/** The JOINED payload. */
export interface JoinedPayload {
  channel: string;
  count: number;
  offset: number;
  members?: Member[];
  /** false: the history after `since` is gone; reload the view's state. */
  recovered?: boolean;
}

export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export declare const States: Readonly<{
  CONNECTING: 'connecting';
  OPEN: 'open';
  RECONNECTING: 'reconnecting';
  CLOSED: 'closed';
}>;

export interface CloseEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
  delayMs?: number;
}

export interface PresenceEvent {
  channel: string;
  members: Member[];
  count: number;
}

/** Client events and the value their handlers get. */
export interface ClientEvents {
  open: undefined;
  welcome: Welcome;
  close: CloseEvent;
  unauthenticated: { signInUrl: string | null };
  presence: PresenceEvent;
  state: ClientState;
  error: Error;
  sessionExpiring: { exp?: number; [key: string]: any };
}

export type EventName = keyof ClientEvents;

export declare const EVENTS: readonly EventName[];

/** Returns the token to connect (or refresh) with. */
export type TokenSource = () =>
  | string
  | null
  | undefined
  | Promise<string | null | undefined>;

/** The WebSocket class the client instantiates. */
export type WebSocketClass = new (url: string, protocols?: string | string[]) => WebSocket;

export interface ClientOptions {
  /** The gateway's URL; default `ws(s)://<location.host>/ws` in a browser. */
  url?: string;
  protocols?: string[];
  reconnect?: boolean;
  backoff?: Backoff;
  WebSocket?: WebSocketClass;
  /** Default reply timeout of `send()` (10000). */
  timeoutMs?: number;
  /** Actions kept while disconnected (256). */
  maxQueue?: number;
  heartbeat?: boolean;
  random?: () => number;
  /** A connection token, sent as the first action `@@wsgate/AUTH {token}`. */
  token?: string;
  /** Asked before every connection's AUTH and on SESSION_EXPIRING (then sent as REFRESH). */
  getToken?: TokenSource;
}

export declare class WsgateClient {
  constructor(options?: ClientOptions);
  readonly state: ClientState;
  readonly url: string;
  readonly welcome: Welcome | null;
  readonly channels: string[];
  presence(channel: string): Member[];
  presenceCount(channel: string): number;
  offset(channel: string): number | undefined;
  /** The last inbox offset seen (what a reconnect sends in RESUME), or undefined. */
  readonly inbox: number | undefined;

  on<E extends EventName>(event: E, handler: (value: ClientEvents[E]) => void): () => void;
  on(typeOrPattern: string, handler: (action: Action) => void): () => void;
  off<E extends EventName>(event: E, handler: (value: ClientEvents[E]) => void): void;
  off(typeOrPattern: string, handler: (action: Action) => void): void;

  send<P = any>(
    type: string,
    payload?: unknown,
    meta?: Record<string, any>,
    options?: { timeoutMs?: number },
  ): Promise<Action<P>>;
  dispatch(action: Action): boolean;
  join(channel: string): Promise<Action<JoinedPayload>>;
  leave(channel: string): Promise<Action<{ channel: string }> | null>;
  navigate(view: string, hub?: string): Promise<Action<JoinedPayload>>;
  /** Send `@@wsgate/REFRESH` with `{token}`, or `{}` after a cookie refresh. */
  refresh(token?: string): boolean;
  ping<P = any>(payload?: P): Promise<Action<P>>;
  connect(): void;
  close(code?: number, reason?: string): void;
}

/** The gateway URL on the page's own host: `ws(s)://<host><path>`. */
export declare function defaultUrl(path?: string): string;

/** Create a client and start connecting. */
export declare function createClient(options?: ClientOptions): WsgateClient;
