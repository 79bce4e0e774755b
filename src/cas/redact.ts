/**
 * A policy's text as its readers see it: explicit secret values replaced by <redacted>, and
 * `predecessor` set to the current hash, so that what `get` prints can be edited and sent back
 * as an update (which then fails with 409 if someone else changed the policy in between).
 */
import { isMap, isSeq, parseDocument } from "yaml";
import { REDACTED } from "../policy/schema.ts";

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
