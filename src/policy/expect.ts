/**
 * Error messages for schema checks, in one voice: "expected X, got Y" or "missing; expected X".
 * Values that may be secret are never echoed back.
 */
import { isIP } from "node:net";

interface IssueInput {
  readonly input?: unknown;
}

/** An error customisation for zod that says what was expected and what was found. */
export function expected(what: string, options: { secret?: boolean } = {}) {
  return {
    error: (issue: IssueInput) =>
      issue.input === undefined
        ? `missing; expected ${what}`
        : `expected ${what}, got ${describe(issue.input, options.secret === true)}`,
  };
}

/** A short description of a value for an error message. */
export function describe(value: unknown, secret = false): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  switch (typeof value) {
    case "string":
      if (secret) return `a string of ${value.length} characters`;
      return value.length <= 48 ? JSON.stringify(value) : `a string of ${value.length} characters`;
    case "number":
      return secret ? "a number" : String(value);
    case "boolean":
      return secret ? "a boolean" : String(value);
    case "object":
      return "a map";
    default:
      return typeof value;
  }
}

export const isIpLiteral = (host: string): boolean => isIP(host.replace(/^\[(.*)\]$/, "$1")) !== 0;

/** One spelling per IP address: IPv6 compressed and lower-case (RFC 5952), as the URL parser writes it. */
export function canonicalIp(ip: string): string {
  const bare = ip.replace(/^\[(.*)\]$/, "$1");
  if (isIP(bare) !== 6) return bare;
  const host = new URL(`http://[${bare}]/`).hostname;
  return host.slice(1, -1);
}

/** "a binary", "an ascii", "an x509", "an sgx": the article for a term as it is read aloud. */
export const a = (word: string): string => (/^([aeiox]|sgx|snp)/.test(word) ? `an ${word}` : `a ${word}`);
