/**
 * The demo web app: who I am, a view picker (NAVIGATE), who else is in the
 * view (JOINED + PRESENCE), a chat relayed to the view's channel, and a log
 * of every action received, and the procedures the gateway discovered
 * (gRPC reflection, NATS services) with a form to call one. Served by
 * `wsgate demo` at /demo/app.js.
 */

import { createClient } from '/js/wsgate.js';

const CHAT = 'chat/MESSAGE';
const NICKNAME = 'profile/SET_NICKNAME';
const MAX_LOG = 100;
const MAX_CALL_LOG = 50;
const END = '@@wsgate/END';
const CANCEL = '@@wsgate/CANCEL';
const $ = (id) => document.getElementById(id);

const el = {
  me: $('me'),
  status: $('status'),
  view: $('view-select'),
  channel: $('channel'),
  members: $('members'),
  count: $('member-count'),
  chatLog: $('chat-log'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  chatSend: $('chat-send'),
  actionLog: $('action-log'),
  nickForm: $('nick-form'),
  nickInput: $('nick-input'),
  nickSend: $('nick-send'),
  nickStatus: $('nick-status'),
  orderId: $('order-id'),
  orderStatus: $('order-status'),
  orderButtons: ['order-get', 'order-pack', 'order-ship', 'order-watch'].map($),
  otherOrigin: $('other-origin'),
  procRefresh: $('procedures-refresh'),
  procList: $('procedure-list'),
  callForm: $('call-form'),
  callType: $('call-type'),
  callTypes: $('call-types'),
  callPayload: $('call-payload'),
  callSend: $('call-send'),
  callCancel: $('call-cancel'),
  callLog: $('call-log'),
};

const client = createClient(); // ws(s)://<this host>/ws
/** For the console (and the browser tests). */
window.wsgate = client;

/** The current view channel (`<org>:<view>`), once joined. */
let channel = null;
/** The view last asked for (`orders/42`). */
let currentView = null;
/** Display names by user id, learnt from presence. */
const names = new Map();
/** Nicknames set in this session (relayed `profile/SET_NICKNAME`): shown first. */
const nicknames = new Map();
/** @param {string} userId */
const displayName = (userId) => nicknames.get(userId) ?? names.get(userId) ?? userId;

// ---------------------------------------------------------------- events

client.on('state', renderStatus);

client.on('welcome', (welcome) => {
  renderMe();
  loadProcedures();
  logLine(`welcome: connection ${welcome.connectionId} on node ${welcome.node}`);
});

client.on('unauthenticated', ({ signInUrl }) => {
  location.assign(signInUrl || '/sign-in');
});

client.on('presence', ({ channel: changed, members }) => {
  for (const m of members) if (m.name) names.set(m.userId, m.name);
  if (changed === channel) renderMembers();
  renderMe();
});

client.on(CHAT, (action) => {
  if (action.meta?.channel !== channel) return;
  appendChat(action.meta?.from?.userId ?? '?', String(action.payload?.text ?? ''), false);
});

client.on(NICKNAME, (action) => {
  const userId = action.meta?.from?.userId;
  const nickname = String(action.payload?.nickname ?? '').slice(0, 32);
  if (!userId || !nickname) return;
  nicknames.set(userId, nickname);
  renderMembers();
  const mine = userId === client.welcome?.userId;
  if (mine) {
    el.nickStatus.textContent = `You are now called ${nickname}.`;
    el.nickStatus.dataset.state = 'applied';
    renderMe();
  }
  appendChat(userId, `is now called ${nickname}`, mine);
});

client.on('orders/UPDATED', (action) => {
  const { id, status, by } = action.payload ?? {};
  showOrder(`${displayName(by)} marked order ${id} ${status}`);
});
client.on('orders/REMINDER', (action) => {
  showOrder(`reminder: order ${action.payload?.id} is ${action.payload?.status}`);
});

client.on('*', logAction);
client.on('error', (err) => {
  if (err.code === 'RATE_LIMITED' && err.action?.meta?.inReplyTo?.startsWith('nick-')) {
    const seconds = Math.ceil((err.retryAfterMs ?? 0) / 1000);
    el.nickStatus.textContent = `Too soon: try again in ${seconds} s.`;
    el.nickStatus.dataset.state = 'limited';
  }
  logLine(`error ${err.code}: ${err.message}`);
});

// ------------------------------------------------------------------ view

el.view.addEventListener('change', () => openView(el.view.value));

/**
 * NAVIGATE to `view`: the gateway leaves the previous view and joins
 * `<my org>:<view>`.
 *
 * @param {string} view
 */
async function openView(view) {
  if (!view) return;
  currentView = view;
  setChatEnabled(false);
  if (el.view.value !== view) addViewOption(view);
  try {
    const joined = await client.navigate(view);
    if (view !== currentView) return; // another view was asked for meanwhile
    channel = joined.payload.channel;
    history.replaceState(null, '', `#${encodeURIComponent(view)}`);
    el.channel.textContent = channel;
    el.chatLog.replaceChildren();
    renderMembers();
    setChatEnabled(true);
    setOrder(view.startsWith('orders/') ? view.slice('orders/'.length) : null);
  } catch (err) {
    logLine(`cannot open ${view}: ${err.code ?? ''} ${err.message}`);
  }
}

/** @param {string} view */
function addViewOption(view) {
  if (![...el.view.options].some((o) => o.value === view)) el.view.add(new Option(view, view));
  el.view.value = view;
}

// ------------------------------------------------------------------ chat

el.chatForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = el.chatInput.value.trim();
  if (!text || !channel) return;
  // Relayed to the other members of the channel; the gateway skips the
  // sender, so my own message is shown here, once.
  client.dispatch({ type: CHAT, payload: { text }, meta: { channel } });
  appendChat(client.welcome?.userId ?? 'me', text, true);
  el.chatInput.value = '';
  el.chatInput.focus();
});

