// Check the installed anchors: the uWebSockets.js native addon loads, ws resolves.
//   node bench/anchors/check.mjs [bench/.anchors]
import { anchorsRequire, loadUws, DEFAULT_MODULES } from "./common.mjs";

const modules = process.argv[2] || DEFAULT_MODULES;
const { file } = loadUws(modules);
const req = anchorsRequire(modules);
const ws = req("ws/package.json");
const uws = req("@trufflesuite/uws-js-unofficial/package.json");
console.log(`anchors OK: uWebSockets.js ${uws.version} native addon ${file}; ws ${ws.version}; node ${process.version}`);
