/** Wire protocol v1 constants (`protocol.js`), mirrored from `src/wsgate/protocol/`. */

export declare const SUBPROTOCOL: 'wsgate.v1.json';
export declare const GATEWAY_PREFIX: '@@wsgate/';

export declare const Types: Readonly<{
  JOIN: '@@wsgate/JOIN';
  LEAVE: '@@wsgate/LEAVE';
  NAVIGATE: '@@wsgate/NAVIGATE';
  PING: '@@wsgate/PING';
  AUTH: '@@wsgate/AUTH';
  REFRESH: '@@wsgate/REFRESH';
  RESUME: '@@wsgate/RESUME';
  ACK: '@@wsgate/ACK';
  WELCOME: '@@wsgate/WELCOME';
  JOINED: '@@wsgate/JOINED';
  LEFT: '@@wsgate/LEFT';
  PONG: '@@wsgate/PONG';
  PRESENCE: '@@wsgate/PRESENCE';
  ERROR: '@@wsgate/ERROR';
  RESUMED: '@@wsgate/RESUMED';
  SESSION_EXPIRING: '@@wsgate/SESSION_EXPIRING';
  STATUS: '@@wsgate/STATUS';
}>;

export declare const CloseCodes: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  PROTOCOL_ERROR: 1002;
  UNSUPPORTED_DATA: 1003;
  ABNORMAL: 1006;
  INVALID_PAYLOAD: 1007;
  POLICY_VIOLATION: 1008;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  SERVICE_RESTART: 1012;
  TRY_AGAIN_LATER: 1013;
  SLOW_CONSUMER: 4000;
  UNAUTHENTICATED: 4401;
  FORBIDDEN: 4403;
  HEARTBEAT_TIMEOUT: 4408;
  TOO_MANY: 4429;
}>;

/** Gateway error codes, plus the client's own (`TIMEOUT`, `DISCONNECTED`, `CLOSED`, `QUEUE_FULL`). */
export declare const ErrorCodes: Readonly<{
  BAD_REQUEST: 'BAD_REQUEST';
  TOO_LARGE: 'TOO_LARGE';
  NO_ROUTE: 'NO_ROUTE';
  FORBIDDEN: 'FORBIDDEN';
  NOT_JOINED: 'NOT_JOINED';
  RATE_LIMITED: 'RATE_LIMITED';
  UPSTREAM_TIMEOUT: 'UPSTREAM_TIMEOUT';
  UPSTREAM_ERROR: 'UPSTREAM_ERROR';
  UPSTREAM_UNAVAILABLE: 'UPSTREAM_UNAVAILABLE';
  INTERNAL: 'INTERNAL';
  TIMEOUT: 'TIMEOUT';
  DISCONNECTED: 'DISCONNECTED';
  CLOSED: 'CLOSED';
  QUEUE_FULL: 'QUEUE_FULL';
}>;

/** A known error code, or any code a service answered with. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes] | 'LEFT' | (string & {});

/** An error a request, join or navigation rejects with. */
export declare class WsgateError extends Error {
  constructor(code: string, message: string, extra?: { action?: object; retryAfterMs?: number });
  readonly name: 'WsgateError';
  /** The gateway's code (`FORBIDDEN`, `NO_ROUTE`, …) or the client's (`TIMEOUT`, …). */
  code: ErrorCode;
  /** The error action received, when there is one. */
  action: object | undefined;
  retryAfterMs: number | undefined;
}

/** The hub part of a channel address (`acme:orders/42` → `acme`). */
export declare function hubOf(channel: string): string;