/**
 * @param {string} userId
 * @param {string} text
 * @param {boolean} mine
 */
function appendChat(userId, text, mine) {
  const li = document.createElement('li');
  li.dataset.testid = 'chat-message';
  li.dataset.from = userId;
  if (mine) li.classList.add('mine');
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = displayName(userId);
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(from, body);
  el.chatLog.append(li);
  el.chatLog.scrollTop = el.chatLog.scrollHeight;
}

/** @param {boolean} on */
function setChatEnabled(on) {
  el.chatInput.disabled = !on;
  el.chatSend.disabled = !on;
  el.chatInput.placeholder = on ? `Message ${channel}` : 'Open a view to chat';
  el.nickInput.disabled = !on;
  el.nickSend.disabled = !on;
  el.nickInput.placeholder = on ? 'A new nickname' : 'Open a view first';
}

// -------------------------------------------------------------- nickname

let nickSerial = 0;
el.nickForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const nickname = el.nickInput.value.trim();
  if (!nickname || !channel) return;
  // Relayed to the view's other members; limited to one a minute per user
  // by the demo's [[rate_limits]] rule: a refusal comes back as an ERROR.
  // `echo` has the gateway relay it back to me too: it is applied here only
  // then, so a refused one (RATE_LIMITED) never shows as mine.
  nickSerial += 1;
  client.dispatch({
    type: NICKNAME,
    payload: { nickname },
    meta: { channel, id: `nick-${nickSerial}`, echo: true },
  });
  el.nickStatus.textContent = `Sent: ${nickname}`;
  el.nickStatus.dataset.state = 'sent';
  el.nickInput.value = '';
});

// ---------------------------------------------------------------- orders

/** The order of the current view (`orders/42` → `42`), or null. */
let orderId = null;

/** @param {string | null} id */
function setOrder(id) {
  orderId = id;
  el.orderId.textContent = id ?? '–';
  for (const button of el.orderButtons) button.disabled = id === null;
  showOrder(id === null ? 'Open an orders/<id> view.' : 'Ask the orders service.');
}

/** @param {string} text */
function showOrder(text) {
  el.orderStatus.textContent = text;
}

/**
 * Send an action the gateway routes to the orders service, and show its reply.
 *
 * @param {string} type
 * @param {object} payload
 */
async function askOrders(type, payload) {
  try {
    const reply = await client.send(type, payload, { channel });
    showOrder(`order ${reply.payload?.id}: ${reply.payload?.status}`);
  } catch (err) {
    showOrder(`${type} failed: ${err.code}`);
  }
}

