/**
 * Wire protocol v1 constants, mirrored from `src/wsgate/protocol/` (builtins.py,
 * codes.py). Pure data: no I/O.
 *
 * @module wsgate/protocol
 */

/** The WebSocket subprotocol of wire protocol v1. */
export const SUBPROTOCOL = 'wsgate.v1.json';

/** Prefix of the gateway's own action types. */
export const GATEWAY_PREFIX = '@@wsgate/';

/** Built-in action types (`@@wsgate/*`). */
export const Types = Object.freeze({
  // client -> gateway
  JOIN: '@@wsgate/JOIN',
  LEAVE: '@@wsgate/LEAVE',
  NAVIGATE: '@@wsgate/NAVIGATE',
  PING: '@@wsgate/PING',
  /** First action of a token connection: `{token}` (browsers cannot set headers). */
  AUTH: '@@wsgate/AUTH',
  /** The answer to SESSION_EXPIRING: `{token}`, or `{}` after a cookie refresh. */
  REFRESH: '@@wsgate/REFRESH',
  /** First action of a reconnect: `{inbox}`, the last inbox offset seen. */
  RESUME: '@@wsgate/RESUME',
  /** `{offset}`: an action that carried `meta.ack` was dispatched. */
  ACK: '@@wsgate/ACK',
  // gateway -> client
  WELCOME: '@@wsgate/WELCOME',
  JOINED: '@@wsgate/JOINED',
  LEFT: '@@wsgate/LEFT',
  PONG: '@@wsgate/PONG',
  PRESENCE: '@@wsgate/PRESENCE',
  ERROR: '@@wsgate/ERROR',
  /** The answer to RESUME: `{inbox, recovered}`, then the missed inbox actions. */
  RESUMED: '@@wsgate/RESUMED',
  /** `{exp}`: the credential expires soon; answer with REFRESH. */
  SESSION_EXPIRING: '@@wsgate/SESSION_EXPIRING',
  // client -> store (never on the wire)
  /** `{state}`: the Redux middleware's connection status. */
  STATUS: '@@wsgate/STATUS',
});

/** Close codes the gateway sends (RFC 6455 §7.4 and the 4000 range). */
export const CloseCodes = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  /** Set by the browser when the connection dropped without a close frame. */
  ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  SLOW_CONSUMER: 4000,
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  HEARTBEAT_TIMEOUT: 4408,
  TOO_MANY: 4429,
});

/**
 * Error codes of `@@wsgate/ERROR` payloads, plus the client's own
 * (`TIMEOUT`, `DISCONNECTED`, `CLOSED`, `QUEUE_FULL`), which never come
 * from the gateway.
 */
export const ErrorCodes = Object.freeze({
  BAD_REQUEST: 'BAD_REQUEST',
  TOO_LARGE: 'TOO_LARGE',
  NO_ROUTE: 'NO_ROUTE',
  FORBIDDEN: 'FORBIDDEN',
  NOT_JOINED: 'NOT_JOINED',
  RATE_LIMITED: 'RATE_LIMITED',
  UPSTREAM_TIMEOUT: 'UPSTREAM_TIMEOUT',
  UPSTREAM_ERROR: 'UPSTREAM_ERROR',
  UPSTREAM_UNAVAILABLE: 'UPSTREAM_UNAVAILABLE',
  INTERNAL: 'INTERNAL',
  // client side
  TIMEOUT: 'TIMEOUT',
  DISCONNECTED: 'DISCONNECTED',
  CLOSED: 'CLOSED',
  QUEUE_FULL: 'QUEUE_FULL',
});

/**
 * An error the client rejects a request with.
 *
 * `code` is a gateway error code (`FORBIDDEN`, `NO_ROUTE`, …) or a client
 * code (`TIMEOUT`, `DISCONNECTED`, `CLOSED`, `QUEUE_FULL`); `action` is the
 * error action received, when there is one.
 */
export class WsgateError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{action?: object, retryAfterMs?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'WsgateError';
    /** @type {string} */
    this.code = code;
    /** @type {object | undefined} */
    this.action = extra.action;
    /** @type {number | undefined} */
    this.retryAfterMs = extra.retryAfterMs;
  }
}

/**
 * The hub part of a channel address (`acme:orders/42` → `acme`).
 *
 * @param {string} channel
 * @returns {string}
 */
export function hubOf(channel) {
  const i = channel.indexOf(':');
  return i < 0 ? channel : channel.slice(0, i);
}
