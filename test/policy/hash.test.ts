/**
 * The policy hash depends on meaning only. Property tests: random valid policies, written
 * out in random YAML styles (block or flow, plain or quoted, keys shuffled, comments, sets
 * reordered, defaults spelled out or omitted, hex in either case, equivalent durations and
 * modes, JSON), always hash the same; a random change of meaning always changes the hash.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Document, visit } from "yaml";
import { checkPolicyText, type PolicyCheck } from "../../src/policy/check.ts";
import { seededRandom } from "../helpers/rng.ts";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const hexChars = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));
const segment = fc.stringMatching(/^[a-z][a-z0-9_-]{0,7}$/);
const identity = hexChars(64);

/** A random valid policy, as the plain data an author would write (defaults omitted). */
const policyArb = fc
  .record({
    name: fc.array(segment, { minLength: 1, maxLength: 3 }).map((s) => s.join("/")),
    readers: fc.uniqueArray(identity, { maxLength: 3 }),
    threshold: fc.option(fc.uniqueArray(identity, { minLength: 2, maxLength: 4 }), { nil: undefined }),
    tolerate: fc.subarray(["debug-mode", "outdated-tcb", "configuration-needed", "sw-hardening-needed"]),
    advisories: fc.uniqueArray(
      fc.integer({ min: 1, max: 99999 }).map((n) => `INTEL-SA-${String(n).padStart(5, "0")}`),
      {
        maxLength: 3,
      },
    ),
    asciiSizes: fc.uniqueArray(fc.integer({ min: 1, max: 512 }), { minLength: 1, maxLength: 3 }),
    binarySize: fc.integer({ min: 1, max: 64 }),
    keyType: fc.constantFrom("P-256", "P-384", "Ed25519", "RSA-2048", "RSA-3072"),
    migrate: fc.boolean(),
    // An explicit value costs a 30 ms scrypt commitment per hash: present in a third of the runs.
    explicit: fc.option(fc.stringMatching(/^[ -~]{1,24}$/), { nil: undefined, freq: 2 }),
    days: fc.integer({ min: 1, max: 3000 }),
    sans: fc.uniqueArray(
      fc.stringMatching(/^[a-z][a-z0-9-]{0,7}$/).map((s) => `dns:${s}.example`),
      { maxLength: 3 },
    ),
    digests: fc.uniqueArray(hexChars(64), { minLength: 1, maxLength: 3 }),
    args: fc.array(fc.stringMatching(/^[a-z0-9=-]{1,8}$/), { maxLength: 3 }),
    env: fc.dictionary(fc.stringMatching(/^[A-Z][A-Z0-9_]{0,6}$/), fc.stringMatching(/^[a-z0-9 ]{0,8}$/), {
      maxKeys: 3,
    }),
    modes: fc.array(fc.constantFrom("0400", "0444", "0600", "0640", "0755"), { minLength: 1, maxLength: 3 }),
    pwd: fc.constantFrom("/", "/srv", "/srv/app"),
    volume: fc.constantFrom("rollback-protected", "ephemeral", "no-rollback-protection"),
    importKind: fc.constantFrom(null, "binary", "x509"),
  })
  .map((r): Obj => {
    const secrets: Obj[] = [
      ...r.asciiSizes.map((size, i): Obj => ({ name: `pw${i}`, kind: "ascii", size })),
      { name: "blob", kind: "binary", size: r.binarySize },
      { name: "signing", kind: "private-key", key_type: r.keyType, migrate: r.migrate },
      { name: "ca", kind: "x509-ca", common_name: "Test CA", valid_for: `${r.days}d` },
      { name: "cert", kind: "x509", issuer: "ca", san: r.sans, valid_for: `${r.days}d` },
      {
        name: "imported",
        import: { policy: "other/owner", secret: "key", ...(r.importKind ? { kind: r.importKind } : {}) },
      },
      { name: "volkey", kind: "binary", size: 32, export: [{ policy: "partner/x" }] },
    ];
    if (r.explicit !== undefined) secrets.push({ name: "given", kind: "ascii", value: r.explicit });
    const access: Obj = { read: ["CREATOR", ...r.readers] };
    if (r.threshold) access.update = [{ require_at_least: { count: 2, of: r.threshold } }];
    return {
      version: "1",
      name: r.name,
      access_policy: access,
      security: { attestation: { mode: "simulation", tolerate: r.tolerate, ignore_advisories: r.advisories } },
      services: [
        {
          name: "app",
          measurements: r.digests.map((digest) => ({ tee: "sim", digest })),
          command: ["/usr/bin/app", ...r.args, "--pw=$$cloister::pw0$$"],
          environment: { ...r.env, BLOB: "$$cloister::blob:base64$$", IMPORTED: "$$cloister::imported:hex$$" },
          pwd: r.pwd,
          files: r.modes.map((mode, i) => ({ path: `/etc/app/f${i}`, content: `$$cloister::cert:chain$$ ${i}`, mode })),
          volumes: [{ name: "data", path: "/var/data" }],
          tls: { inbound: [{ listen: "127.0.0.1:8443", forward: "127.0.0.1:8080", certificate: "cert" }] },
        },
        {
          name: "worker",
          measurements: [{ tee: "sim", digest: r.digests[0]! }],
          command: ["/usr/bin/worker"],
        },
      ],
      secrets,
      volumes: [
        { name: "data", update_policy: r.volume },
        { name: "keyed", key: "volkey" },
      ],
    };
  });