$('order-get').addEventListener('click', () => askOrders('orders/GET', { id: orderId }));
$('order-pack').addEventListener('click', () => askOrders('orders/UPDATE', { id: orderId, status: 'packed' }));
$('order-ship').addEventListener('click', () => askOrders('orders/UPDATE', { id: orderId, status: 'shipped' }));
$('order-watch').addEventListener('click', () => {
  // Answered later, by the service, pushing to this connection by its id.
  client.dispatch({ type: 'orders/WATCH', payload: { id: orderId } });
  showOrder('watching: the service will push a reminder in 2 s');
});

// ------------------------------------------------------------ procedures

/**
 * The routes the gateway found by itself, from its live table: the demo's
 * orders service answers `procedures/LIST` from `GET /v1/routes`.
 */
async function loadProcedures() {
  try {
    const listed = await client.send('procedures/LIST', {});
    renderProcedures(listed.payload?.procedures ?? []);
  } catch (err) {
    logLine(`procedures/LIST failed: ${err.code}`);
  }
}
el.procRefresh.addEventListener('click', loadProcedures);

/** @param {{type: string, source: string, transport: string, targets: {url: string, healthy: boolean}[]}[]} procedures */
function renderProcedures(procedures) {
  const rows = procedures.map((p) => {
    const tr = document.createElement('tr');
    tr.dataset.testid = 'procedure';
    tr.dataset.source = p.source;
    tr.dataset.type = p.type;
    const healthy = p.targets.length > 0 && p.targets.every((t) => t.healthy);
    const health = document.createElement('td');
    health.className = healthy ? 'healthy' : 'unhealthy';
    health.textContent = p.targets.length === 0 ? 'no target' : healthy ? 'healthy' : 'unhealthy';
    const cells = [p.source, p.type, p.targets.map((t) => t.url).join(', ')].map((text) => {
      const td = document.createElement('td');
      td.textContent = text;
      return td;
    });
    cells[1].className = 'type';
    tr.append(...cells, health);
    tr.addEventListener('click', () => {
      el.callType.value = p.type;
      el.callPayload.focus();
    });
    return tr;
  });
  el.procList.replaceChildren(...rows);
  el.callTypes.replaceChildren(...procedures.map((p) => new Option(p.type)));
}

for (const preset of document.querySelectorAll('.preset')) {
  preset.addEventListener('click', () => {
    el.callType.value = preset.dataset.type;
    el.callPayload.value = preset.dataset.payload;
    el.callForm.requestSubmit();
  });
}

let callSerial = 0;
/** The call whose answers are shown: its `meta.id`; null when none is open. */
let callId = null;

el.callForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const type = el.callType.value.trim();
  if (!type) return;
  let payload;
  try {
    payload = el.callPayload.value.trim() ? JSON.parse(el.callPayload.value) : {};
  } catch {
    el.callLog.replaceChildren();
    callLine('the payload is not JSON', 'error');
    return;
  }
  if (callId !== null) client.dispatch({ type: CANCEL, payload: { id: callId } });
  callSerial += 1;
  callId = `call-${callSerial}`;
  el.callLog.replaceChildren();
  callLine(`→ ${type} ${JSON.stringify(payload)}`, 'note');
  el.callCancel.disabled = false;
  // Every answer carries meta.inReplyTo = this id: one reply (unary, NATS),
  // or a stream's messages and then END {id, status}.
  client.dispatch({ type, payload, meta: { id: callId } });
});

el.callCancel.addEventListener('click', () => {
  if (callId !== null) client.dispatch({ type: CANCEL, payload: { id: callId } });
});

client.on('*', (action) => {
  const replyTo = action.meta?.inReplyTo;
  if (callId === null || replyTo !== callId) return;
  if (action.type === END) {
    callLine(`END ${action.payload?.status}`, action.error ? 'end error' : 'end');
    callId = null;
    el.callCancel.disabled = true;
    return;
  }
  if (action.error) {
    callLine(`error ${action.payload?.code}: ${action.payload?.message ?? ''}`, 'error');
    callId = null;
    el.callCancel.disabled = true;
    return;
  }
  callLine(`${action.type} ${JSON.stringify(action.payload)}`, 'answer');
});

