// The gRPC echo service of bench/procedures.py in Node: @grpc/grpc-js with @grpc/reflection,
// serving bench.v1.Echo/Echo(Pad) returns (Pad) (bench/anchors/echo.proto) and answering the
// request it got. Installed by bench/anchors/install.sh into bench/.anchors/grpc/.
//
//   node bench/anchors/grpc_echo.mjs PORT
//
// Prints "echo-grpc: listening on 127.0.0.1:PORT" when ready; runs until SIGTERM/SIGINT.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", ".anchors", "grpc", "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { ReflectionService } = require("@grpc/reflection");

const port = Number(process.argv[2] ?? 50051);
const definition = protoLoader.loadSync(join(here, "echo.proto"), { keepCase: true });
const pkg = grpc.loadPackageDefinition(definition);
const server = new grpc.Server();
server.addService(pkg.bench.v1.Echo.service, {
  Echo: (call, callback) => callback(null, call.request),
});
new ReflectionService(definition).addToServer(server);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`echo-grpc: listening on 127.0.0.1:${port}`);
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => server.tryShutdown(() => process.exit(0)));
}
