/**
 * DER (ITU-T X.690) encoding of the few ASN.1 types an X.509 certificate needs, and a reader
 * that walks tag-length-value elements. A format, not cryptography: signatures come from
 * node:crypto, and every certificate built with this is parsed back by OpenSSL in the tests.
 */

export type Der = Buffer;

/** How many bytes the DER length of `n` takes: one below 128, else one more than n's own bytes. */
function lengthSize(n: number): number {
  if (n < 0x80) return 1;
  let size = 1;
  for (let v = n; v > 0; v = Math.floor(v / 256)) size++;
  return size;
}

/** Write tag and DER length of `n` at the start of `out`; returns where the content begins. */
function writeHeader(out: Buffer, tag: number, n: number): number {
  out[0] = tag;
  const size = lengthSize(n);
  if (size === 1) {
    out[1] = n;
    return 2;
  }
  out[1] = 0x80 | (size - 1);
  for (let i = size, v = n; i > 1; i--, v = Math.floor(v / 256)) out[i] = v & 0xff;
  return 1 + size;
}

// Each element is built in one allocation, its header and content written in place: a
// certificate has some forty elements, and allocating header, length and content separately
// and then concatenating them cost more than the signature (measured: ~100 µs of ~145 µs per
// certificate before, with ~40 µs the ECDSA signature itself).

/** One element: tag, DER length, content. */
export const tlv = (tag: number, content: Uint8Array): Der => elementOf(tag, [content]);

/** One element whose content is `parts`, one after another. */
function elementOf(tag: number, parts: readonly Uint8Array[]): Der {
  let n = 0;
  for (const part of parts) n += part.length;
  const out = Buffer.allocUnsafe(1 + lengthSize(n) + n);
  let at = writeHeader(out, tag, n);
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export const sequence = (...items: Der[]): Der => elementOf(0x30, items);
export const set = (...items: Der[]): Der => {
  // DER sorts SET OF elements by their encodings.
  return elementOf(0x31, [...items].sort(Buffer.compare));
};
export const explicit = (n: number, inner: Der): Der => tlv(0xa0 | n, inner);
export const implicitPrimitive = (n: number, content: Uint8Array): Der => tlv(0x80 | n, content);
export const octetString = (bytes: Uint8Array): Der => tlv(0x04, bytes);
export const utf8String = (text: string): Der => tlv(0x0c, Buffer.from(text, "utf8"));
export const ia5String = (text: string): Der => tlv(0x16, Buffer.from(text, "ascii"));
export const NULL: Der = Buffer.from([0x05, 0x00]);
const ZERO = Buffer.from([0]);
export const boolean = (value: boolean): Der => Buffer.from([0x01, 0x01, value ? 0xff : 0x00]);

/** A non-negative INTEGER from its big-endian magnitude. */
export function unsignedInteger(magnitude: Uint8Array): Der {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const trimmed = magnitude.subarray(i);
  if (trimmed.length === 0) return tlv(0x02, ZERO);
  return trimmed[0]! & 0x80 ? elementOf(0x02, [ZERO, trimmed]) : tlv(0x02, trimmed);
}

export const smallInteger = (n: number): Der => {
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new Error(`INTEGER ${n} out of range`);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return unsignedInteger(Buffer.from(bytes.length ? bytes : [0]));
};

/** Encoded OIDs by their dotted form: a certificate names the same dozen on every issue. */
const encodedOids = new Map<string, Der>();
const OIDS_KEPT = 256;

/** An OBJECT IDENTIFIER from its dotted form. The result is shared: callers must not write to it. */
export function oid(dotted: string): Der {
  let encoded = encodedOids.get(dotted);
  if (!encoded) {
    encoded = encodeOid(dotted);
    if (encodedOids.size < OIDS_KEPT) encodedOids.set(dotted, encoded);
  }
  return encoded;
}

function encodeOid(dotted: string): Der {
  const arcs = dotted.split(".").map((a) => {
    if (!/^\d+$/.test(a)) throw new Error(`bad OID ${dotted}`);
    return Number(a);
  });
  if (arcs.length < 2 || arcs[0]! > 2 || (arcs[0]! < 2 && arcs[1]! >= 40)) throw new Error(`bad OID ${dotted}`);
  const out: number[] = [];
  const push = (v: number) => {
    const chunk = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) chunk.unshift((x & 0x7f) | 0x80);
    out.push(...chunk);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const arc of arcs.slice(2)) push(arc);
  return tlv(0x06, Buffer.from(out));
}

