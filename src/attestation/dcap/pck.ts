/** The SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1): the platform's TCB, FMSPC, PCE-ID. */
import { certificateExtensions, children, decodeOid, readElement } from "../../crypto/der.ts";
import { VerificationError } from "../verdict.ts";

const SGX_EXTENSION = "1.2.840.113741.1.13.1";

export interface PckExtension {
  /** The 16 CPU SVN components. */
  readonly components: readonly number[];
  readonly pcesvn: number;
  readonly cpusvn: Buffer;
  readonly pceId: string;
  readonly fmspc: string;
}

export function pckExtension(raw: Uint8Array): PckExtension {
  const ext = certificateExtensions(raw).get(SGX_EXTENSION);
  if (!ext) throw new VerificationError("chain", "the PCK certificate has no SGX extension");
  const fields = new Map<string, { tag: number; content: Buffer; element: ReturnType<typeof readElement> }>();
  const top = readElement(ext, 0);
  for (const item of children(ext, top)) {
    const [id, value] = children(ext, item);
    if (!id || !value) continue;
    fields.set(decodeOid(ext.subarray(id.contentStart, id.end)), {
      tag: value.tag,
      content: Buffer.from(ext.subarray(value.contentStart, value.end)),
      element: value,
    });
  }
  const tcb = fields.get(`${SGX_EXTENSION}.2`);
  const pceId = fields.get(`${SGX_EXTENSION}.3`);
  const fmspc = fields.get(`${SGX_EXTENSION}.4`);
  if (!tcb || !pceId || !fmspc)
    throw new VerificationError("chain", "the PCK certificate's SGX extension lacks TCB, PCE-ID or FMSPC");
  const components = new Array<number>(16).fill(-1);
  let pcesvn = -1;
  let cpusvn = Buffer.alloc(0);
  for (const item of children(ext, tcb.element)) {
    const [id, value] = children(ext, item);
    if (!id || !value) continue;
    const oid = decodeOid(ext.subarray(id.contentStart, id.end));
    const n = Number(oid.slice(`${SGX_EXTENSION}.2.`.length));
    const content = ext.subarray(value.contentStart, value.end);
    const integer = () => content.reduce((v, byte) => v * 256 + byte, 0);
    if (n >= 1 && n <= 16) components[n - 1] = integer();
    else if (n === 17) pcesvn = integer();
    else if (n === 18) cpusvn = Buffer.from(content);
  }
  if (components.includes(-1) || pcesvn < 0)
    throw new VerificationError("chain", "the PCK certificate's TCB is incomplete");
  return {
    components,
    pcesvn,
    cpusvn,
    pceId: pceId.content.toString("hex").toUpperCase(),
    fmspc: fmspc.content.toString("hex").toUpperCase(),
  };
}