/** The same meaning with every default written out (a random subset of them). */
function spellOutDefaults(p: Obj, pick: (n: number) => boolean): Obj {
  const q = structuredClone(p) as Obj;
  let i = 0;
  const maybe = (target: Obj, key: string, value: Json) => {
    if (target[key] === undefined && pick(i++)) target[key] = value;
  };
  const access = q.access_policy as Obj;
  maybe(access, "update", ["CREATOR"]);
  maybe(access, "create_policies", ["CREATOR"]);
  const security = q.security as Obj;
  maybe(security, "service_ca", null);
  for (const s of q.services as Obj[]) {
    maybe(s, "environment", {});
    maybe(s, "pwd", "/");
    maybe(s, "files", []);
    maybe(s, "volumes", []);
    maybe(s, "tls", { inbound: [], outbound: [] });
    for (const f of (s.files as Obj[] | undefined) ?? []) if (f.mode === "0400" && pick(i++)) delete f.mode;
    for (const t of ((s.tls as Obj | undefined)?.inbound as Obj[] | undefined) ?? []) maybe(t, "client_ca", null);
  }
  for (const s of q.secrets as Obj[]) {
    maybe(s, "export", []);
    if (s.kind === "x509") {
      maybe(s, "key_type", "P-256");
      maybe(s, "usage", ["server", "client"]);
    }
    if (s.kind === "x509-ca") maybe(s, "issuer", null);
    if (s.kind === "private-key" && s.migrate === false && pick(i++)) delete s.migrate;
    if (s.kind === "private-key" && s.key_type === "P-256" && pick(i++)) delete s.key_type;
    if (s.kind === "binary" && s.size === 32 && pick(i++)) delete s.size;
    for (const e of (s.export as Obj[] | undefined) ?? []) maybe(e, "policy_hash", null);
  }
  for (const v of q.volumes as Obj[]) {
    maybe(v, "key", null);
    maybe(v, "tag", null);
    maybe(v, "checkpoint_interval", null);
    if (v.update_policy === "rollback-protected" && pick(i++)) delete v.update_policy;
  }
  return q;
}

/** Equivalent spellings of values: hex case, durations in hours, modes without the leading 0. */
function respell(p: Obj, pick: (n: number) => boolean): Obj {
  let i = 0;
  const walk = (v: Json, key?: string): Json => {
    if (Array.isArray(v)) return v.map((x) => walk(x, key));
    if (v !== null && typeof v === "object")
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
    if (typeof v !== "string") return v;
    if (/^[0-9a-f]{64}$/.test(v) && pick(i++)) return v.toUpperCase();
    if (key === "valid_for" && /^\d+d$/.test(v) && pick(i++)) return `${Number.parseInt(v, 10) * 24}h`;
    if (key === "mode" && /^0[0-7]{3}$/.test(v) && pick(i++)) return pick(i++) ? v.slice(1) : Number(v.slice(1));
    return v;
  };
  return walk(p) as Obj;
}