/**
 * @param {string} text
 * @param {string} kind
 */
function callLine(text, kind) {
  const li = document.createElement('li');
  li.dataset.testid = 'call-line';
  li.dataset.kind = kind;
  li.className = kind;
  li.textContent = text;
  el.callLog.append(li);
  while (el.callLog.children.length > MAX_CALL_LOG) el.callLog.firstElementChild.remove();
  el.callLog.scrollTop = el.callLog.scrollHeight;
}

// ------------------------------------------------------------- rendering

function renderStatus(state) {
  el.status.textContent = state;
  el.status.dataset.state = state;
  // While connecting or reconnecting nothing would be sent: no button is live.
  // The client rejoins the view by itself; its JOINED turns them back on.
  const open = state === 'open' && channel !== null;
  setChatEnabled(open);
  for (const button of el.orderButtons) button.disabled = !open || orderId === null;
  el.procRefresh.disabled = state !== 'open';
  el.callSend.disabled = state !== 'open';
}

function renderMe() {
  const welcome = client.welcome;
  if (!welcome) return;
  const org = (welcome.hubs ?? []).find((h) => h !== 'system' && h !== 'public') ?? '';
  const name = nicknames.get(welcome.userId) ?? names.get(welcome.userId);
  el.me.dataset.user = welcome.userId;
  el.me.textContent = `${name ? `${name} (${welcome.userId})` : welcome.userId}${org ? ` · ${org}` : ''}`;
}

/** One list item per user (a user may have several tabs open). */
function renderMembers() {
  const byUser = new Map();
  for (const m of channel ? client.presence(channel) : []) {
    const entry = byUser.get(m.userId) ?? { name: nicknames.get(m.userId) ?? (m.name || m.userId), connections: 0 };
    entry.connections += 1;
    byUser.set(m.userId, entry);
  }
  const me = client.welcome?.userId;
  const items = [...byUser]
    .sort(([, a], [, b]) => a.name.localeCompare(b.name))
    .map(([userId, { name, connections }]) => {
      const li = document.createElement('li');
      li.dataset.testid = 'member';
      li.dataset.user = userId;
      li.textContent = name;
      if (userId === me) li.append(tag('you'));
      if (connections > 1) li.append(tag(`×${connections}`));
      return li;
    });
  el.members.replaceChildren(...items);
  el.count.textContent = String(channel ? client.presenceCount(channel) : 0);
}

/** @param {string} text */
function tag(text) {
  const span = document.createElement('span');
  span.className = 'tag';
  span.textContent = text;
  return span;
}

/** @param {{type: string, payload?: any, meta?: any, error?: boolean}} action */
function logAction(action) {
  const li = document.createElement('li');
  if (action.error) li.classList.add('error');
  const type = document.createElement('code');
  type.className = 'type';
  type.textContent = action.type;
  const rest = document.createElement('code');
  rest.className = 'json';
  rest.textContent = JSON.stringify({ payload: action.payload, meta: action.meta });
  li.append(type, ' ', rest);
  prependLog(li);
}

/** @param {string} text */
function logLine(text) {
  const li = document.createElement('li');
  li.className = 'note';
  li.textContent = text;
  prependLog(li);
}

/** @param {HTMLElement} li */
function prependLog(li) {
  el.actionLog.prepend(li);
  while (el.actionLog.children.length > MAX_LOG) el.actionLog.lastElementChild.remove();
}

// The view named in the URL (#orders/42): opened at load (NAVIGATE waits for
// the connection) and when the hash changes (back and forward). After a
// reconnect the client rejoins the view by itself.
function viewFromHash() {
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted && wanted !== currentView) openView(wanted);
}
window.addEventListener('hashchange', viewFromHash);
viewFromHash();

// The other host name: a second cookie jar for a second user.
{
  const other = location.hostname === '127.0.0.1' ? 'localhost' : '127.0.0.1';
  el.otherOrigin.textContent = other;
  el.otherOrigin.href = `${location.protocol}//${other}${location.port ? `:${location.port}` : ''}/sign-in`;
}
