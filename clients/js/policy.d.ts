/** Reconnect policy by close code (`policy.js`); the Python client uses the same table. */

export interface Backoff {
  /** First backoff step (default 500). */
  minMs?: number;
  /** Cap of the exponential part (default 30000). */
  maxMs?: number;
  /** Least delay after 4429 (default 15000). */
  laterMs?: number;
}

export declare const DEFAULT_BACKOFF: Readonly<Required<Backoff>>;

/** Whether a client should reconnect after the close `code`. */
export declare function shouldReconnect(code: number): boolean;

/** The delay in ms before the next attempt, or `null` for "never". */
export declare function reconnectDelay(
  code: number,
  attempt: number,
  backoff?: Backoff,
  hints?: { retryAfterMs?: number; random?: () => number },
): number | null;