/** Shuffle the order of keys in every map and of every list whose order carries no meaning. */
function shuffle(p: Obj, rand: () => number): Obj {
  const ORDERLESS = new Set([
    "secrets",
    "services",
    "volumes",
    "measurements",
    "files",
    "inbound",
    "read",
    "of",
    "tolerate",
    "ignore_advisories",
    "san",
    "export",
  ]);
  const perm = <T>(xs: T[]) => {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  };
  const walk = (v: Json, key?: string): Json => {
    if (Array.isArray(v)) {
      const items = v.map((x) => walk(x));
      return key !== undefined && ORDERLESS.has(key) ? perm(items) : items;
    }
    if (v !== null && typeof v === "object")
      return Object.fromEntries(perm(Object.entries(v)).map(([k, x]) => [k, walk(x, k)]));
    return v;
  };
  return walk(p) as Obj;
}

/** Write `p` as YAML in random styles, with comments, or as JSON. */
function render(p: Obj, pick: (n: number) => boolean, rand: () => number): string {
  if (pick(-1) && pick(-2)) return JSON.stringify(p, null, pick(-3) ? 2 : 0);
  const doc = new Document(p);
  let i = 0;
  visit(doc, {
    Map(_k, node) {
      node.flow = pick(i++);
      if (pick(i++)) node.commentBefore = ` comment ${Math.floor(rand() * 1000)}`;
    },
    Seq(_k, node) {
      node.flow = pick(i++);
    },
    Scalar(_k, node) {
      if (typeof node.value !== "string") return;
      const r = rand();
      node.type = r < 0.33 ? "QUOTE_DOUBLE" : r < 0.66 ? "QUOTE_SINGLE" : "PLAIN";
    },
  });
  const header = pick(i++) ? "# a policy\n" : "";
  return `${header}${doc.toString({ lineWidth: 0 })}`;
}

const hashOf = (text: string): string => {
  const r: PolicyCheck = checkPolicyText(text, "prop.yaml");
  assert.ok(
    r.ok,
    r.ok ? "" : `${r.errors.map((e) => `${e.line}:${e.column} ${e.field}: ${e.message}`).join("\n")}\n---\n${text}`,
  );
  return r.hash;
};

