/**
 * A policy's text as its readers see it: explicit secret values replaced by <redacted>, and
 * `predecessor` set to the current hash, so that what `get` prints can be edited and sent back
 * as an update (which then fails with 409 if someone else changed the policy in between); and
 * the way back, an update's <redacted> values replaced by the stored ones.
 */
import { isMap, isSeq, parseDocument } from "yaml";
import type { NormalizedPolicy } from "../policy/normalize.ts";
import { type GeneratedSecret, isImport, REDACTED } from "../policy/schema.ts";
import type { StoredSecret } from "./secrets.ts";

export function presentForEdit(text: string, currentHash: string): string {
  const doc = parseDocument(redactValues(text), { version: "1.2" });
  doc.set("predecessor", currentHash);
  return doc.toString({ lineWidth: 0 });
}

/** Redact every `secrets[].value` in the text, keeping the author's comments and layout. */
export function redactValues(text: string): string {
  const doc = parseDocument(text, { version: "1.2" });
  const secrets = isMap(doc.contents) ? doc.contents.get("secrets", true) : undefined;
  let changed = false;
  if (isSeq(secrets)) {
    for (const item of secrets.items) {
      if (isMap(item) && item.has("value")) {
        item.set("value", REDACTED);
        changed = true;
      }
    }
  }
  return changed ? doc.toString({ lineWidth: 0 }) : text;
}

/**
 * A policy fetched with `get` shows explicit values as <redacted>; sent back in an update, that
 * means "keep the stored value". Each is replaced by the previous value; those with none to
 * keep (no explicit value of that kind before) are returned in `unkept`, for the caller to
 * refuse — once it has authorised the request, so that strangers learn nothing of the stored
 * secrets from the answer.
 */
export function keepRedactedValues(
  policy: NormalizedPolicy,
  previous: NormalizedPolicy,
  values: Readonly<Record<string, StoredSecret>>,
): { policy: NormalizedPolicy; unkept: GeneratedSecret[] } {
  if (!hasRedacted(policy)) return { policy, unkept: [] };
  const unkept: GeneratedSecret[] = [];
  const secrets = policy.secrets.map((s) => {
    if (isImport(s) || !("value" in s) || s.value !== REDACTED) return s;
    const before = previous.secrets.find((p) => p.name === s.name);
    if (
      !before ||
      isImport(before) ||
      before.kind !== s.kind ||
      !("value" in before) ||
      before.value === undefined ||
      values[s.name]?.spec !== "explicit"
    ) {
      unkept.push(s);
      return s;
    }
    return {
      ...s,
      value: before.value,
      ...(s.kind === "ascii" || s.kind === "binary" ? { size: (before as { size?: number }).size } : {}),
    };
  });
  return { policy: { ...policy, secrets } as NormalizedPolicy, unkept };
}

export function hasRedacted(policy: NormalizedPolicy): boolean {
  return policy.secrets.some((s) => !isImport(s) && "value" in s && s.value === REDACTED);
}
