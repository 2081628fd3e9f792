// The Node peer for benches/wrk.rs: matrix-appservice (npm, the library under
// matrix-appservice-bridge) with a no-op event handler, in memory.
// Usage: node node_appservice.js PORT HS_TOKEN, with NODE_PATH naming a node_modules that holds
// matrix-appservice (benches/wrk.rs sets it from BENCH_NODE_MODULES).
const { AppService } = require("matrix-appservice");

const [port, token] = process.argv.slice(2);
const service = new AppService({ homeserverToken: token });
service.on("event", () => {});
service.listen(Number(port), "127.0.0.1");
