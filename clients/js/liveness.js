/**
 * Liveness watch for one connection.
 *
 * The browser cannot see the gateway's WebSocket pings, so a dead connection
 * (a laptop waking up, a network change) could look open for minutes. After
 * `heartbeatMs` without any frame received this asks for a PING; if still
 * nothing arrives `min(heartbeatMs, 10 s)` later, it declares the connection
 * dead. A connection with traffic never pings.
 *
 * Lifecycle: `start(heartbeatMs)` after WELCOME, `received()` on every frame,
 * `stop()` when the socket goes.
 *
 * @module wsgate/liveness
 */

/** Upper bound of the wait for an answer to the PING. */
export const MAX_PONG_WAIT_MS = 10000;

export class Liveness {
  #ping;
  #dead;
  #timer = null;
  #lastRx = 0;
  #pingSentAt = 0;

  /**
   * @param {{ping: () => void, dead: () => void}} hooks  send a PING; give up on the socket
   */
  constructor({ ping, dead }) {
    this.#ping = ping;
    this.#dead = dead;
  }

  /**
   * Start watching (again). No-op for a missing or non-positive `heartbeatMs`.
   *
   * @param {number} heartbeatMs  from WELCOME
   */
  start(heartbeatMs) {
    this.stop();
    this.#lastRx = Date.now();
    if (!(heartbeatMs > 0)) return;
    const waitMs = Math.min(heartbeatMs, MAX_PONG_WAIT_MS);
    const tickMs = Math.max(25, Math.min(heartbeatMs, waitMs) / 2);
    this.#timer = setInterval(() => this.#check(heartbeatMs, waitMs), tickMs);
  }

  /** A frame arrived: the connection is alive. */
  received() {
    this.#lastRx = Date.now();
    this.#pingSentAt = 0;
  }

  /** Stop watching. */
  stop() {
    clearInterval(this.#timer);
    this.#timer = null;
    this.#pingSentAt = 0;
  }

  /**
   * @param {number} idleMs
   * @param {number} waitMs
   */
  #check(idleMs, waitMs) {
    const now = Date.now();
    if (this.#pingSentAt) {
      if (now - this.#pingSentAt >= waitMs) {
        this.stop();
        this.#dead();
      }
    } else if (now - this.#lastRx >= idleMs) {
      this.#pingSentAt = now;
      this.#ping();
    }
  }
}
