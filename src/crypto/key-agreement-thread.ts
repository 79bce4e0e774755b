/**
 * The body of KeyAgreementWorker's thread: for each uncompressed P-256 point it is sent (in
 * batches), a fresh ephemeral key and the ECDH shared secret (jwe.ts's agreeEphemeral), or why
 * there is none.
 */
import { parentPort } from "node:worker_threads";
import { agreeEphemeral, JweError } from "./jwe.ts";
import { type AgreementAnswer, type AgreementQuestion, asBuffer } from "./key-agreement-worker.ts";

parentPort!.on("message", (questions: AgreementQuestion[]) => {
  parentPort!.postMessage(questions.map(answer));
});

function answer({ id, point }: AgreementQuestion): AgreementAnswer {
  try {
    const { epk, shared } = agreeEphemeral(asBuffer(point));
    // Fresh arrays: a typed array is cloned with its whole backing buffer, which for a pooled
    // Buffer would carry whatever else shares the pool.
    return { id, epk: new Uint8Array(epk), shared: new Uint8Array(shared) };
  } catch (error) {
    return { id, error: error instanceof JweError ? error.message : String(error) };
  }
}
