/**
 * A registry of handlers by name pattern: an exact name (`orders/UPDATE`), a
 * prefix ending in `*` (`orders/*`) or the catch-all `*` — the same grammar
 * as the gateway's route table. Every matching handler runs, exact ones
 * first, then prefixes, longest first.
 *
 * A handler that throws does not stop the others: its error goes to
 * `reportError` (browsers) or `console.error`.
 *
 * @module wsgate/handlers
 */

/** @template T @typedef {(value: T) => void} Handler */

/** @template T */
export class HandlerSet {
  /** @type {Map<string, Set<Handler<T>>>} */
  #exact = new Map();
  /** @type {Map<string, Set<Handler<T>>>} prefix (without `*`) -> handlers */
  #prefix = new Map();
  /** @type {string[]} prefixes, longest first */
  #order = [];

  /**
   * Add `handler` for `pattern`.
   *
   * @param {string} pattern
   * @param {Handler<T>} handler
   */
  add(pattern, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    const [table, key] = this.#slot(pattern);
    let set = table.get(key);
    if (!set) {
      set = new Set();
      table.set(key, set);
      if (table === this.#prefix) this.#reorder();
    }
    set.add(handler);
  }

  /**
   * Remove `handler` from `pattern` (no-op when absent).
   *
   * @param {string} pattern
   * @param {Handler<T>} handler
   */
  remove(pattern, handler) {
    const [table, key] = this.#slot(pattern);
    const set = table.get(key);
    if (!set) return;
    set.delete(handler);
    if (set.size === 0) {
      table.delete(key);
      if (table === this.#prefix) this.#reorder();
    }
  }

  /**
   * Call every handler whose pattern matches `name` with `value`.
   *
   * @param {string} name
   * @param {T} value
   * @returns {number} how many handlers ran
   */
  emit(name, value) {
    const handlers = [];
    const exact = this.#exact.get(name);
    if (exact) handlers.push(...exact);
    for (const prefix of this.#order) {
      if (name.startsWith(prefix)) handlers.push(...this.#prefix.get(prefix));
    }
    for (const handler of handlers) {
      try {
        handler(value);
      } catch (err) {
        report(err);
      }
    }
    return handlers.length;
  }

  /**
   * @param {string} pattern
   * @returns {[Map<string, Set<Handler<T>>>, string]}
   */
  #slot(pattern) {
    if (typeof pattern !== 'string' || pattern === '') {
      throw new TypeError('pattern must be a non-empty string');
    }
    return pattern.endsWith('*') ? [this.#prefix, pattern.slice(0, -1)] : [this.#exact, pattern];
  }

  #reorder() {
    this.#order = [...this.#prefix.keys()].sort((a, b) => b.length - a.length);
  }
}

/**
 * Report an error thrown by a handler without stopping the caller.
 *
 * @param {unknown} err
 */
function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else console.error(err);
}
