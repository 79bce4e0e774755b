#!/usr/bin/env node
// The cloister command's entry point. The sources are TypeScript, run by Node's type stripping
// (Node ≥ 22.18). Prefer bin/cloister, which protects arguments from Node's own option scan.
import { enableCompileCache } from "node:module";
import { join } from "node:path";

// Stripping types and compiling the modules a command needs costs more than the rest of a
// `cloister run` start-up; Node's compile cache keeps both between runs. It lives beside the
// installed code (node_modules/.cache), never in a shared temporary directory: whoever can write
// it can change what runs, and that is already true of node_modules itself. If it cannot be
// created (a read-only install), Node reports a status and cloister runs uncached.
enableCompileCache?.(join(import.meta.dirname, "..", "node_modules", ".cache", "cloister-compile"));

const { main } = await import("../src/cli/main.ts");
const args = process.argv.slice(2);
process.exitCode = await main(args[0] === "--" ? args.slice(1) : args);