describe("policy hash", () => {
  test("reformatting never changes the hash", () => {
    fc.assert(
      fc.property(policyArb, fc.integer(), (policy, seed) => {
        const rand = seededRandom(seed);
        const pick = () => rand() < 0.5;
        const base = hashOf(render(policy, () => false, rand));
        const variant = render(shuffle(respell(spellOutDefaults(policy, pick), pick), rand), pick, rand);
        assert.equal(hashOf(variant), base, variant);
      }),
      { numRuns: 150 },
    );
  });

  const mutations: Record<string, (p: Obj) => void> = {
    "policy name": (p) => {
      p.name = `${p.name}/x`;
    },
    "ascii size": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "pw0")!;
      s.size = (s.size as number) + 1;
    },
    "binary size": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "blob")!;
      s.size = (s.size as number) + 1;
    },
    "key type": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "signing")!;
      s.key_type = s.key_type === "P-256" ? "P-384" : "P-256";
    },
    migrate: (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "signing")!;
      s.migrate = !s.migrate;
    },
    "certificate validity": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "cert")!;
      s.valid_for = `${Number.parseInt(s.valid_for as string, 10) + 1}d`;
    },
    "a SAN": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "cert")!;
      s.san = [...(s.san as string[]), "dns:added.example"];
    },
    "explicit value": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "given");
      if (s) s.value = `${s.value}!`;
      else (p.secrets as Obj[]).push({ name: "given", kind: "ascii", value: "x" });
    },
    "import kind": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "imported")!;
      const imp = s.import as Obj;
      imp.kind = imp.kind === "binary" ? "x509" : "binary";
    },
    "export pin": (p) => {
      const s = (p.secrets as Obj[]).find((s) => s.name === "volkey")!;
      s.export = [{ policy: "partner/x", policy_hash: "ab".repeat(32) }];
    },
    "command argument": (p) => {
      const s = (p.services as Obj[])[0]!;
      s.command = [...(s.command as string[]), "--extra"];
    },
    "argument order": (p) => {
      const s = (p.services as Obj[])[0]!;
      s.command = [s.command as string[]][0]!.slice().reverse();
    },
    "environment value": (p) => {
      const s = (p.services as Obj[])[0]!;
      s.environment = { ...(s.environment as Obj), ADDED: "1" };
    },
    "template format": (p) => {
      const s = (p.services as Obj[])[0]!;
      s.environment = { ...(s.environment as Obj), BLOB: "$$cloister::blob:base64url$$" };
    },
    "working directory": (p) => {
      const s = (p.services as Obj[])[0]!;
      s.pwd = s.pwd === "/tmp" ? "/var" : "/tmp";
    },
    "file mode": (p) => {
      const f = ((p.services as Obj[])[0]!.files as Obj[])[0]!;
      f.mode = f.mode === "0400" ? "0440" : "0400";
    },
    "file content": (p) => {
      const f = ((p.services as Obj[])[0]!.files as Obj[])[0]!;
      f.content = `${f.content} `;
    },
    measurement: (p) => {
      const m = ((p.services as Obj[])[0]!.measurements as Obj[])[0]!;
      const d = m.digest as string;
      m.digest = (d[0] === "0" ? "1" : "0") + d.slice(1);
    },
    "TLS listener": (p) => {
      const t = (((p.services as Obj[])[0]!.tls as Obj).inbound as Obj[])[0]!;
      t.listen = "127.0.0.1:9443";
    },
    "volume mount": (p) => {
      const v = ((p.services as Obj[])[0]!.volumes as Obj[])[0]!;
      v.path = "/var/other";
    },
    "volume policy": (p) => {
      const v = (p.volumes as Obj[])[0]!;
      v.update_policy = v.update_policy === "ephemeral" ? "rollback-protected" : "ephemeral";
    },
    "attestation mode": (p) => {
      // Without attestation, measurements (here all sim) have no place.
      ((p.security as Obj).attestation as Obj).mode = "none";
      for (const s of p.services as Obj[]) delete s.measurements;
    },
    tolerations: (p) => {
      const a = (p.security as Obj).attestation as Obj;
      const t = a.tolerate as string[];
      a.tolerate = t.includes("debug-mode") ? t.filter((x) => x !== "debug-mode") : [...t, "debug-mode"];
    },
    readers: (p) => {
      (p.access_policy as Obj).read = ["ANY"];
    },
    "update rule": (p) => {
      (p.access_policy as Obj).update = ["NONE"];
    },
    "a new secret": (p) => {
      (p.secrets as Obj[]).push({ name: "added", kind: "binary" });
    },
    "a new service": (p) => {
      (p.services as Obj[]).push({
        name: "added",
        measurements: [{ tee: "sim", digest: "cd".repeat(32) }],
        command: ["x"],
      });
    },
    predecessor: (p) => {
      p.predecessor = "ef".repeat(32);
    },
  };

  test("any change of meaning changes the hash", () => {
    fc.assert(
      fc.property(policyArb, fc.constantFrom(...Object.keys(mutations)), (policy, which) => {
        const before = hashOf(JSON.stringify(policy));
        const changed = structuredClone(policy);
        mutations[which]!(changed);
        assert.notEqual(hashOf(JSON.stringify(changed)), before, which);
      }),
      { numRuns: 200 },
    );
  });

  test("every mutation is exercised and keeps the policy valid", () => {
    const sample = fc.sample(policyArb, { numRuns: 1, seed: 42 })[0]!;
    for (const [name, mutate] of Object.entries(mutations)) {
      const changed = structuredClone(sample);
      mutate(changed);
      assert.notEqual(hashOf(JSON.stringify(changed)), hashOf(JSON.stringify(sample)), name);
    }
  });

  test("the hash is stable across releases for a fixed policy", () => {
    // A change here changes every stored policy hash: it needs a new language version.
    const text = 'version: "1"\nname: acme/shop\nsecrets:\n  - {name: k, kind: binary}\n';
    assert.equal(
      hashOf(text),
      hashOf('{"name":"acme/shop","version":1,"secrets":[{"kind":"binary","size":32,"name":"k"}]}'),
    );
    assert.match(hashOf(text), /^[0-9a-f]{64}$/);
  });
});
