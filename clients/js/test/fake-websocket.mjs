/**
 * A fake WebSocket class for the client's tests, injected with the
 * `WebSocket` option. The "server" side is driven by the test:
 * `accept()`, `receive(action)`, `serverClose(code)`; what the client sent
 * is in `sent` (decoded). Events are delivered synchronously.
 */

export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  /** Every socket created, oldest first. */
  static instances = [];

  /** @param {string} url @param {string[]} protocols */
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = FakeWebSocket.CONNECTING;
    /** @type {any[]} */
    this.sent = [];
    this.closedWith = null;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    FakeWebSocket.instances.push(this);
  }

  /** The newest socket. */
  static get last() {
    return FakeWebSocket.instances.at(-1);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  send(data) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('InvalidStateError: not open');
    this.sent.push(JSON.parse(data));
  }

  close(code = 1000, reason = '') {
    this.closedWith = { code, reason };
    this.readyState = FakeWebSocket.CLOSED;
  }

  // ---- server side

  /** Accept the connection, then send a WELCOME unless `welcome` is false. */
  accept(welcome = { connectionId: 'n1.a', userId: 'alice', node: 'n1', hubs: ['system', 'acme'], heartbeatMs: 25000 }) {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({});
    if (welcome) this.receive({ type: '@@wsgate/WELCOME', payload: welcome });
  }

  /** Deliver an action to the client. */
  receive(action) {
    this.onmessage?.({ data: typeof action === 'string' ? action : JSON.stringify(action) });
  }

  /** Close from the server side (or the network, with 1006). */
  serverClose(code, reason = '') {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }

  /** The last sent action of `type`. */
  lastSent(type) {
    return this.sent.filter((a) => a.type === type).at(-1);
  }

  /** Sent actions of `type`. */
  sentOf(type) {
    return this.sent.filter((a) => a.type === type);
  }
}

/** Wait for pending promise callbacks and timers of `ms`. */
export function tick(ms = 0) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Wait until `predicate()` is true (bounded). */
export async function until(predicate, timeoutMs = 1000) {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await tick(2);
  }
}
