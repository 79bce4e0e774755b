/**
 * Random bytes for the CAS's hot path, drawn from OpenSSL (node:crypto's randomFillSync) a block
 * at a time and handed out once each.
 *
 * Why: on this machine a randomBytes call costs 4–9 µs whatever its size (filling 4 KiB costs
 * about the same as filling 10 bytes: the cost is the call, not the bytes), and one attestation
 * made four of them — a nonce's random part, a certificate serial, a JWE's content key and IV —
 * 3–4 % of the event loop's time per flow. Node does the same for crypto.randomUUID, which
 * serves UUIDs from a cached block of random data.
 *
 * What it keeps: the bytes are OpenSSL's CSPRNG output, unchanged; each byte is copied out once
 * and zeroed in the pool as it goes, so bytes handed out (a content key, say) do not stay behind
 * in the block. The pool is per thread (module state; a worker thread has its own) and a Node
 * process never forks, so no two holders share a block.
 */
import { randomFillSync } from "node:crypto";

const BLOCK_BYTES = 4096;

let block = Buffer.alloc(0);
let offset = 0;

/** `length` fresh random bytes (a new Buffer the caller owns). */
export function randomBytesPooled(length: number): Buffer {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`randomBytesPooled: bad length ${length}`);
  // Large requests are not worth a block; they go to OpenSSL directly.
  if (length > BLOCK_BYTES / 8) return randomFillSync(Buffer.allocUnsafeSlow(length));
  if (offset + length > block.length) {
    block = randomFillSync(Buffer.allocUnsafeSlow(BLOCK_BYTES));
    offset = 0;
  }
  // Memory of its own (allocUnsafe would place it in Node's shared 8 KiB slab, beside unrelated
  // buffers that a structured clone or a careless subarray could carry along).
  const out = Buffer.allocUnsafeSlow(length);
  block.copy(out, 0, offset, offset + length);
  block.fill(0, offset, offset + length);
  offset += length;
  return out;
}
