/**
 * The body of CryptoWorker's thread: for each question it is sent (in batches), the answer —
 * for an uncompressed P-256 point, a JWE's key management to it (jwe.ts's manageKey); for a
 * signature check, whether it verifies — or why there is none.
 */
import { parentPort } from "node:worker_threads";
import { type Answer, asBuffer, errorAnswer, type Question } from "./crypto-worker.ts";
import { manageKey } from "./jwe.ts";
import { checkSignature } from "./signature-check.ts";

/**
 * Answers go back as they are ready — whatever is done each time a millisecond has passed since
 * the last message (by the clock: time the thread waits for a core counts too), and the rest at
 * the batch's end — not all at the end. Held to its end, a batch of 16 key managements (5–7 ms)
 * kept the attestations waiting on it from the event loop, and with them the runtimes' next
 * requests: the two threads took turns instead of working at once, and the machine stood
 * 21–25 % idle under a closed loop of 32 runtimes (bench/attest-throughput). Streamed, 11–14 %.
 * A message per answer would wake the event loop for each; a millisecond's worth is 2–5 key
 * managements (an SEV-SNP report's P-384 check, 0.7–1.4 ms, mostly goes alone).
 */
const ANSWER_EVERY_MS = 1;

parentPort!.on("message", (questions: Question[]) => {
  let answers: Answer[] = [];
  let since = performance.now();
  const send = () => {
    parentPort!.postMessage(answers);
    // Copied out by postMessage: the content keys need not stay in this thread's memory.
    for (const sent of answers) if ("cek" in sent) sent.cek.fill(0);
    answers = [];
    since = performance.now();
  };
  for (const question of questions) {
    answers.push(answer(question));
    if (performance.now() - since >= ANSWER_EVERY_MS) send();
  }
  if (answers.length > 0) send();
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
