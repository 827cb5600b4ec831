/**
 * Requests waiting for their answer, by correlation id (`meta.id`, answered
 * as `meta.inReplyTo`). Each has a timeout; each is settled once.
 *
 * @module wsgate/requests
 */

import { ErrorCodes as E, WsgateError } from './protocol.js';

/**
 * @typedef {object} Request
 * @property {string} id
 * @property {(a: any) => void} resolve
 * @property {(e: Error) => void} reject
 * @property {any} timer
 * @property {boolean} sent  written to a socket (its answer can only come on that socket)
 * @property {boolean} done  settled (a queued frame of a settled request is dropped)
 */

export class RequestTable {
  /** @type {Map<string, Request>} */
  #pending = new Map();

  /**
   * Register a request; it rejects with `TIMEOUT` after `timeoutMs`.
   *
   * @param {string} id
   * @param {string} type  for the timeout message
   * @param {number} timeoutMs
   * @returns {{request: Request, answer: Promise<any>}}
   */
  add(id, type, timeoutMs) {
    /** @type {Request} */
    let request;
    const answer = new Promise((resolve, reject) => {
      request = { id, resolve, reject, timer: null, sent: false, done: false };
    });
    request.timer = setTimeout(() => {
      this.settle(id, new WsgateError(E.TIMEOUT, `no answer to ${type} in ${timeoutMs} ms`));
    }, timeoutMs);
    this.#pending.set(id, request);
    return { request, answer };
  }

  /**
   * @param {string} id
   * @returns {boolean} whether a request with this id is waiting
   */
  has(id) {
    return this.#pending.has(id);
  }

  /**
   * Settle a request: resolve with an action, or reject with an Error.
   * No-op for an unknown (or already settled) id.
   *
   * @param {string} id
   * @param {any} outcome
   */
  settle(id, outcome) {
    const request = this.#pending.get(id);
    if (!request) return;
    this.#pending.delete(id);
    clearTimeout(request.timer);
    request.done = true;
    if (outcome instanceof Error) request.reject(outcome);
    else request.resolve(outcome);
  }

  /**
   * Reject the requests already written to the socket that closed: their
   * answers cannot come on another one. Queued ones keep waiting.
   *
   * @param {Error} err
   */
  rejectSent(err) {
    for (const request of [...this.#pending.values()]) {
      if (request.sent) this.settle(request.id, err);
    }
  }

  /** @param {Error} err  reject every request */
  rejectAll(err) {
    for (const id of [...this.#pending.keys()]) this.settle(id, err);
  }
}
