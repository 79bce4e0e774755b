/** `cloister collateral import|list` and `cloister cas las enrol|list`: what the CAS trusts. */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { Command } from "commander";
import { type ConnectionFlags, connect, unreachable, withConnection } from "./connection.ts";
import { CliError } from "./errors.ts";
import type { Io } from "./io.ts";
import { type OutputFormat, outputOption, render } from "./output.ts";

type Summary = Record<string, unknown> & { kind: string };

export function collateralCommands(program: Command, cas: Command, io: Io): void {
  const collateral = program
    .command("collateral")
    .description("attestation collateral kept by the CAS (Intel PCCS collateral, AMD VCEKs)");
  withConnection(
    collateral
      .command("import")
      .description("import PCCS collateral (JSON, one object or a list) or AMD VCEK/VLEK certificates (PEM or DER)")
      .argument("<file...>", "files to import")
      .addOption(outputOption()),
  ).action(async (files: string[], opts: ConnectionFlags & { output: OutputFormat }) => {
    const client = await connect(opts, io);
    const results: Summary[] = [];
    for (const file of files) {
      for (const item of await itemsOf(file, io)) {
        results.push(await unreachable(() => client.request<Summary>("POST", "/v1/collateral", item)));
      }
    }
    io.stdout(render(opts.output, { imported: results }, () => results.map(describe).join("\n")));
  });
  withConnection(collateral.command("list").description("what the CAS holds").addOption(outputOption())).action(
    async (opts: ConnectionFlags & { output: OutputFormat }) => {
      const client = await connect(opts, io);
      const r = await unreachable(() => client.request<{ collateral: Summary[] }>("GET", "/v1/collateral"));
      io.stdout(render(opts.output, r, () => r.collateral.map(describe).join("\n") || "(none)"));
    },
  );

  const las = cas.command("las").description("LAS keys the CAS trusts for simulated evidence");
  withConnection(
    las
      .command("enrol")
      .description("trust a LAS's key (administrators)")
      .argument("<key>", "the hash `cloister las start` printed"),
  ).action(async (key: string, opts: ConnectionFlags) => {
    if (!/^[0-9a-fA-F]{64}$/.test(key)) throw new CliError(`${key}: expected the 64-hex-digit LAS key hash`);
    const client = await connect(opts, io);
    await unreachable(() => client.request("POST", "/v1/las", { key: key.toLowerCase() }));
    io.stdout(
      `enrolled LAS key ${key.toLowerCase()} (simulated evidence signed by it is now accepted by policies in simulation mode)\n`,
    );
  });
  withConnection(las.command("list").description("the enrolled LAS keys")).action(async (opts: ConnectionFlags) => {
    const client = await connect(opts, io);
    const r = await unreachable(() => client.request<{ keys: string[] }>("GET", "/v1/las"));
    io.stdout(r.keys.length ? `${r.keys.join("\n")}\n` : "(none)\n");
  });
}

async function itemsOf(file: string, io: Io): Promise<Record<string, unknown>[]> {
  let bytes: Buffer;
  try {
    bytes = await readFile(resolve(io.cwd, file));
  } catch (error) {
    throw new CliError(
      `${file}: ${(error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message}`,
    );
  }
  const text = bytes.toString("utf8");
  if (text.trimStart().startsWith("{") || text.trimStart().startsWith("[")) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new CliError(`${file}: not JSON`);
    }
    return (Array.isArray(json) ? json : [json]).map((dcap) => ({ dcap }));
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (pems) return pems.map((amd_certificate) => ({ amd_certificate: `${amd_certificate}\n` }));
  // DER: one certificate.
  const b64 = bytes.toString("base64");
  return [
    {
      amd_certificate: `-----BEGIN CERTIFICATE-----\n${b64.replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`,
    },
  ];
}

function describe(s: Summary): string {
  return s.kind === "dcap"
    ? `dcap ${s.tee} FMSPC ${s.fmspc} issued ${s.issued} valid until ${s.valid_until}`
    : `amd ${s.key_type} ${s.product} chip ${String(s.chip ?? "-").slice(0, 16)}… valid until ${s.valid_until}`;
}