/** A BIT STRING holding whole bytes (a key, a signature). */
export const bitString = (bytes: Uint8Array): Der => elementOf(0x03, [ZERO, bytes]);

/**
 * A named BIT STRING (as KeyUsage): bit 0 is the most significant bit of the first byte;
 * DER drops trailing zero bits and records how many bits of the last byte are unused.
 */
export function namedBits(bits: readonly number[]): Der {
  if (bits.length === 0) return Buffer.from([0x03, 0x01, 0x00]);
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  const unused = 7 - (highest & 7);
  return elementOf(0x03, [Buffer.from([unused]), bytes]);
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5), to the second, in UTC. */
export function time(date: Date): Der {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = date.getUTCFullYear();
  if (year < 1950 || year > 9999) throw new Error(`time ${iso} cannot be encoded`);
  return year < 2050 ? tlv(0x17, Buffer.from(digits.slice(2), "ascii")) : tlv(0x18, Buffer.from(digits, "ascii"));
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface Element {
  readonly tag: number;
  /** Offset of the first byte of the element (its tag). */
  readonly start: number;
  /** Offset of the content. */
  readonly contentStart: number;
  /** Offset just past the element. */
  readonly end: number;
}

export class DerError extends Error {}

/** The element at `offset`; lengths are checked against `limit`, never trusted. */
export function readElement(buf: Uint8Array, offset: number, limit = buf.length): Element {
  if (offset + 2 > limit) throw new DerError("truncated element");
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not supported");
  let len = buf[offset + 1]!;
  let pos = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || pos + n > limit) throw new DerError("bad length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + i]!;
    pos += n;
  }
  if (pos + len > limit) throw new DerError("element runs past its container");
  return { tag, start: offset, contentStart: pos, end: pos + len };
}

/** The elements directly inside a constructed element. */
export function children(buf: Uint8Array, parent: Element): Element[] {
  const out: Element[] = [];
  for (let at = parent.contentStart; at < parent.end; ) {
    const e = readElement(buf, at, parent.end);
    out.push(e);
    at = e.end;
  }
  return out;
}

/** The dotted form of an OID's content bytes. */
export function decodeOid(content: Uint8Array): string {
  const arcs: number[] = [];
  let value = 0;
  for (const byte of content) {
    value = value * 128 + (byte & 0x7f);
    if ((byte & 0x80) === 0) {
      if (arcs.length === 0) arcs.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      else arcs.push(value);
      value = 0;
    }
  }
  return arcs.join(".");
}

/** A certificate's extensions by OID: the contents of each extnValue OCTET STRING. */
export function certificateExtensions(raw: Uint8Array): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const cert = readElement(raw, 0);
  const tbs = children(raw, cert)[0];
  if (!tbs) throw new DerError("not a certificate");
  const wrapper = children(raw, tbs).find((f) => f.tag === 0xa3);
  if (!wrapper) return out;
  const list = children(raw, wrapper)[0];
  if (!list) return out;
  for (const ext of children(raw, list)) {
    const parts = children(raw, ext);
    const id = parts[0];
    const value = parts[parts.length - 1];
    if (id?.tag !== 0x06 || !value || value.tag !== 0x04) throw new DerError("malformed extension");
    out.set(decodeOid(raw.subarray(id.contentStart, id.end)), Buffer.from(raw.subarray(value.contentStart, value.end)));
  }
  return out;
}
