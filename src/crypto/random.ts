/** Random secret values from node:crypto. */
import { randomBytes, randomInt } from "node:crypto";

/** Letters and digits: safe in any configuration file, command line or URL without quoting. */
const ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** `length` characters drawn uniformly (randomInt rejects samples to avoid modulo bias). */
export function randomAscii(length: number): string {
  let out = "";
  for (let i = 0; i < length; i++) out += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)];
  return out;
}

export const randomBinary = (length: number): Buffer => randomBytes(length);
