/**
 * The master key: 32 random bytes as 64 hex digits in a file only its owner may read. It
 * wraps every data key; it never appears in a log, an error or the database.
 */
import { randomBytes } from "node:crypto";
import { constants, promises as fs } from "node:fs";

export class MasterKeyError extends Error {}

export async function loadOrCreateMasterKey(path: string): Promise<{ key: Buffer; created: boolean }> {
  try {
    const handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const key = randomBytes(32);
    try {
      await handle.writeFile(`${key.toString("hex")}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return { key, created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
      throw new MasterKeyError(`cannot create the master key file ${path}: ${(error as Error).message}`);
    }
  }
  const stat = await fs.stat(path);
  if ((stat.mode & 0o077) !== 0) {
    throw new MasterKeyError(
      `${path} is readable by others (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 ${path}`,
    );
  }
  const text = (await fs.readFile(path, "utf8")).trim();
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new MasterKeyError(`${path} does not hold a master key: expected 64 hex digits (32 bytes)`);
  }
  return { key: Buffer.from(text, "hex"), created: false };
}
