// Node ws anchor, as the ws README's broadcast example writes it.
//
// A text message is sent to every other open client (relay mode); "!pub <M> <message>"
// makes the server send <message> M times to every open client (server-publish mode).
//   node bench/anchors/ws_server.mjs --port P --parent PID [--modules DIR]
import { anchorsRequire, parseArgs, parsePublish, watchParent } from "./common.mjs";

const args = parseArgs();
const req = anchorsRequire(args.modules);
const { WebSocketServer, WebSocket } = req("ws");
const OPEN = WebSocket.OPEN;

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: args.port,
  perMessageDeflate: false,
  maxPayload: 16 * 1024 * 1024,
  backlog: 1024,
});

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    const cmd = parsePublish(data);
    if (cmd === null) {
      for (const client of wss.clients) {
        if (client !== ws && client.readyState === OPEN) client.send(data, { binary: false });
      }
      return;
    }
    const body = Buffer.from(cmd.body);
    for (let i = 0; i < cmd.count; i++) {
      for (const client of wss.clients) {
        if (client.readyState === OPEN) client.send(body, { binary: false });
      }
    }
  });
});

wss.on("listening", () => {
  let bufferutil = "no";
  try { req("bufferutil"); bufferutil = "yes"; } catch { /* ws masks in JS */ }
  console.log(`ws: ws ${req("ws/package.json").version}, bufferutil ${bufferutil}`);
  console.log(`ws: listening on ws://127.0.0.1:${args.port}/`);
});
wss.on("error", (e) => {
  console.error(`ws: ${e.message}`);
  process.exit(1);
});

watchParent(args.parent, () => wss.close());
