/** A TLS shield in a process of its own (as in `cloister run`), for bench/tls-shield: config as JSON in argv[2]. */
import { startShields } from "../../src/runtime/tls-shield.ts";

const { config, keys } = JSON.parse(process.argv[2]!);
const shields = await startShields(config, keys);
process.stdout.write(`ready ${shields.addresses.join(" ")}\n`);
process.on("SIGTERM", () => shields.close().then(() => process.exit(0)));
