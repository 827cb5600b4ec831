// The wsgate admin dashboard: vanilla JS over the internal API (docs/observability.md).
// Every call carries the admin key the operator typed; it lives in sessionStorage only.
// The tap is a WebSocket: a browser cannot set Authorization there, so the key travels
// as the subprotocol "bearer.<base64url key>" beside "wsgate.tap" (docs/api.md).

const $ = (id) => document.getElementById(id);
const TAP_MAX_LINES = 500; // the tap list keeps the newest 500 lines
let key = sessionStorage.getItem("wsgate-admin-key") || "";
let tap = null;

function say(el, text, bad = false) {
  el.textContent = text;
  el.classList.toggle("bad", bad);
}

async function call(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${key}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const message = (data && data.error) || resp.statusText;
    throw new Error(`${resp.status}: ${message}`);
  }
  return data;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function link(text, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "link";
  b.textContent = text;
  b.addEventListener("click", onclick);
  return b;
}

async function showPresence(channel) {
  const box = $("presence");
  box.replaceChildren();
  const data = await call("GET", `/v1/channels/${encodeURIComponent(channel)}/presence`);
  const h = document.createElement("h3");
  h.textContent = `${channel}: ${data.count} members`;
  const ul = document.createElement("ul");
  ul.id = "members";
  for (const m of data.members) {
    const li = document.createElement("li");
    li.append(`${m.userId ?? "(anonymous)"} ${m.name ? `(${m.name}) ` : ""}${m.connectionId} `);
    li.append(link("disconnect", () => disconnect("connection", m.connectionId)));
    if (m.userId) li.append(" ", link("disconnect user", () => disconnect("user", m.userId)));
    li.append(" ", link("tap", () => openTap("connection", m.connectionId)));
    ul.append(li);
  }
  box.append(h, ul);
}

async function refresh() {
  try {
    const [nodes, hubs, routes, errors] = await Promise.all([
      call("GET", "/v1/admin/nodes"), call("GET", "/v1/hubs"),
      call("GET", "/v1/routes"), call("GET", "/v1/admin/errors"),
    ]);
    $("nodes").replaceChildren(...nodes.nodes.map((n) => {
      const li = document.createElement("li");
      li.textContent = n.self ? `${n.node} (this node)` : n.node;
      return li;
    }));
    $("hubs").tBodies[0].replaceChildren(...hubs.map((h) => {
      const channels = document.createElement("span");
      for (const c of h.channels) {
        channels.append(link(`${c.channel} (${c.count})`, () => showPresence(c.channel)), " ",
          link("tap", () => openTap("channel", c.channel)), "; ");
      }
      return row([h.hub, String(h.connections), channels]);
    }));
    $("routes").tBodies[0].replaceChildren(...routes.map((r) => {
      const instances = document.createElement("span");
      for (const i of r.instances || []) {
        const s = document.createElement("span");
        s.textContent = `${i.url} [${i.source}, ${i.healthy ? "up" : "DOWN"}] `;
        if (!i.healthy) s.className = "down";
        instances.append(s);
      }
      return row([r.pattern, r.service, `${r.source ?? "-"}/${r.transport ?? "-"}`, instances]);
    }));
    $("errors").replaceChildren(...errors.errors.slice().reverse().map((e) => {
      const li = document.createElement("li");
      const fields = Object.entries(e.fields || {})
        .filter(([k]) => k !== "event").map(([k, v]) => `${k}=${v}`).join(" ");
      li.textContent = `${new Date(e.time * 1000).toISOString()} ${e.level} ${e.logger}: ${e.message} ${fields}`;
      return li;
    }));
    say($("status"), "connected");
    return true;
  } catch (err) {
    say($("status"), String(err.message || err), true);
    return false;
  }
}

async function disconnect(kind, target) {
  const out = $("disconnect-result");
  try {
    if (kind === "user") {
      const data = await call("DELETE", `/v1/users/${encodeURIComponent(target)}/connections`);
      say(out, `disconnected ${data.disconnected}`);
    } else {
      await call("DELETE", `/v1/connections/${encodeURIComponent(target)}`);
      say(out, "disconnected");
    }
  } catch (err) {
    say(out, String(err.message || err), true);
  }
  refresh();
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function closeTap() {
  if (tap) tap.close(1000);
  tap = null;
  $("tap-close").disabled = true;
}

function openTap(kind, target) {
  closeTap();
  $("tap-kind").value = kind;
  $("tap-target").value = target;
  const list = $("tap");
  list.replaceChildren();
  const url = new URL(`/v1/tap?${kind}=${encodeURIComponent(target)}`, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, ["wsgate.tap", `bearer.${base64url(key)}`]);
  tap = ws;
  $("tap-close").disabled = false;
  say($("tap-status"), `opening ${kind} ${target}…`);
  ws.onopen = () => say($("tap-status"), `tapping ${kind} ${target}`);
  ws.onclose = (ev) => {
    if (tap === ws) closeTap();
    say($("tap-status"), `closed (${ev.code})`, ev.code !== 1000 && ev.code !== 1005);
  };
  ws.onmessage = (ev) => {
    const a = JSON.parse(ev.data);
    const li = document.createElement("li");
    const from = a.from ? ` from ${a.from.userId}/${a.from.connectionId}` : "";
    const dropped = a.dropped ? ` (dropped ${a.dropped})` : "";
    li.textContent = `${a.to.kind} ${a.to.target}${from}: ${a.type} ${JSON.stringify(a.payload)}${dropped}`;
    list.append(li);
    while (list.childElementCount > TAP_MAX_LINES) list.firstElementChild.remove();
  };
}

async function start() {
  $("main").hidden = !(await refresh());
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  key = $("key").value;
  sessionStorage.setItem("wsgate-admin-key", key);
  start();
});
$("refresh").addEventListener("click", refresh);
$("publish-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("publish-result");
  try {
    const payload = JSON.parse($("publish-payload").value || "null");
    const body = {
      to: { [$("publish-kind").value]: $("publish-target").value },
      action: { type: $("publish-type").value, payload },
    };
    const data = await call("POST", "/v1/publish", body);
    say(out, `delivered ${data.delivered}`);
  } catch (err) {
    say(out, String(err.message || err), true);
  }
});
$("disconnect-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  disconnect($("disconnect-kind").value, $("disconnect-target").value);
});
$("tap-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  openTap($("tap-kind").value, $("tap-target").value);
});
$("tap-close").addEventListener("click", closeTap);
if (key) {
  $("key").value = key;
  start();
}
