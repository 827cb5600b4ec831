// Shared by the anchor servers: arguments, the parent watch, loading the modules.
//
// Every server is started by bench/_servers.py as
//   node bench/anchors/<server>.mjs --port P --parent PID [--modules DIR]
// prints "<name>: listening on ws://127.0.0.1:P/" once it listens, and exits
// on SIGTERM/SIGINT or as soon as its parent (PID) is gone.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const DEFAULT_MODULES = path.resolve(HERE, "..", ".anchors");
export const CHANNEL = "bench";
export const PUB = "!pub ";

/** --port, --parent, --modules from argv; exits 2 on a bad command line. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = { port: 0, parent: 0, modules: DEFAULT_MODULES };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === "--port") out.port = Number(v);
    else if (k === "--parent") out.parent = Number(v);
    else if (k === "--modules") out.modules = path.resolve(v);
    else fail(`unknown argument ${k}`);
  }
  if (!(out.port > 0)) fail("--port P is required");
  return out;
}

export function fail(why) {
  console.error(`anchor: ${why}`);
  process.exit(2);
}

/** Exit when the parent is gone (re-parented) and on SIGTERM/SIGINT; bounded by a 0.5 s poll. */
export function watchParent(parent, onExit = () => {}) {
  const bye = () => {
    try { onExit(); } finally { process.exit(0); }
  };
  process.on("SIGTERM", bye);
  process.on("SIGINT", bye);
  if (parent > 0) {
    setInterval(() => { if (process.ppid !== parent) bye(); }, 500).unref();
  }
}

/** A require() that resolves from the installed anchors (bench/.anchors/node_modules). */
export function anchorsRequire(modules) {
  if (!fs.existsSync(path.join(modules, "node_modules"))) {
    fail(`no ${modules}/node_modules: run sh bench/anchors/install.sh`);
  }
  return createRequire(path.join(modules, "package.json"));
}

/**
 * The uWebSockets.js native addon, loaded directly from the package's binaries/ for this
 * platform, arch and Node ABI: the package's pure-JS fallback (its dist/, built on ws) is
 * never loaded. Exits 2, saying why, when the addon is missing or does not load.
 */
export function loadUws(modules) {
  const req = anchorsRequire(modules);
  const pkg = req.resolve("@trufflesuite/uws-js-unofficial/package.json");
  const name = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  const file = path.join(path.dirname(pkg), "binaries", name);
  if (!fs.existsSync(file)) fail(`uWebSockets.js has no native addon ${name} (Node ${process.version})`);
  let uws;
  try {
    uws = req(file);
  } catch (e) {
    fail(`uWebSockets.js native addon ${file} did not load: ${e && e.message}`);
  }
  if (typeof uws.App !== "function" || typeof uws.us_listen_socket_close !== "function") {
    fail(`${file} is not the uWebSockets.js addon`);
  }
  return { uws, file };
}

/** Parse "!pub <count> <message>" (bytes); null when it is not a publish command. */
export function parsePublish(bytes) {
  if (bytes.length < PUB.length || bytes[0] !== 0x21) return null;
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, 32)).toString("latin1");
  if (!head.startsWith(PUB)) return null;
  const sp = head.indexOf(" ", PUB.length);
  const count = Number(head.slice(PUB.length, sp));
  if (sp < 0 || !(count > 0 && count <= 100000)) return null;
  return { count, body: bytes.subarray(sp + 1) };
}
