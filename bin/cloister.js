#!/usr/bin/env node
// The cloister command's entry point. The sources are TypeScript, run by Node's type stripping
// (Node ≥ 22.18). Prefer bin/cloister, which protects arguments from Node's own option scan.
import { main } from "../src/cli/main.ts";

const args = process.argv.slice(2);
process.exitCode = await main(args[0] === "--" ? args.slice(1) : args);
