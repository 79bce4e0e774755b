/**
 * Templates: `$$cloister::NAME$$` and `$$cloister::NAME:FORMAT$$` in a service's command,
 * environment and file contents; `$$$$` is a literal `$$`. Any other `$$` is an error, so
 * that a template can never be silently left in place or half-expanded.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { a } from "./expect.ts";
import type { SecretKind } from "./schema.ts";

export const FORMATS = ["raw", "hex", "base64", "base64url", "pem", "crt", "chain", "key"] as const;
export type Format = (typeof FORMATS)[number];

/** Formats that apply to any secret: they encode its bytes (see secretBytes). */
export const GENERIC_FORMATS: readonly Format[] = ["raw", "hex", "base64", "base64url"];

/** The formats each kind accepts, and the one used when a template names none. */
export const KIND_FORMATS: Record<SecretKind, { readonly formats: readonly Format[]; readonly default: Format }> = {
  ascii: { formats: GENERIC_FORMATS, default: "raw" },
  binary: { formats: GENERIC_FORMATS, default: "hex" },
  "private-key": { formats: [...GENERIC_FORMATS, "pem"], default: "pem" },
  "x509-ca": { formats: [...GENERIC_FORMATS, "pem"], default: "pem" },
  x509: { formats: [...GENERIC_FORMATS, "pem", "crt", "chain", "key"], default: "crt" },
};

export type TemplatePart =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "secret"; readonly name: string; readonly format: Format | undefined; readonly offset: number };

export interface TemplateSyntaxError {
  /** Offset in the string where the problem starts. */
  readonly offset: number;
  readonly message: string;
}

/** One reference at the start of a string: $$cloister::NAME$$ or $$cloister::NAME:FORMAT$$. */
export const REFERENCE = /^\$\$cloister::([^:$\s]*)(?::([^:$\s]*))?\$\$/;

/** Split a string into literal text and secret references; `errors` is empty when it is well formed. */
export function parseTemplate(source: string): { parts: TemplatePart[]; errors: TemplateSyntaxError[] } {
  const parts: TemplatePart[] = [];
  const errors: TemplateSyntaxError[] = [];
  let text = "";
  let i = 0;
  while (i < source.length) {
    const at = source.indexOf("$$", i);
    if (at < 0) {
      text += source.slice(i);
      break;
    }
    text += source.slice(i, at);
    if (source.startsWith("$$$$", at)) {
      text += "$$";
      i = at + 4;
      continue;
    }
    const m = REFERENCE.exec(source.slice(at));
    if (!m) {
      errors.push({
        offset: at,
        message: `"$$" at character ${at + 1} starts no template: expected $$cloister::NAME$$ or $$cloister::NAME:FORMAT$$ (write $$$$ for a literal $$)`,
      });
      text += "$$";
      i = at + 2;
      continue;
    }
    const [whole, name = "", format] = m;
    if (name === "") errors.push({ offset: at, message: `template at character ${at + 1} names no secret` });
    if (format !== undefined && !(FORMATS as readonly string[]).includes(format)) {
      errors.push({
        offset: at,
        message: `unknown template format "${format}": expected one of ${FORMATS.join(", ")}`,
      });
    }
    if (text) parts.push({ type: "text", text });
    text = "";
    parts.push({ type: "secret", name, format: format as Format | undefined, offset: at });
    i = at + whole.length;
  }
  if (text) parts.push({ type: "text", text });
  return { parts, errors };
}

/** The value of a secret as the runtime receives it from CAS. */
export type SecretMaterial =
  | { readonly kind: "ascii"; readonly value: string }
  | { readonly kind: "binary"; readonly value: Uint8Array }
  /** PKCS#8 PEM. */
  | { readonly kind: "private-key"; readonly key: string }
  /** The CA certificate in PEM. */
  | { readonly kind: "x509-ca"; readonly certificate: string }
  /** The certificate, its issuers (nearest first, excluding the leaf) and its PKCS#8 key, all PEM. */
  | { readonly kind: "x509"; readonly certificate: string; readonly issuers: readonly string[]; readonly key: string };

/**
 * The bytes that the generic formats encode: the text of an ascii secret, the bytes of a binary
 * one, the PKCS#8 DER of a key and the DER of a certificate.
 */
export function secretBytes(secret: SecretMaterial): Buffer {
  switch (secret.kind) {
    case "ascii":
      return Buffer.from(secret.value, "utf8");
    case "binary":
      return Buffer.from(secret.value);
    case "private-key":
      return createPrivateKey(secret.key).export({ type: "pkcs8", format: "der" });
    case "x509-ca":
    case "x509":
      return Buffer.from(new X509Certificate(secret.certificate).raw);
  }
}

/** Render one reference. Throws if the format does not fit the kind (validation prevents that offline). */
export function renderSecret(secret: SecretMaterial, format: Format | undefined): Buffer {
  const spec = KIND_FORMATS[secret.kind];
  const f = format ?? spec.default;
  if (!spec.formats.includes(f)) throw new Error(`format ${f} does not apply to ${a(secret.kind)} secret`);
  switch (f) {
    case "raw":
      return secretBytes(secret);
    case "hex":
    case "base64":
    case "base64url":
      return Buffer.from(secretBytes(secret).toString(f), "ascii");
    case "pem":
      return Buffer.from(pemOf(secret), "utf8");
    case "crt":
      return Buffer.from(ensureNewline((secret as { certificate: string }).certificate), "utf8");
    case "chain": {
      const s = secret as Extract<SecretMaterial, { kind: "x509" }>;
      return Buffer.from([s.certificate, ...s.issuers].map(ensureNewline).join(""), "utf8");
    }
    case "key":
      return Buffer.from(ensureNewline((secret as { key: string }).key), "utf8");
  }
}

function pemOf(secret: SecretMaterial): string {
  switch (secret.kind) {
    case "private-key":
      return ensureNewline(secret.key);
    case "x509-ca":
    case "x509":
      return ensureNewline(secret.certificate);
    default:
      throw new Error(`format pem does not apply to ${a(secret.kind)} secret`);
  }
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const ensureNewline = (pem: string) => (pem.endsWith("\n") ? pem : `${pem}\n`);

/** Expand a parsed template. `lookup` returns the material of a named secret. */
export function renderTemplate(parts: readonly TemplatePart[], lookup: (name: string) => SecretMaterial): Buffer {
  return Buffer.concat(
    parts.map((p) => (p.type === "text" ? Buffer.from(p.text, "utf8") : renderSecret(lookup(p.name), p.format))),
  );
}

/**
 * Expand a template for an argument or environment variable: the result must be text without
 * NUL, since argv and environment strings cannot carry one.
 */
export function renderTemplateText(parts: readonly TemplatePart[], lookup: (name: string) => SecretMaterial): string {
  const bytes = renderTemplate(parts, lookup);
  if (bytes.includes(0))
    throw new Error("the expanded value contains a NUL byte, which argv and environment cannot carry");
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new Error("the expanded value is not UTF-8 text; use the hex or base64 format for bytes");
  }
}
