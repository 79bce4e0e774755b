/** Helpers for commands that find programs or run until interrupted. */
import { constants, promises as fs } from "node:fs";
import { delimiter, join, resolve } from "node:path";
import { CliError } from "./errors.ts";
import type { Io } from "./io.ts";

/** A program as exec would find it: a path as given, or the first executable file of that name on PATH. */
export async function findProgram(program: string, io: Io): Promise<string> {
  const candidates = program.includes("/")
    ? [resolve(io.cwd, program)]
    : (io.env.PATH ?? "")
        .split(delimiter)
        .filter(Boolean)
        .map((d) => join(d, program));
  for (const c of candidates) {
    try {
      await fs.access(c, constants.X_OK);
      if ((await fs.stat(c)).isFile()) return await fs.realpath(c);
    } catch {
      // try the next
    }
  }
  throw new CliError(`${program}: no such executable${program.includes("/") ? "" : " on PATH"}`);
}

/** Resolve when SIGINT or SIGTERM arrives, after `close` has run. */
export function untilSignal(close: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      close().then(resolve, resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
