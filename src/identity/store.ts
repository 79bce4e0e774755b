/**
 * Identities on a user's machine (DESIGN.md §3): a P-256 key and a self-signed certificate
 * under $CLOISTER_HOME/identities/NAME/, the directory 0700 and the files 0600.
 */
import { X509Certificate } from "node:crypto";
import { constants, promises as fs } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { spkiHash } from "../crypto/keys.ts";
import { selfSignedP256 } from "../crypto/self-signed.ts";

export const DEFAULT_IDENTITY = "default";
const NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$/;
/** Ten years: peers match the key, not the certificate, so its expiry only gets in the way. */
const VALID_DAYS = 3650;

export interface Identity {
  readonly name: string;
  /** Lowercase hex SHA-256 of the SubjectPublicKeyInfo: what policies name. */
  readonly hash: string;
  readonly keyPath: string;
  readonly certificatePath: string;
}

export class IdentityError extends Error {}

/** $CLOISTER_HOME, or ~/.cloister. */
export function cloisterHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.CLOISTER_HOME && env.CLOISTER_HOME.length > 0 ? env.CLOISTER_HOME : join(homedir(), ".cloister");
}

export function checkIdentityName(name: string): void {
  if (!NAME.test(name)) {
    throw new IdentityError(
      `identity name "${name}" is not valid: expected 1–64 characters from [A-Za-z0-9_.-], not starting with '.'`,
    );
  }
}

export function identityPaths(home: string, name: string) {
  checkIdentityName(name);
  const dir = join(home, "identities", name);
  return { dir, keyPath: join(dir, "key.pem"), certificatePath: join(dir, "certificate.pem") };
}

/** Create an identity; refuses to replace an existing one unless `force`. */
export async function createIdentity(home: string, name: string, force: boolean): Promise<Identity> {
  const { dir, keyPath, certificatePath } = identityPaths(home, name);
  if (!force && (await exists(keyPath))) {
    throw new IdentityError(
      `identity "${name}" already exists at ${keyPath}; use --force to replace it (its key is lost)`,
    );
  }
  await fs.mkdir(home, { recursive: true, mode: 0o700 });
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await fs.chmod(dir, 0o700);
  const { keyPem, certificatePem } = await selfSignedP256(`cloister identity ${name}`, VALID_DAYS);
  // Write both beside their final names, then rename: a crash never leaves a key without its certificate.
  await writePrivate(`${certificatePath}.new`, certificatePem);
  await writePrivate(`${keyPath}.new`, keyPem);
  await fs.rename(`${certificatePath}.new`, certificatePath);
  await fs.rename(`${keyPath}.new`, keyPath);
  return { name, hash: spkiHash(keyPem), keyPath, certificatePath };
}

/** Load an identity and check that its certificate belongs to its key. */
export async function loadIdentity(
  home: string,
  name: string,
): Promise<Identity & { keyPem: string; certificatePem: string }> {
  const { keyPath, certificatePath } = identityPaths(home, name);
  let keyPem: string;
  let certificatePem: string;
  try {
    [keyPem, certificatePem] = await Promise.all([fs.readFile(keyPath, "utf8"), fs.readFile(certificatePath, "utf8")]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new IdentityError(
        `no identity "${name}" under ${home}; create one with: cloister identity create${name === DEFAULT_IDENTITY ? "" : ` --name ${name}`}`,
      );
    }
    throw error;
  }
  const stat = await fs.stat(keyPath);
  if ((stat.mode & 0o077) !== 0) {
    throw new IdentityError(
      `${keyPath} is readable by others (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 ${keyPath}`,
    );
  }
  const hash = spkiHash(keyPem);
  if (spkiHash(new X509Certificate(certificatePem).publicKey) !== hash) {
    throw new IdentityError(`${certificatePath} does not belong to the key in ${keyPath}`);
  }
  return { name, hash, keyPath, certificatePath, keyPem, certificatePem };
}

async function writePrivate(path: string, data: string): Promise<void> {
  await fs.rm(path, { force: true });
  const handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await fs.access(path);
    return true;
  } catch {
    return false;
  }
}
