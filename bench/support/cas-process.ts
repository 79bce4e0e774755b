/**
 * A CAS in a process of its own, as `cloister cas start --data-dir DIR --listen 127.0.0.1:0`
 * would start it, but with the embedded store's synchronous setting given: for bench/cas-policies'
 * "before" (NORMAL, not durable), which no command-line flag offers. Prints what `cas start`
 * prints ("CAS listening on URL", "CAS key HASH") and stops at SIGTERM.
 *
 *   node bench/support/cas-process.ts DIR normal|full
 */
import { startCas } from "../../src/cas/start.ts";

const [dataDir, synchronous] = process.argv.slice(2);
if (!dataDir || (synchronous !== "normal" && synchronous !== "full"))
  throw new Error("usage: cas-process.ts DIR normal|full");
const running = await startCas({
  dataDir,
  listen: "127.0.0.1:0",
  createTopLevel: "any",
  storeOptions: { synchronous },
});
process.stdout.write(`CAS listening on ${running.url}\nCAS key ${running.identity.hash}\n`);
process.once("SIGTERM", () => void running.close().then(() => process.exit(0)));
