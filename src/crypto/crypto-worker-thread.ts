/**
 * The body of CryptoWorker's thread: for each question it is sent (in batches), the answer —
 * for an uncompressed P-256 point, a JWE's key management to it (jwe.ts's manageKey); for a
 * signature check, whether it verifies — or why there is none.
 */
import { parentPort } from "node:worker_threads";
import { checkSignature } from "../attestation/pending-signature.ts";
import { type Answer, asBuffer, errorAnswer, type Question } from "./crypto-worker.ts";
import { manageKey } from "./jwe.ts";

parentPort!.on("message", (questions: Question[]) => {
  const answers = questions.map(answer);
  parentPort!.postMessage(answers);
  // Copied out by postMessage: the content keys need not stay in this thread's memory.
  for (const sent of answers) if ("cek" in sent) sent.cek.fill(0);
});

function answer(question: Question): Answer {
  const { id } = question;
  try {
    if ("signature" in question) return { id, verified: checkSignature(question.signature) === true };
    const { epk, cek, encryptedKey } = manageKey(asBuffer(question.point));
    // Fresh arrays: a typed array is cloned with its whole backing buffer, which for a pooled
    // Buffer would carry whatever else shares the pool.
    const answer = {
      id,
      epk: new Uint8Array(epk),
      cek: new Uint8Array(cek),
      encryptedKey: new Uint8Array(encryptedKey),
    };
    cek.fill(0);
    return answer;
  } catch (error) {
    return errorAnswer(id, error);
  }
}
