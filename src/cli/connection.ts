/**
 * How a command reaches the CAS: its address, its pinned key, and the caller's identity.
 * Flags win over the environment (CLOISTER_CAS_ADDR, CLOISTER_CAS_KEY, CLOISTER_HOME).
 */
import { Option } from "commander";
import { CasClient, CasPinError, CasRequestError, CasUnreachableError, fetchCasKey } from "../client/cas-client.ts";
import { cloisterHome, DEFAULT_IDENTITY, IdentityError, loadIdentity } from "../identity/store.ts";
import { CliError, UsageError } from "./errors.ts";
import type { Io } from "./io.ts";

export const DEFAULT_CAS = "https://127.0.0.1:8081";

export interface ConnectionFlags {
  cas?: string;
  casKey?: string;
  identity: string;
}

/** Adds --cas, --cas-key and --identity to a command. */
export function withConnection<T extends { addOption(o: Option): T }>(command: T): T {
  return command
    .addOption(new Option("--cas <url>", `CAS address (env CLOISTER_CAS_ADDR; default ${DEFAULT_CAS})`))
    .addOption(new Option("--cas-key <hash>", "the CAS key hash to pin (env CLOISTER_CAS_KEY)"))
    .addOption(new Option("--identity <name>", "your identity under $CLOISTER_HOME").default(DEFAULT_IDENTITY));
}

/** A pinned, authenticated client; refuses like ssh when no pin is known. */
export async function connect(flags: ConnectionFlags, io: Io): Promise<CasClient> {
  const url = flags.cas ?? io.env.CLOISTER_CAS_ADDR ?? DEFAULT_CAS;
  const pin = casKeyOf(flags.casKey, io.env);
  let identity: Awaited<ReturnType<typeof loadIdentity>>;
  try {
    identity = await loadIdentity(cloisterHome(io.env), flags.identity);
  } catch (error) {
    if (error instanceof IdentityError) throw new CliError(error.message);
    throw error;
  }
  const tls = { url, keyPem: identity.keyPem, certificatePem: identity.certificatePem };
  if (!pin) {
    const key = await unreachable(() => fetchCasKey(tls));
    throw new CliError(
      [
        `the CAS at ${url} is not pinned. Its key is`,
        `  ${key}`,
        "If that is the key you expect (compare it with what `cloister cas start` printed), pin it:",
        `  export CLOISTER_CAS_KEY=${key}     or pass --cas-key ${key}`,
      ].join("\n"),
    );
  }
  return new CasClient({ ...tls, casKey: pin });
}

/**
 * The pinned CAS key, from --cas-key or else CLOISTER_CAS_KEY, lower-cased; undefined when
 * neither is set. A malformed one is a usage error (exit 2) from either place: nothing was tried,
 * and trying again as it is cannot work. Says what is wrong with it, most often a key cut short.
 */
export function casKeyOf(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  const pin = flag ?? env.CLOISTER_CAS_KEY;
  if (!pin) return undefined;
  if (/^[0-9a-fA-F]{64}$/.test(pin)) return pin.toLowerCase();
  const digits = pin.replace(/[^0-9a-fA-F]/g, "").length;
  const others = [...new Set(pin.replace(/[0-9a-fA-F]/g, ""))];
  const shown = others
    .slice(0, 3)
    .map((c) => JSON.stringify(c))
    .join(", ");
  const has =
    others.length === 0
      ? `${digits}`
      : `${digits} and ${pin.length - digits} other character${pin.length - digits === 1 ? "" : "s"} (${shown}${others.length > 3 ? ", …" : ""})`;
  throw new UsageError(
    `${flag !== undefined ? "--cas-key" : "CLOISTER_CAS_KEY"}: a CAS key is 64 hex digits; this one has ${has}: copy the whole key that cloister dev or cloister cas start printed`,
  );
}

/** Run a CAS call, turning transport and API failures into one-line CLI errors. */
export async function unreachable<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof CasUnreachableError) throw new CliError(unreachableMessage(error));
    if (error instanceof CasPinError) throw new CliError(error.message);
    if (error instanceof CasRequestError)
      throw new CliError(`CAS refused (${error.status} ${error.code}): ${error.message}`);
    throw error;
  }
}

/**
 * A CAS that cannot be reached, in one line. Refused: nothing listens at the address, so say
 * what to start, or where else to look.
 */
export function unreachableMessage(error: CasUnreachableError): string {
  if (error.code !== "ECONNREFUSED") return error.message;
  return `${error.message} (nothing listens there): start a CAS with cloister dev (development) or cloister cas start, or point --cas or CLOISTER_CAS_ADDR at yours`;
}
