/** `cloister attest verify` and `cloister measure`: evidence inspection on a user's machine. */
import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import { resolve } from "node:path";
import { type Command, Option } from "commander";
import { Collateral } from "../attestation/dcap/collateral.ts";
import { dcapVerdict, verifyDcapQuote } from "../attestation/dcap/verify.ts";
import { decodeEvidence, evidenceKind } from "../attestation/evidence.ts";
import { simVerdict, verifySimEvidence } from "../attestation/sim/evidence.ts";
import { snpVerdict, verifySnpReport } from "../attestation/snp/verify.ts";
import { type Verdict, VerificationError } from "../attestation/verdict.ts";
import { CliError, UsageError } from "./errors.ts";
import type { Io } from "./io.ts";
import { type OutputFormat, outputOption, render } from "./output.ts";
import { findProgram } from "./process.ts";

export function attestCommands(program: Command, io: Io): void {
  const attest = program.command("attest").description("inspect and verify TEE evidence");
  attest
    .command("verify")
    .description("verify evidence offline and print its verdict")
    .argument("<evidence>", "an SEV-SNP report or a DCAP quote (binary, hex or base64), or simulated evidence (JSON)")
    .option("--vcek <file>", "the VCEK or VLEK certificate (DER or PEM) of an SEV-SNP report")
    .option("--collateral <file>", "PCCS collateral (JSON) for a DCAP quote")
    .option("--las-key <hash>", "the LAS key trusted for simulated evidence (cloister las start prints it)")
    .addOption(new Option("--at <time>", "check validity at this ISO time instead of now"))
    .addOption(outputOption())
    .addHelpText(
      "after",
      `
Exit 0: the evidence is authentic; the verdict names its measurements as policies do.
Exit 1: the first check that failed (format, chain, signature, expired, chip, tcb, …).
Status is Intel's TCB status for DCAP; for SEV-SNP, AMD publishes none ("Unevaluated"): what
is verified is the chain to AMD's pinned root and that the key was issued for reported_tcb.`,
    )
    .action(
      async (
        file: string,
        opts: { vcek?: string; collateral?: string; lasKey?: string; at?: string; output: OutputFormat },
      ) => {
        const at = opts.at === undefined ? undefined : new Date(opts.at);
        if (at && Number.isNaN(at.getTime()))
          throw new UsageError(`--at ${opts.at}: expected an ISO time such as 2025-07-01T00:00:00Z`);
        const evidence = decodeEvidence(await readInput(file, io));
        const kind = evidenceKind(evidence);
        let verdict: Verdict;
        try {
          if (kind === "snp-report") {
            if (!opts.vcek)
              throw new UsageError(
                "an SEV-SNP report needs the certificate of the key that signed it: --vcek FILE (DER or PEM)",
              );
            const key = await readInput(opts.vcek, io);
            verdict = snpVerdict(
              verifySnpReport(evidence, {
                endorsementKey: looksLikePem(key) ? key.toString("utf8") : key,
                ...(at ? { at } : {}),
              }),
            );
          } else if (kind === "dcap-quote") {
            if (!opts.collateral)
              throw new UsageError(
                "a DCAP quote needs its collateral: --collateral FILE (PCCS JSON: TCB info, QE identity, CRLs, chains)",
              );
            const collateral = await readCollateral(opts.collateral, io);
            verdict = dcapVerdict(verifyDcapQuote(evidence, collateral, at ? { at } : {}));
          } else if (kind === "sim") {
            if (!opts.lasKey)
              throw new UsageError("simulated evidence is only as good as the LAS that signed it: --las-key HASH");
            verdict = simVerdict(
              verifySimEvidence(evidence, { trustedKeys: new Set([opts.lasKey.toLowerCase()]), ...(at ? { at } : {}) }),
            );
          } else {
            throw new CliError(
              `${file}: not an SEV-SNP report, a DCAP quote or simulated evidence (${evidence.length} bytes)`,
            );
          }
        } catch (error) {
          if (error instanceof VerificationError) throw new CliError(`refused: ${error.message}`);
          throw error;
        }
        io.stdout(render(opts.output, verdict, () => describeVerdict(verdict)));
      },
    );

  program
    .command("measure")
    .description("print the measurement a policy names for a program")
    .requiredOption("--tee <tee>", "sim (the only one measured here: hardware TEEs are measured by their toolchains)")
    .argument("<program>", "a path, or a name looked up on PATH")
    .addOption(outputOption())
    .action(async (program: string, opts: { tee: string; output: OutputFormat }) => {
      if (opts.tee !== "sim") {
        throw new UsageError(
          `--tee ${opts.tee}: only sim; SGX, TDX and SNP measurements come from their build tools (e.g. gramine-sgx-sign, the TD's firmware)`,
        );
      }
      const path = await findProgram(program, io);
      const digest = createHash("sha256")
        .update(await fs.readFile(path))
        .digest("hex");
      io.stdout(render(opts.output, { tee: "sim", digest, program: path }, () => digest));
    });
}

async function readInput(file: string, io: Io): Promise<Buffer> {
  try {
    return await fs.readFile(resolve(io.cwd, file));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CliError(
      `${file}: ${code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory" : (error as Error).message}`,
    );
  }
}

async function readCollateral(file: string, io: Io): Promise<Collateral> {
  let raw: unknown;
  try {
    raw = JSON.parse((await readInput(file, io)).toString("utf8"));
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`${file}: not JSON`);
  }
  const parsed = Collateral.safeParse(raw);
  if (!parsed.success) {
    const missing = parsed.error.issues.map((i) => i.path.join(".")).join(", ");
    throw new CliError(`${file}: not PCCS collateral (problems with: ${missing})`);
  }
  return parsed.data;
}

const looksLikePem = (b: Buffer) => b.subarray(0, 64).toString("latin1").includes("-----BEGIN");

function describeVerdict(v: Verdict): string {
  const lines = [
    `verified: ${v.tee}${v.simulated ? " (SIMULATED: no hardware protection)" : ""}`,
    `status: ${v.status}${v.simulated ? " (simulated: there is no TCB)" : v.status === "Unevaluated" ? " (the vendor publishes no TCB status)" : ""}`,
    `debug: ${v.debug ? "YES (memory open to the host)" : "no"}`,
    ...(v.advisories.length ? [`advisories: ${v.advisories.join(", ")}`] : []),
    "measurements:",
    ...Object.entries(v.measurements).map(([k, m]) => `  ${k}: ${m}`),
    `report_data: ${v.report_data}`,
    ...(v.collateral_expires ? [`valid until: ${v.collateral_expires}`] : []),
    ...Object.entries(v.details).map(([k, d]) => `${k}: ${typeof d === "object" ? JSON.stringify(d) : String(d)}`),
  ];
  return lines.join("\n");
}
