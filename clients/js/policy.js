/**
 * Reconnect policy: what a close code tells the client to do, and when.
 *
 * | close code                         | decision                               |
 * |------------------------------------|----------------------------------------|
 * | 1001 going away, 1012 restart      | reconnect at once (then back off)      |
 * | 4429 too many / abuse              | reconnect after `laterMs` (or the      |
 * |                                    | ERROR's `retryAfterMs`), plus backoff  |
 * | 4401 unauthenticated, 4403, other  | never (4401: sign in at `signInUrl`)   |
 * | 4400–4499, 1000, 1002, 1003, 1007, |                                        |
 * | 1008, 1009                         |                                        |
 * | anything else (1006, 1011, 1013,   | jittered exponential backoff           |
 * | 4000, 4408, …)                     |                                        |
 *
 * Mirrors `should_reconnect` in `src/wsgate/protocol/codes.py`. Pure: the
 * random source is a parameter, so tests are deterministic.
 *
 * @module wsgate/policy
 */

import { CloseCodes as C } from './protocol.js';

/**
 * @typedef {object} Backoff
 * @property {number} [minMs=500]    first backoff step
 * @property {number} [maxMs=30000]  cap of the exponential part
 * @property {number} [laterMs=15000] least delay after 4429
 */

/** Default backoff settings. */
export const DEFAULT_BACKOFF = Object.freeze({ minMs: 500, maxMs: 30000, laterMs: 15000 });

const NO_RECONNECT = new Set([
  C.NORMAL,
  C.PROTOCOL_ERROR,
  C.UNSUPPORTED_DATA,
  C.INVALID_PAYLOAD,
  C.POLICY_VIOLATION,
  C.MESSAGE_TOO_BIG,
  C.UNAUTHENTICATED,
  C.FORBIDDEN,
]);

/** The node goes away or restarts: another node (or the same, soon) takes us. */
const AT_ONCE = new Set([C.GOING_AWAY, C.SERVICE_RESTART]);

/**
 * Tell whether a client should reconnect after the close `code`.
 *
 * 4400–4499 mirror HTTP 4xx (do not retry), except 4408 and 4429, which say
 * "later"; codes the gateway never sends (1005, 1006, 1011, 1013, …) mean
 * "try again".
 *
 * @param {number} code
 * @returns {boolean}
 */
export function shouldReconnect(code) {
  if (code === C.HEARTBEAT_TIMEOUT || code === C.TOO_MANY) return true;
  if (NO_RECONNECT.has(code) || (code >= 4400 && code <= 4499)) return false;
  return true;
}

/**
 * The delay before the next connection attempt, or `null` for "never".
 *
 * `attempt` counts the failed attempts since the last welcome (0 for the
 * first reconnect). Exponential steps use "equal jitter": half the step,
 * plus a random part of the other half, so a restarting cluster does not get
 * every client back in the same millisecond.
 *
 * @param {number} code  the close code
 * @param {number} attempt  failed attempts since the last welcome
 * @param {Backoff} [backoff]
 * @param {{retryAfterMs?: number, random?: () => number}} [hints]
 *   `retryAfterMs` from the ERROR that preceded the close, the random source
 * @returns {number | null}
 */
export function reconnectDelay(code, attempt, backoff = {}, hints = {}) {
  if (!shouldReconnect(code)) return null;
  const { minMs, maxMs, laterMs } = { ...DEFAULT_BACKOFF, ...backoff };
  const random = hints.random ?? Math.random;
  if (AT_ONCE.has(code) && attempt === 0) return 0;
  const step = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  const jittered = step / 2 + (random() * step) / 2;
  if (code === C.TOO_MANY) {
    return Math.max(laterMs, hints.retryAfterMs ?? 0) + jittered;
  }
  return jittered;
}
