/** Evidence as users hand it over: binary, hex or base64, of a known kind. */

export type EvidenceKind = "snp-report" | "dcap-quote" | "sim";

/** Decode hex or base64 text; anything else is taken as the binary evidence itself. */
export function decodeEvidence(bytes: Uint8Array): Buffer {
  const text = Buffer.from(bytes).toString("latin1").trim();
  if (text.length > 0 && text.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(text)) return Buffer.from(text, "hex");
  const compact = text.replace(/\s+/g, "");
  if (compact.length > 0 && /^[A-Za-z0-9+/_-]+={0,2}$/.test(compact) && compact.length % 4 !== 1) {
    const decoded = Buffer.from(compact, compact.includes("-") || compact.includes("_") ? "base64url" : "base64");
    if (decoded.length >= 64) return decoded;
  }
  return Buffer.from(bytes);
}

/** What kind of evidence these bytes are, by their header. */
export function evidenceKind(bytes: Uint8Array): EvidenceKind | undefined {
  const b = Buffer.from(bytes);
  if (b[0] === 0x7b && b.subarray(0, 256).toString("latin1").includes('"cloister-sim-v1"')) return "sim";
  if (b.length >= 0x4a0) {
    const version = b.readUInt32LE(0);
    if ((version === 2 || version === 3 || version === 5) && b.readUInt32LE(0x34) === 1) return "snp-report";
  }
  if (b.length >= 48) {
    const version = b.readUInt16LE(0);
    if ((version === 3 || version === 4 || version === 5) && b.readUInt16LE(2) === 2) return "dcap-quote";
  }
  return undefined;
}
