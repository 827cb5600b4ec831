/**
 * wsgate client: one WebSocket to a wsgate gateway, Redux-style actions both
 * ways, request/reply correlation, channels with presence, and reconnection
 * by close code (wire protocol v1, `docs/client.md`).
 *
 * An ES module with no dependencies and no build step: it runs in browsers and
 * in any runtime with a global `WebSocket` (Node ≥ 22), or with the `WebSocket`
 * option.
 *
 * ```js
 * import { createClient } from '/js/wsgate.js';
 * const client = createClient();            // ws(s)://<this host>/ws
 * client.on('orders/*', (action) => render(action));
 * await client.navigate('orders/42');        // joins <my org>:orders/42
 * const reply = await client.send('orders/GET', { id: 42 });
 * ```
 *
 * Lifecycle: `createClient()` connects at once (`state` is `connecting`);
 * `open` fires when the socket opens (channels are rejoined and queued
 * actions flushed then), `welcome` when the gateway's WELCOME arrives.
 * With a `token` or `getToken` (token auth: browsers cannot set headers), the
 * first frame of every connection is `@@wsgate/AUTH {token}` and the rejoins,
 * the queued actions and `open` wait for WELCOME; `@@wsgate/SESSION_EXPIRING`
 * is answered with `@@wsgate/REFRESH {token}` from `getToken`.
 * On a close, `close` fires with `{code, reason, willReconnect, delayMs}`
 * and the client waits (`reconnecting`) or stops (`closed`); `connect()`
 * starts a stopped client again, `close()` stops it for good.
 *
 * @module wsgate
 */

import { DEFAULT_BACKOFF, reconnectDelay } from './policy.js';
import { HandlerSet } from './handlers.js';
import { Liveness } from './liveness.js';
import { PresenceBook } from './presence.js';
import { RequestTable } from './requests.js';
import {
  CloseCodes,
  ErrorCodes as E,
  SUBPROTOCOL,
  Types as T,
  WsgateError,
  hubOf,
} from './protocol.js';

export { wsgateMiddleware } from './redux.js';
export { DEFAULT_BACKOFF, reconnectDelay, shouldReconnect } from './policy.js';
export { PresenceBook } from './presence.js';
export {
  CloseCodes,
  ErrorCodes,
  GATEWAY_PREFIX,
  SUBPROTOCOL,
  Types,
  WsgateError,
  hubOf,
} from './protocol.js';

/**
 * @typedef {object} Action  a Flux Standard Action
 * @property {string} type
 * @property {any} [payload]
 * @property {Record<string, any>} [meta]
 * @property {boolean} [error]
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [url]  the gateway's WebSocket URL; default
 *   `ws(s)://<location.host>/ws` in a browser
 * @property {string[]} [protocols=['wsgate.v1.json']]
 * @property {boolean} [reconnect=true]  reconnect after closes that allow it
 * @property {import('./policy.js').Backoff} [backoff]  `{minMs, maxMs, laterMs}`
 * @property {typeof WebSocket} [WebSocket]  the WebSocket class (default: the global one)
 * @property {number} [timeoutMs=10000]  default reply timeout of `send()`
 * @property {number} [maxQueue=256]  actions kept while disconnected; past it
 *   `send()` rejects with `QUEUE_FULL` and `dispatch()` returns false
 * @property {boolean} [heartbeat=true]  send a PING after `heartbeatMs` (from
 *   WELCOME) without traffic, and reconnect when nothing comes back
 * @property {() => number} [random=Math.random]  jitter source (tests)
 * @property {string} [token]  a connection token (JWT), sent as the first
 *   action `@@wsgate/AUTH {token}` of every connection
 * @property {() => string | null | undefined | Promise<string | null | undefined>} [getToken]
 *   asked for the token before every connection's AUTH and on
 *   `@@wsgate/SESSION_EXPIRING` (then sent as `@@wsgate/REFRESH {token}`);
 *   takes precedence over `token`
 */

/**
 * @typedef {object} CloseEvent
 * @property {number} code
 * @property {string} reason
 * @property {boolean} willReconnect
 * @property {number} [delayMs]  when the next attempt starts, if any
 */

/** Client states, as `client.state` reports them. */
/** At most this many handled `meta.ack` offsets are remembered for de-duplication. */
const HANDLED_MAX = 1024;
/** At most this many pushes are held while a RESUME is answered; past it they go at once. */
const HELD_MAX = 1024;

