/**
 * @peculiar/x509 on node's WebCrypto. The CAS issues certificates with certificate.ts; this
 * library serves the tests as an independent reader (and builder of fake PKIs). Import it from
 * here so that its set-up always comes first.
 */
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
