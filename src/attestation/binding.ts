/** The report_data that binds evidence to one attestation exchange (DESIGN.md §5). */
import { createHash } from "node:crypto";

/** SHA-512("cloister-attest-v1" ‖ nonce ‖ SPKI(K)): 64 bytes. */
export function expectedReportData(nonce: Buffer, spki: Buffer): Buffer {
  return createHash("sha512").update("cloister-attest-v1").update(nonce).update(spki).digest();
}