export const States = Object.freeze({
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

/** Names `on()` treats as client events rather than action types. */
export const EVENTS = Object.freeze([
  'open',
  'welcome',
  'close',
  'unauthenticated',
  'presence',
  'state',
  'error',
  'sessionExpiring',
]);
const EVENT_SET = new Set(EVENTS);

/**
 * The gateway URL on the page's own host: `ws(s)://<host><path>`.
 *
 * @param {string} [path='/ws']
 * @returns {string}
 */
export function defaultUrl(path = '/ws') {
  const loc = globalThis.location;
  if (!loc) throw new TypeError('no url given and no location to build it from');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}${path}`;
}

/**
 * Create a client and start connecting. Handlers added right after this
 * call miss nothing: the socket's events come later, from the event loop.
 *
 * @param {ClientOptions} [options]
 * @returns {WsgateClient}
 */
export function createClient(options = {}) {
  return new WsgateClient(options);
}

/**
 * @typedef {object} ChannelEntry  a channel this client wants to be in
 * @property {string} channel
 * @property {number | undefined} offset  last `meta.offset` seen (the next `since`)
 * @property {boolean} view  joined by NAVIGATE: the current view of its hub
 * @property {boolean} serverView  NAVIGATE'd on the current socket, so the
 *   gateway will leave it on the next NAVIGATE in that hub
 * @property {boolean} inFlight  a JOIN is waiting for its answer
 * @property {{resolve: (a: Action) => void, reject: (e: Error) => void}[]} waiters
 */

export class WsgateClient {
  // Settings
  #url;
  #protocols;
  #reconnect;
  #backoff;
  #WebSocket;
  #timeoutMs;
  #maxQueue;
  #heartbeat;
  #random;
  #token;
  #getToken;

  // Connection
  /** @type {WebSocket | null} */
  #ws = null;
  #state = States.CLOSED;
  /** Failed attempts since the last WELCOME; drives the backoff. */
  #attempt = 0;
  #retryTimer = null;
  #liveness = new Liveness({
    ping: () => this.#transmit(JSON.stringify({ type: T.PING, payload: null })),
    dead: () => this.#dropDead(),
  });
  /** The payload of an ERROR when it is the last frame received (before a close). */
  #lastError = null;
  /** @type {Record<string, any> | null} */
  #welcome = null;
  /** The last inbox `meta.offset` seen (WELCOME's at first): a reconnect RESUMEs from it. */
  #inbox = undefined;
  /** Offsets of `meta.ack` actions handled, oldest first (at most HANDLED_MAX): a
   * redelivery of one is acknowledged again, never handed to the application twice. */
  #handled = new Set();
  /** The offset RESUME was sent from on this connection (undefined: none sent). */
  #resumeFrom = undefined;
  /** WELCOME's inbox offset while RESUMED and its replay (up to it) are not all in. */
  #resumeAt = undefined;
  /** RESUMED arrived for #resumeAt: the replay frames follow it. */
  #resumed = false;
  /**
   * Inbox actions past #resumeAt that came before the replay ended (the gateway sends a
   * push made before it read RESUME live, ahead of RESUMED): handed over after the
   * replay, in order (at most HELD_MAX).
   * @type {Array<[Action, number]>}
   */
  #held = [];
  /** Token auth: AUTH was sent on the current socket; rejoins wait for WELCOME. */
  #awaitingWelcome = false;
  /** A REFRESH is being prepared (one at a time). */
  #refreshing = false;

  // Requests
  #seq = 0;
  #requests = new RequestTable();
  /** @type {{frame: string, req?: import('./requests.js').Request}[]} */
  #queue = [];

  // Channels
  /** @type {Map<string, ChannelEntry>} */
  #channels = new Map();
  #presence = new PresenceBook();
  /** NAVIGATE request id -> the hub it named (undefined: the default hub). */
  #navigations = new Map();
  /** The hub NAVIGATE uses without `hub` (the active organization), once seen. */
  #defaultHub = undefined;

  // Handlers
  #actions = new HandlerSet();
  #events = new HandlerSet();
  /** Built-in actions the client itself reads, by type. */
  #builtins = new Map([
    [T.WELCOME, (a) => this.#onWelcome(a)],
    [T.RESUMED, (a) => this.#onResumed(a)],
    [T.JOINED, (a) => this.#onJoined(a)],
    [T.LEFT, (a) => this.#onLeft(a)],
    [T.PRESENCE, (a) => this.#onPresence(a)],
    [T.ERROR, (a) => this.#onError(a)],
    [T.SESSION_EXPIRING, (a) => this.#onSessionExpiring(a)],
  ]);

  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    const {
      url,
      protocols = [SUBPROTOCOL],
      reconnect = true,
      backoff = {},
      WebSocket: impl = globalThis.WebSocket,
      timeoutMs = 10000,
      maxQueue = 256,
      heartbeat = true,
      random = Math.random,
      token,
      getToken,
    } = options;
    if (typeof impl !== 'function') {
      throw new TypeError('no WebSocket class: pass one as the WebSocket option');
    }
    this.#url = url ?? defaultUrl();
    this.#protocols = protocols;
    this.#reconnect = reconnect;
    this.#backoff = { ...DEFAULT_BACKOFF, ...backoff };
    this.#WebSocket = impl;
    this.#timeoutMs = timeoutMs;
    this.#maxQueue = maxQueue;
    this.#heartbeat = heartbeat;
    this.#random = random;
    this.#token = token;
    this.#getToken = getToken;
    this.#open();
  }

  // ---------------------------------------------------------------- state

  /** `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this.#state;
  }

  /** The gateway URL. */
  get url() {
    return this.#url;
  }

  /** The last WELCOME payload `{connectionId, userId, node, hubs, heartbeatMs}`, or null. */
  get welcome() {
    return this.#welcome;
  }

  /** The channels this client is in (or will rejoin), by address. */
  get channels() {
    return [...this.#channels.keys()];
  }

  /**
   * The members of a joined channel, from JOINED and PRESENCE.
   *
   * @param {string} channel
   * @returns {import('./presence.js').Member[]}
   */
  presence(channel) {
    return this.#presence.members(channel);
  }

  /**
   * How many members a joined channel has (also past the size threshold,
   * where `presence()` is empty).
   *
   * @param {string} channel
   * @returns {number}
   */
  presenceCount(channel) {
    return this.#presence.count(channel);
  }

  /**
   * The last `meta.offset` seen in `channel` (what a rejoin passes as `since`).
   *
   * @param {string} channel
   * @returns {number | undefined}
   */
  offset(channel) {
    return this.#channels.get(channel)?.offset;
  }

  /** The last inbox offset seen (what a reconnect sends in RESUME), or undefined. */
  get inbox() {
    return this.#inbox;
  }

  // ------------------------------------------------------------- handlers

  /**
   * Subscribe to received actions by type pattern (`orders/UPDATE`,
   * `orders/*`, `*`) or to a client event (`open`, `welcome`, `close`,
   * `unauthenticated`, `presence`, `state`, `error`).
   *
   * @param {string} typeOrPattern
   * @param {(value: any) => void} handler
   * @returns {() => void} unsubscribes
   */
  on(typeOrPattern, handler) {
    this.#table(typeOrPattern).add(typeOrPattern, handler);
    return () => this.off(typeOrPattern, handler);
  }

  /**
   * Remove a handler added with `on()`.
   *
   * @param {string} typeOrPattern
   * @param {(value: any) => void} handler
   */
  off(typeOrPattern, handler) {
    this.#table(typeOrPattern).remove(typeOrPattern, handler);
  }

  // ------------------------------------------------------------- outbound

  /**
   * Send an action and wait for its answer: the first action carrying
   * `meta.inReplyTo` equal to its `meta.id` (which this sets unless given).
   *
   * Rejects with a {@link WsgateError}: the gateway's code for an error
   * answer (`@@wsgate/ERROR` or any `error: true` action), `TIMEOUT` after
   * `timeoutMs`, `DISCONNECTED` when the socket closed after sending,
   * `QUEUE_FULL` or `CLOSED`. While disconnected the action is queued.
   *
   * @param {string} type
   * @param {any} [payload]
   * @param {Record<string, any>} [meta]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<Action>}
   */
  send(type, payload, meta = {}, options = {}) {
    if (this.#state === States.CLOSED) {
      return Promise.reject(new WsgateError(E.CLOSED, 'the client is closed'));
    }
    const id = meta.id ?? this.#nextId();
    const frame = JSON.stringify({ type, payload, meta: { ...meta, id } });
    const { request, answer } = this.#requests.add(id, type, options.timeoutMs ?? this.#timeoutMs);
    if (!this.#transmit(frame, request)) {
      this.#requests.settle(id, new WsgateError(E.QUEUE_FULL, 'too many actions queued'));
    }
    return answer;
  }

  /**
   * Send an action without waiting for anything (queued while disconnected).
   *
   * @param {Action} action
   * @returns {boolean} false when the client is closed or the queue is full
   */
  dispatch(action) {
    if (!action || typeof action.type !== 'string') {
      throw new TypeError('an action needs a string type');
    }
    if (this.#state === States.CLOSED) return false;
    return this.#transmit(JSON.stringify(action));
  }

  /**
   * Join a channel (`<hub>:<view>`). The client rejoins it after every
   * reconnect, with `since` = the last `meta.offset` seen in it. Resolves
   * with the JOINED action; rejects when the gateway refuses (the channel
   * is then forgotten). While disconnected it waits for the next connection.
   *
   * @param {string} channel
   * @returns {Promise<Action>}
   */
  join(channel) {
    if (this.#state === States.CLOSED) {
      return Promise.reject(new WsgateError(E.CLOSED, 'the client is closed'));
    }
    const entry = this.#entry(channel);
    const joined = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
    if (this.#state === States.OPEN && !entry.inFlight) this.#joinNow(entry);
    return joined;
  }

  /**
   * Leave a channel; it is forgotten at once (no rejoin, no presence).
   * Resolves with the LEFT action, or null when the connection is (or
   * goes) away — a closed connection is in no channel.
   *
   * @param {string} channel
   * @returns {Promise<Action | null>}
   */
  leave(channel) {
    this.#forget(channel);
    if (this.#state !== States.OPEN) return Promise.resolve(null);
    return this.send(T.LEAVE, { channel }).catch((err) => {
      if (err.code === E.DISCONNECTED || err.code === E.CLOSED) return null;
      throw err;
    });
  }

  /**
   * Open an application view: the gateway leaves this connection's current
   * view in `hub` (default: the active organization) and joins
   * `<hub>:<view>`. Resolves with the JOINED action (its `payload.channel`
   * is the address joined).
   *
   * @param {string} view  e.g. `orders/42`
   * @param {string} [hub]
   * @returns {Promise<Action>}
   */
  navigate(view, hub) {
    const key = hub ?? this.#defaultHub;
    const previous = key === undefined ? undefined : this.#viewIn(key);
    if (previous && !previous.serverView) {
      // Rejoined with JOIN after a reconnect: the gateway does not know it as
      // this connection's view, so NAVIGATE would not leave it. Leave it here.
      this.#forget(previous.channel);
      if (this.#state === States.OPEN) {
        this.dispatch({ type: T.LEAVE, payload: { channel: previous.channel } });
      }
    }
    const id = this.#nextId();
    this.#navigations.set(id, hub);
    const done = () => this.#navigations.delete(id);
    const reply = this.send(T.NAVIGATE, hub === undefined ? { view } : { view, hub }, { id });
    reply.then(done, done);
    return reply;
  }

  /**
   * Send `@@wsgate/REFRESH`: `{token}`, or `{}` after the page refreshed its
   * session cookie (the cookie path of session refresh). SESSION_EXPIRING
   * calls this with `getToken`'s token by itself.
   *
   * @param {string} [token]
   * @returns {boolean} false when the client is closed or the queue is full
   */
  refresh(token) {
    return this.dispatch({ type: T.REFRESH, payload: token === undefined ? {} : { token } });
  }

  /**
   * Round trip to the gateway: resolves with the PONG action.
   *
   * @param {any} [payload]
   * @returns {Promise<Action>}
   */
  ping(payload = null) {
    return this.send(T.PING, payload);
  }

  // ------------------------------------------------------------ lifecycle

  /** Connect again after the client stopped (`state` is `closed`); no-op otherwise. */
  connect() {
    if (this.#state !== States.CLOSED) return;
    this.#attempt = 0;
    this.#open();
  }

  /**
   * Close for good: no reconnect, pending requests reject with `CLOSED`,
   * channels are forgotten.
   *
   * @param {number} [code=1000]
   * @param {string} [reason='']
   */
  close(code = CloseCodes.NORMAL, reason = '') {
    const ws = this.#ws;
    const was = this.#state;
    this.#detach();
    this.#clearRetry();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    this.#setState(States.CLOSED);
    this.#failAll(new WsgateError(E.CLOSED, 'the client was closed'));
    this.#channels.clear();
    this.#presence.clear();
    if (was !== States.CLOSED) {
      this.#events.emit('close', { code, reason, willReconnect: false });
    }
  }

  // ------------------------------------------------------------ internals

  #open() {
    this.#clearRetry();
    this.#setState(States.CONNECTING);
    let ws;
    try {
      ws = new this.#WebSocket(this.#url, this.#protocols);
    } catch (err) {
      // A bad URL or protocol list: retrying will not help.
      this.#setState(States.CLOSED);
      this.#failAll(new WsgateError(E.CLOSED, `cannot connect: ${err}`));
      this.#events.emit('error', err);
      return;
    }
    this.#ws = ws;
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (event) => this.#onMessage(ws, event.data);
    ws.onclose = (event) => this.#onClose(ws, event.code, event.reason ?? '');
    ws.onerror = () => {}; // a close event always follows
  }

  /** @param {WebSocket} ws */
  #onOpen(ws) {
    if (ws !== this.#ws) return;
    if (this.#getToken || this.#token !== undefined) this.#authenticate(ws);
    else this.#ready(ws);
  }

  /**
   * Token auth: send AUTH first; `#ready` runs at WELCOME. A `getToken` that
   * fails drops the socket as a 1006 (backoff, then a new attempt).
   *
   * @param {WebSocket} ws
   */
  #authenticate(ws) {
    Promise.resolve()
      .then(() => (this.#getToken ? this.#getToken() : this.#token))
      .then(
        (token) => {
          if (ws !== this.#ws) return;
          this.#awaitingWelcome = true;
          ws.send(JSON.stringify({ type: T.AUTH, payload: { token } }));
        },
        (err) => {
          if (ws !== this.#ws) return;
          this.#events.emit('error', new WsgateError(E.CLOSED, `getToken failed: ${err}`));
          this.#onClose(ws, CloseCodes.ABNORMAL, 'getToken failed');
          try {
            ws.close();
          } catch {
            // already closing
          }
        },
      );
  }

  /**
   * The connection may carry actions: rejoin every channel, then flush the queue.
   *
   * @param {WebSocket} ws
   */
  #ready(ws) {
    this.#setState(States.OPEN);
    // RESUME must be the connection's first action (it may precede WELCOME: it waits).
    this.#held = []; // a connection's held pushes are replayed to the next one
    this.#resumeAt = undefined;
    this.#resumed = false;
    this.#resumeFrom = this.#inbox;
    if (this.#inbox !== undefined) {
      ws.send(JSON.stringify({ type: T.RESUME, payload: { inbox: this.#inbox } }));
    }
    for (const entry of this.#channels.values()) {
      if (!entry.inFlight) this.#joinNow(entry);
    }
    for (const { frame, req } of this.#queue.splice(0)) {
      if (req?.done) continue;
      ws.send(frame);
      if (req) req.sent = true;
    }
    this.#events.emit('open', undefined);
  }

  /**
   * @param {WebSocket} ws
   * @param {unknown} data
   */
  #onMessage(ws, data) {
    if (ws !== this.#ws) return;
    this.#liveness.received();
    let action;
    try {
      action = JSON.parse(String(data));
    } catch {
      this.#events.emit('error', new WsgateError(E.BAD_REQUEST, 'the gateway sent a non-JSON frame'));
      return;
    }
    if (!action || typeof action.type !== 'string') return;
    this.#lastError = action.type === T.ERROR ? (action.payload ?? {}) : null;
    const meta = action.meta ?? {};
    if (typeof meta.channel === 'string' && typeof meta.offset === 'number' && !isBuiltin(action)) {
      this.#seen(meta.channel, meta.offset);
    } else if (typeof meta.offset === 'number' && meta.channel === undefined && !isBuiltin(action)) {
      this.#fromInbox(ws, action, meta.offset, meta.ack === true);
      return;
    }
    if (this.#resumed && action.type !== T.RESUMED) this.#releaseHeld(); // the replay is over
    if (action.type === T.ERROR && meta.inReplyTo === undefined && this.#resumeAt !== undefined && !this.#resumed) {
      this.#releaseHeld(); // the RESUME was refused: no replay comes
    }
    this.#builtins.get(action.type)?.(action);
    // A NAVIGATE is answered by the LEFT of the hub's old view and then its
    // JOINED (or an ERROR), all with its id: the JOINED settles it.
    const navigationLeft = action.type === T.LEFT && this.#navigations.has(meta.inReplyTo);
    if (typeof meta.inReplyTo === 'string' && !navigationLeft) {
      this.#requests.settle(meta.inReplyTo, action.error === true ? errorOf(action) : action);
    }
    this.#actions.emit(action.type, action);
  }

  /**
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  #onClose(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#detach();
    for (const entry of this.#channels.values()) entry.serverView = false;
    this.#requests.rejectSent(new WsgateError(E.DISCONNECTED, `connection closed (${code})`));
    const lastError = this.#lastError;
    this.#lastError = null;
    const delayMs = this.#reconnect
      ? reconnectDelay(code, this.#attempt, this.#backoff, {
          retryAfterMs: lastError?.retryAfterMs,
          random: this.#random,
        })
      : null;
    const willReconnect = delayMs !== null;
    if (willReconnect) {
      this.#attempt += 1;
      this.#setState(States.RECONNECTING);
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.#open();
      }, delayMs);
    } else {
      this.#setState(States.CLOSED);
      this.#failAll(new WsgateError(E.CLOSED, `connection closed (${code}), not reconnecting`));
    }
    this.#events.emit('close', { code, reason, willReconnect, delayMs: delayMs ?? undefined });
    if (code === CloseCodes.UNAUTHENTICATED) {
      this.#events.emit('unauthenticated', { signInUrl: lastError?.signInUrl ?? null });
    }
  }

  /**
   * An inbox action (or an acknowledged one to this connection): hand it to the
   * application once, then ACK it when it asked for that. A repeat (an offset at or
   * below the last seen, or a handled `meta.ack` one) is dropped, an ack'd one ACKed again.
   * Only an action without `meta.ack` moves the RESUME offset: an ack'd one may be a
   * connection's (offsets of another sequence), and one of the inbox replayed again is
   * dropped here as handled.
   *
   * @param {WebSocket} ws
   * @param {Action} action
   * @param {number} offset
   * @param {boolean} ack
   */
  #fromInbox(ws, action, offset, ack) {
    const at = this.#resumeAt;
    if (at !== undefined && !ack) {
      if (offset > at) { // live, not replayed
        if (!this.#resumed && this.#held.length < HELD_MAX) {
          this.#held.push([action, offset]);
          return;
        }
        this.#releaseHeld(); // after RESUMED: the replay is over
      } else if (this.#resumed && offset >= at) { // the replay's last
        this.#hand(action, offset);
        this.#releaseHeld();
        return;
      }
    }
    if (!ack) {
      this.#hand(action, offset);
      return;
    }
    const repeat = this.#handled.has(offset);
    if (!repeat) {
      this.#actions.emit(action.type, action);
      this.#handled.add(offset);
      if (this.#handled.size > HANDLED_MAX) this.#handled.delete(this.#handled.values().next().value);
    }
    ws.send(JSON.stringify({ type: T.ACK, payload: { offset } }));
  }

  /** @param {Action} action */
  #onResumed(action) {
    const { inbox, recovered } = action.payload ?? {};
    // The window is gone: what follows starts after the WELCOME's offset.
    if (recovered === false && typeof inbox === 'number' && (this.#inbox ?? 0) < inbox) this.#inbox = inbox;
    if (this.#resumeAt === undefined) return;
    this.#resumed = true;
    if ((this.#inbox ?? 0) >= this.#resumeAt) this.#releaseHeld(); // nothing (more) to replay
  }

  /** RESUME sent and WELCOME read: from here, hold live pushes until the replay is in. */
  #expectReplay() {
    const at = this.#welcome?.inbox;
    if (this.#resumeFrom !== undefined && typeof at === 'number' && at > this.#resumeFrom) this.#resumeAt = at;
  }

  /**
   * An inbox action without `meta.ack`: to the application unless a repeat.
   * @param {Action} action
   * @param {number} offset
   */
  #hand(action, offset) {
    if (this.#inbox !== undefined && offset <= this.#inbox) return;
    this.#inbox = offset;
    this.#actions.emit(action.type, action);
  }

  /** The RESUME is answered: hand the held pushes over, in order. */
  #releaseHeld() {
    const held = this.#held;
    this.#held = [];
    this.#resumeAt = undefined;
    this.#resumed = false;
    for (const [action, offset] of held) this.#hand(action, offset);
  }

  /** @param {Action} action */
  #onWelcome(action) {
    this.#welcome = action.payload ?? {};
    if (this.#inbox === undefined && typeof this.#welcome.inbox === 'number') this.#inbox = this.#welcome.inbox;
    this.#attempt = 0;
    if (this.#heartbeat) this.#liveness.start(Number(this.#welcome.heartbeatMs));
    if (this.#awaitingWelcome && this.#ws) {
      this.#awaitingWelcome = false;
      this.#ready(this.#ws);
    }
    this.#expectReplay(); // after #ready: RESUME may have gone out before or just now
    this.#events.emit('welcome', this.#welcome);
  }

  /** @param {Action} action */
  #onJoined(action) {
    const { channel, members, count, offset, recovered } = action.payload ?? {};
    if (typeof channel !== 'string') return;
    const entry = this.#entry(channel);
    const replyTo = action.meta?.inReplyTo;
    if (this.#navigations.has(replyTo)) {
      // The gateway left this connection's previous view in the hub.
      const hub = hubOf(channel);
      if (this.#navigations.get(replyTo) === undefined) this.#defaultHub = hub;
      const previous = this.#viewIn(hub);
      if (previous && previous !== entry) this.#forget(previous.channel);
      entry.view = true;
      entry.serverView = true;
    }
    // With `since` accepted, missed actions follow and advance the offset.
    if ((entry.offset === undefined || recovered === false) && typeof offset === 'number') {
      entry.offset = offset;
    }
    this.#presence.reset(channel, members, typeof count === 'number' ? count : (members?.length ?? 0));
    this.#emitPresence(channel);
  }

  /** @param {Action} action */
  #onLeft(action) {
    // An answer to leave() changes nothing: the channel was forgotten then
    // (and may have been joined again since). Only a server-side removal counts.
    if (action.meta?.inReplyTo === undefined && typeof action.payload?.channel === 'string') {
      this.#forget(action.payload.channel);
    }
  }

  /** @param {Action} action */
  #onPresence(action) {
    const { channel, joined, left, count } = action.payload ?? {};
    if (typeof channel === 'string' && this.#presence.apply(channel, joined, left, count)) {
      this.#emitPresence(channel);
    }
  }

  /**
   * The credential expires soon: tell the app, and REFRESH with `getToken`'s token.
   *
   * @param {Action} action
   */
  #onSessionExpiring(action) {
    this.#events.emit('sessionExpiring', action.payload ?? {});
    if (!this.#getToken || this.#refreshing) return;
    this.#refreshing = true;
    Promise.resolve()
      .then(() => this.#getToken())
      .then(
        (token) => {
          if (typeof token === 'string') this.refresh(token);
        },
        (err) => this.#events.emit('error', new WsgateError(E.CLOSED, `getToken failed: ${err}`)),
      )
      .finally(() => {
        this.#refreshing = false;
      });
  }

  /** @param {Action} action */
  #onError(action) {
    const replyTo = action.meta?.inReplyTo;
    if (typeof replyTo !== 'string' || !this.#requests.has(replyTo)) {
      this.#events.emit('error', errorOf(action));
    }
  }

  /** @param {ChannelEntry} entry */
  #joinNow(entry) {
    entry.inFlight = true;
    const payload = entry.offset === undefined
      ? { channel: entry.channel }
      : { channel: entry.channel, since: entry.offset };
    this.send(T.JOIN, payload).then(
      (action) => {
        entry.inFlight = false;
        for (const w of entry.waiters.splice(0)) w.resolve(action);
      },
      (err) => {
        entry.inFlight = false;
        if (err.code === E.DISCONNECTED) return; // rejoined on the next connection
        if (err.action && this.#channels.get(entry.channel) === entry) {
          this.#forget(entry.channel, err); // refused by the gateway
          return;
        }
        const waiters = entry.waiters.splice(0);
        for (const w of waiters) w.reject(err);
        if (waiters.length === 0 && err.code !== E.CLOSED) this.#events.emit('error', err);
      },
    );
  }

  /**
   * The entry of `channel`, created when missing.
   *
   * @param {string} channel
   * @returns {ChannelEntry}
   */
  #entry(channel) {
    let entry = this.#channels.get(channel);
    if (!entry) {
      entry = { channel, offset: undefined, view: false, serverView: false, inFlight: false, waiters: [] };
      this.#channels.set(channel, entry);
    }
    return entry;
  }

  /**
   * The current NAVIGATE view channel in `hub`, if any.
   *
   * @param {string} hub
   * @returns {ChannelEntry | undefined}
   */
  #viewIn(hub) {
    for (const entry of this.#channels.values()) {
      if (entry.view && hubOf(entry.channel) === hub) return entry;
    }
    return undefined;
  }

  /**
   * Stop tracking `channel`: no rejoin, no presence. Its join waiters reject
   * with `reason` (or a `LEFT` error); refusals with no waiter go to `error`.
   *
   * @param {string} channel
   * @param {WsgateError} [reason]
   * @returns {boolean} whether it was tracked
   */
  #forget(channel, reason) {
    const entry = this.#channels.get(channel);
    if (!entry) return false;
    this.#channels.delete(channel);
    this.#presence.drop(channel);
    const waiters = entry.waiters.splice(0);
    const err = reason ?? new WsgateError('LEFT', `left ${channel}`);
    for (const w of waiters) w.reject(err);
    if (reason && waiters.length === 0) this.#events.emit('error', reason);
    this.#emitPresence(channel);
    return true;
  }

  /**
   * @param {string} channel
   * @param {number} offset
   */
  #seen(channel, offset) {
    const entry = this.#channels.get(channel);
    if (entry && (entry.offset === undefined || offset > entry.offset)) entry.offset = offset;
  }

  /** @param {string} channel */
  #emitPresence(channel) {
    this.#events.emit('presence', {
      channel,
      members: this.#presence.members(channel),
      count: this.#presence.count(channel),
    });
  }

  /**
   * Write `frame` now, or queue it until the next open.
   *
   * @param {string} frame
   * @param {import('./requests.js').Request} [req]
   * @returns {boolean} false when the queue is full
   */
  #transmit(frame, req) {
    if (this.#state === States.OPEN && this.#ws) {
      this.#ws.send(frame);
      if (req) req.sent = true;
      return true;
    }
    if (this.#queue.length >= this.#maxQueue) return false;
    this.#queue.push({ frame, req });
    return true;
  }

  /** Reject every request and join waiter, and drop the queue. @param {WsgateError} err */
  #failAll(err) {
    this.#requests.rejectAll(err);
    this.#queue.length = 0;
    for (const entry of this.#channels.values()) {
      entry.inFlight = false;
      for (const w of entry.waiters.splice(0)) w.reject(err);
    }
  }

  /** Forget the current socket (its late events are ignored). */
  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    this.#awaitingWelcome = false;
    this.#liveness.stop();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
    }
  }

  /** The liveness watch gave up on the socket: close it as a 4408 and reconnect. */
  #dropDead() {
    const ws = this.#ws;
    if (!ws) return;
    this.#onClose(ws, CloseCodes.HEARTBEAT_TIMEOUT, 'no answer to ping');
    try {
      ws.close(CloseCodes.HEARTBEAT_TIMEOUT, 'no answer to ping');
    } catch {
      // already closing
    }
  }

  #clearRetry() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  /** @param {string} state */
  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#events.emit('state', state);
  }

  /** @returns {string} a correlation id, unique on this client */
  #nextId() {
    this.#seq += 1;
    return `c${this.#seq}`;
  }

  /**
   * @param {string} name
   * @returns {HandlerSet<any>}
   */
  #table(name) {
    return EVENT_SET.has(name) ? this.#events : this.#actions;
  }
}

/**
 * @param {Action} action
 * @returns {boolean}
 */
function isBuiltin(action) {
  return action.type.startsWith('@@wsgate/');
}

/**
 * The error an error action stands for.
 *
 * @param {Action} action
 * @returns {WsgateError}
 */
function errorOf(action) {
  const p = action.payload && typeof action.payload === 'object' ? action.payload : {};
  return new WsgateError(p.code ?? 'ERROR', p.message ?? `${action.type} failed`, {
    action,
    retryAfterMs: p.retryAfterMs,
  });
}
