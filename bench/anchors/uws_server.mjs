// uWebSockets.js anchor, as a uWS user would write it.
//
// Every connection subscribes to one topic, but one upgraded on a path starting
// with /idle (bench/storm.py's storm connections: they only measure handshakes). A text message is relayed to every
// other member with ws.publish (relay mode); "!pub <M> <message>" makes the server
// publish <message> M times to every member with app.publish (server-publish mode).
//   node bench/anchors/uws_server.mjs --port P --parent PID [--modules DIR]
import { CHANNEL, loadUws, parseArgs, parsePublish, watchParent } from "./common.mjs";

const args = parseArgs();
const { uws, file } = loadUws(args.modules);
let listenSocket = null;

const app = uws.App().ws("/*", {
  compression: uws.DISABLED,
  maxPayloadLength: 16 * 1024 * 1024,
  maxBackpressure: 16 * 1024 * 1024, // the gateway's outbound high-water mark
  idleTimeout: 0, // no pings during a run (as the gateway's bench config)
  sendPingsAutomatically: false,
  upgrade: (res, req, context) => {
    res.upgrade(
      { member: !req.getUrl().startsWith("/idle") },
      req.getHeader("sec-websocket-key"),
      req.getHeader("sec-websocket-protocol"),
      req.getHeader("sec-websocket-extensions"),
      context,
    );
  },
  open: (ws) => {
    if (ws.getUserData().member) ws.subscribe(CHANNEL);
  },
  message: (ws, message, isBinary) => {
    if (isBinary) return;
    const cmd = parsePublish(new Uint8Array(message));
    if (cmd === null) {
      ws.publish(CHANNEL, message, false);
      return;
    }
    const body = cmd.body.slice(); // own copy: message is only valid during this call
    for (let i = 0; i < cmd.count; i++) app.publish(CHANNEL, body, false);
  },
});

app.listen("127.0.0.1", args.port, (token) => {
  if (!token) {
    console.error(`uws: could not listen on 127.0.0.1:${args.port}`);
    process.exit(1);
  }
  listenSocket = token;
  console.log(`uws: addon ${file}`);
  console.log(`uws: listening on ws://127.0.0.1:${args.port}/`);
});

watchParent(args.parent, () => {
  if (listenSocket) uws.us_listen_socket_close(listenSocket);
});
