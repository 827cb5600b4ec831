// A small typed program against the published API: `tsc --noEmit -p .` must pass.
// Imports go through the package's own name, so the `exports` map and its
// `types` are what is checked. Each @ts-expect-error must stay an error.
import {
  CloseCodes,
  ErrorCodes,
  Types,
  WsgateError,
  createClient,
  reconnectDelay,
  shouldReconnect,
  type Action,
  type ClientState,
  type JoinedPayload,
  type Member,
  type WsgateClient,
} from 'wsgate-client';
import { wsgateMiddleware, type StatusAction } from 'wsgate-client/redux';

const client: WsgateClient = createClient({
  url: 'wss://gw.example/ws',
  backoff: { minMs: 250 },
  getToken: async () => 'jwt',
});

client.on('welcome', (w) => console.log(w.connectionId.toUpperCase(), w.heartbeatMs + 1));
client.on('close', ({ code, willReconnect, delayMs }) => console.log(code, willReconnect, delayMs));
client.on('presence', ({ channel, members }) => members.map((m: Member) => `${channel}:${m.userId}`));
client.on('sessionExpiring', ({ exp }) => console.log(exp));
client.on('orders/*', (action: Action) => console.log(action.type, action.meta?.channel));
// @ts-expect-error a state is a string, not a number
client.on('state', (s: number) => s);

async function main(): Promise<void> {
  const joined: Action<JoinedPayload> = await client.join('acme:orders/42');
  const channel: string = joined.payload!.channel;
  const recovered: boolean | undefined = joined.payload?.recovered;
  const reply = await client.send<{ id: number }>('orders/GET', { id: 42 }, { channel }, { timeoutMs: 500 });
  const id: number | undefined = reply.payload?.id;
  try {
    await client.navigate('orders/43');
  } catch (err) {
    if (err instanceof WsgateError && err.code === ErrorCodes.FORBIDDEN) console.log(err.retryAfterMs);
  }
  const sent: boolean = client.dispatch({ type: 'chat/MESSAGE', payload: { text: 'hi' }, meta: { channel } });
  const refreshed: boolean = client.refresh();
  const count: number = client.presenceCount(channel);
  const offset: number | undefined = client.offset(channel);
  console.log(recovered, id, sent, refreshed, count, offset, client.channels.length);
  // @ts-expect-error dispatch needs an action with a type
  client.dispatch({ payload: 1 });
  // @ts-expect-error join takes a channel address
  await client.join(42);
  await client.leave(channel);
  client.close(CloseCodes.NORMAL);
}

const delay: number | null = reconnectDelay(CloseCodes.SERVICE_RESTART, 0, { maxMs: 1000 });
const again: boolean = shouldReconnect(CloseCodes.TOO_MANY);
const state: ClientState = client.state;
console.log(delay, again, state, Types.STATUS);

// Redux: the middleware and the status action it dispatches.
const middleware = wsgateMiddleware(client, { remote: (a) => a?.meta?.remote === true });
const log: string[] = [];
const chain = middleware({ dispatch: (a: Action) => a })((a: Action) => log.push(a.type));
chain({ type: 'ui/OPEN' });
function reducer(status: ClientState = 'closed', action: StatusAction | Action): ClientState | string {
  return action.type === Types.STATUS ? (action as StatusAction).payload.state : status;
}
console.log(reducer(undefined, { type: '@@wsgate/STATUS', payload: { state: 'open' } }));
void main();
