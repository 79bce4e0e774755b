/**
 * A runtime's volume work in a loop, for the crash test: open the volume (reconciling as a start
 * does), then change it and commit, again and again, until killed. Input as JSON in argv[2]:
 * {volume, tree, plaintext, cas: {url, casKey}, keyPem, certificatePem, policy}.
 */
import { appendFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CasClient } from "../../src/client/cas-client.ts";
import { commitVolume, openVolume, type TagKeeper } from "../../src/runtime/volumes.ts";

const input = JSON.parse(process.argv[2]!);
const cas = new CasClient({ ...input.cas, keyPem: input.keyPem, certificatePem: input.certificatePem });
const tags: TagKeeper = {
  commit: async (volume, previous, next) => {
    await cas.request("POST", `/v1/volumes/${encodeURIComponent(input.policy)}/${volume}/tag`, { previous, next });
  },
};
rmSync(input.plaintext, { recursive: true, force: true });
const open = await openVolume(input.volume, input.tree, input.plaintext, tags);
process.stdout.write("ready\n");
const records = join(open.plaintext, "records.txt");
for (let i = 0; ; i++) {
  let n = 0;
  try {
    n = readFileSync(records, "utf8").split("\n").filter(Boolean).length;
  } catch {
    // the first record
  }
  appendFileSync(records, `record-${n}\n`);
  // Something larger to seal, rewritten each time, and a file that comes and goes.
  writeFileSync(join(open.plaintext, "blob.bin"), Buffer.alloc(300_000, i % 251));
  if (i % 2 === 0) writeFileSync(join(open.plaintext, "sometimes"), String(i));
  else rmSync(join(open.plaintext, "sometimes"), { force: true });
  const tag = await commitVolume(open, tags);
  process.stdout.write(`committed ${tag}\n`);
}
