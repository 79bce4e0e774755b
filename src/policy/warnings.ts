/**
 * Warnings: what a valid policy says that its author probably did not mean. They never fail a
 * check (the policy is valid, and its hash is what it is); `cloister policy check` prints them
 * like errors, FILE:LINE:COL: warning: field.path: message. Two rules:
 *
 * - A template that lost its `$$`. A policy written through an unquoted shell heredoc gets
 *   `$$` replaced by the shell's PID (`4242cloister::api_key4242`), a Makefile recipe turns
 *   `$$` into `$` and the shell then drops `$cloister` (`::api_key:hex$`). Either way the text
 *   is valid and reaches the program as it is, instead of the secret.
 * - A secret nothing uses: no template, TLS setting, volume key, service_ca or issuer names it,
 *   and it is not exported. Usually a misspelt reference elsewhere, or a leftover.
 *
 * Only policies that pass are examined: the rules assume references that resolve.
 */
import { templatedFields } from "./cross-check.ts";
import { isImport, type Policy } from "./schema.ts";
import { FORMATS, parseTemplate, REFERENCE } from "./templates.ts";
import type { PolicyProblem } from "./validate.ts";

export function policyWarnings(policy: Policy): PolicyProblem[] {
  const warnings: PolicyProblem[] = [];
  const declared = new Set(policy.secrets.map((s) => s.name));
  policy.services.forEach((service, i) => {
    for (const t of templatedFields(service, ["services", i])) {
      for (const message of lostDelimiters(t.text, declared)) warnings.push({ path: t.path, message, at: "value" });
    }
  });
  const used = usedSecrets(policy);
  for (const [i, secret] of policy.secrets.entries()) {
    if (used.has(secret.name) || secret.export.length > 0) continue;
    warnings.push({
      path: ["secrets", i, "name"],
      at: "value",
      message: `secret "${secret.name}" is used by nothing: no template, TLS setting, volume key, service_ca or issuer names it, and it is not exported`,
    });
  }
  return warnings;
}

const NAME = "[A-Za-z_][A-Za-z0-9_.-]*";
/** Longest first, so that base64url is not read as base64 followed by "url". */
const FORMAT = `(?::(${[...FORMATS].sort((a, b) => b.length - a.length).join("|")}))?`;
/** `cloister::NAME`: unless an escape ($$$$, blanked to NUL) stands right before it, on purpose. */
const BARE = new RegExp(`(?<!\\0)cloister::(${NAME})?${FORMAT}`, "g");
/** `::NAME`: not part of a word or of a longer `a::b` (C++ std::string, IPv6 ::1, Perl Foo::Bar). */
const REMNANT = new RegExp(`(?<![A-Za-z0-9_.:\\0-])::(${NAME})${FORMAT}`, "g");

/** Messages for the broken templates in `text`, a field of a valid policy. */
function lostDelimiters(text: string, declared: ReadonlySet<string>): string[] {
  const literal = literalText(text);
  const out: string[] = [];
  for (const m of literal.matchAll(BARE)) {
    // The shell's PID follows the name when $$ became it: name the declared secret it starts with.
    const name = declaredPrefix(m[1] ?? "", declared) ?? m[1] ?? "NAME";
    out.push(
      `"${m[0]}" at character ${m.index + 1} looks like a template that lost its $$ delimiters (a shell or make expands $$): expected ${template(name, m[2])}`,
    );
  }
  for (const m of literal.matchAll(REMNANT)) {
    if (!declared.has(m[1]!)) continue; // a secret's name is what makes "::x" look like a remnant
    out.push(`"${m[0]}" at character ${m.index + 1} looks like what a shell or make left of ${template(m[1]!, m[2])}`);
  }
  return out;
}

const template = (name: string, format: string | undefined) =>
  `$$cloister::${name}${format === undefined ? "" : `:${format}`}$$`;

function declaredPrefix(name: string, declared: ReadonlySet<string>): string | undefined {
  let best: string | undefined;
  for (const d of declared) if (name.startsWith(d) && d.length > (best?.length ?? 0)) best = d;
  return best;
}

/**
 * `text` with its references and `$$$$` escapes blanked out by NULs of the same length: the
 * literal text, at its offsets. (A policy that passed holds no other `$$`.)
 */
function literalText(text: string): string {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const at = text.indexOf("$$", i);
    if (at < 0) return out + text.slice(i);
    out += text.slice(i, at);
    const length = text.startsWith("$$$$", at) ? 4 : (REFERENCE.exec(text.slice(at))?.[0].length ?? 2);
    out += "\0".repeat(length);
    i = at + length;
  }
  return out;
}

/** Every secret something in the policy names. */
function usedSecrets(policy: Policy): Set<string> {
  const used = new Set<string>();
  const use = (name: string | null | undefined) => {
    if (typeof name === "string") used.add(name);
  };
  use(policy.security.service_ca);
  for (const v of policy.volumes) use(v.key);
  for (const s of policy.secrets) {
    // An issuer is used by what it issues; an unused certificate is reported itself, once.
    if (!isImport(s) && (s.kind === "x509" || s.kind === "x509-ca")) use(s.issuer);
  }
  policy.services.forEach((service, i) => {
    for (const t of templatedFields(service, ["services", i])) {
      for (const part of parseTemplate(t.text).parts) if (part.type === "secret") use(part.name);
    }
    for (const t of service.tls.inbound) {
      use(t.certificate);
      use(t.client_ca);
    }
    for (const t of service.tls.outbound) {
      use(t.ca);
      use(t.certificate);
    }
  });
  return used;
}
