/**
 * Certificate validation before installation (reliability S12) and the store's safety properties.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { CertificateError, StoreLockedError } from "../../proxy/index.js";
import { CertStore, createSelfSigned, needsRenewal, newSerialHex, validateCertificate } from "../../proxy/internal.js";
import { createTestCa, tempDir } from "../helpers/tls-tools.js";

const ca = createTestCa();
const other = createTestCa("Another CA");
const now = Date.now();

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof CertificateError) return err.reason;
    throw err;
  }
  return "accepted";
}

t.test("proxy certs - accepts a good chain whose key matches and that covers the host", async (t) => {
  const leaf = ca.issue(["app.example.com"]);
  const c = validateCertificate(leaf.chainPem, leaf.keyPem, ["app.example.com"], now);
  t.same(c.names, ["app.example.com"]);
});

t.test("proxy certs - never installs a certificate with the wrong SAN", async (t) => {
  const leaf = ca.issue(["other.example.com"]);
  t.equal(
    reasonOf(() => validateCertificate(leaf.chainPem, leaf.keyPem, ["app.example.com"], now)),
    "san_mismatch",
  );
});

t.test("proxy certs - never installs an expired certificate", async (t) => {
  const leaf = ca.issue(["app.example.com"], {
    notBefore: new Date(now - 10 * 86400_000),
    notAfter: new Date(now - 86400_000),
  });
  t.equal(
    reasonOf(() => validateCertificate(leaf.chainPem, leaf.keyPem, ["app.example.com"], now)),
    "expired",
  );
});

t.test("proxy certs - never installs a certificate whose key does not match", async (t) => {
  const a = ca.issue(["app.example.com"]);
  const b = ca.issue(["app.example.com"]);
  t.equal(
    reasonOf(() => validateCertificate(a.chainPem, b.keyPem, ["app.example.com"], now)),
    "key_mismatch",
  );
});

t.test("proxy certs - never installs a chain whose intermediate did not sign the leaf", async (t) => {
  const leaf = ca.issue(["app.example.com"]);
  t.equal(
    reasonOf(() => validateCertificate(leaf.certPem + other.certPem, leaf.keyPem, ["app.example.com"], now)),
    "chain",
  );
});

t.test("proxy certs - rejects text that is not a certificate", async (t) => {
  t.equal(
    reasonOf(() => validateCertificate("hello", "world", [], now)),
    "parse",
  );
});

t.test("proxy certs - renewal is due once less than a third of the lifetime is left", async (t) => {
  const cert = { notBeforeMs: 0, notAfterMs: 90 };
  t.notOk(needsRenewal(cert, 59, 1 / 3));
  t.ok(needsRenewal(cert, 61, 1 / 3));
});

t.test("proxy certs - self-signed certificate covers DNS names and IPs and validates", async (t) => {
  const pair = createSelfSigned(["localhost", "127.0.0.1"], now);
  const c = validateCertificate(pair.certPem, pair.keyPem, ["localhost", "127.0.0.1"], now);
  t.ok(c.names.includes("localhost"));
});

t.test("proxy certs - serials are positive and minimal in DER (OpenSSL refuses a padded INTEGER)", async (t) => {
  // The old rule ("0" + 15 random bytes) gave a leading 0x00 byte, which OpenSSL rejected whenever the next
  // byte had its high bit clear: a self-signed certificate that sometimes did not parse.
  let bad = 0;
  for (let i = 0; i < 10_000; i++) {
    const b = Buffer.from(newSerialHex(), "hex");
    if (b.length !== 16 || b[0]! >= 0x80 || (b[0] === 0 && b[1]! < 0x80) || b[0] === 0) bad++;
  }
  t.equal(bad, 0, "10,000 serials: 16 bytes, high bit clear, no leading zero byte");
  for (let i = 0; i < 3; i++) {
    const pair = createSelfSigned(["localhost"], now);
    t.ok(validateCertificate(pair.certPem, pair.keyPem, ["localhost"], now), `certificate ${i + 1} parses`);
  }
});

t.test("proxy certs - store writes keys 0600 in 0700 dirs, atomically (no temp files left)", async (t) => {
  const tmp = await tempDir("nodeway-store-");
  t.teardown(tmp.cleanup);
  const store = new CertStore(join(tmp.dir, "certs"));
  await store.init();
  const leaf = ca.issue(["app.example.com"]);
  await store.writePair("acme/ca", "app.example.com", { certPem: leaf.chainPem, keyPem: leaf.keyPem });
  await store.writePair("acme/ca", "app.example.com", { certPem: leaf.chainPem, keyPem: leaf.keyPem });
  const dir = join(tmp.dir, "certs", "acme", "ca", "app.example.com");
  t.equal(((await stat(join(dir, "key.pem"))).mode & 0o777).toString(8), "600");
  t.equal(((await stat(dir)).mode & 0o777).toString(8), "700");
  t.equal(((await stat(join(tmp.dir, "certs"))).mode & 0o777).toString(8), "700");
  const { readdir } = await import("node:fs/promises");
  t.same((await readdir(dir)).sort(), ["cert.pem", "key.pem"]);
  t.same(await store.readPair("acme/ca", "app.example.com"), { certPem: leaf.chainPem, keyPem: leaf.keyPem });
});

t.test("proxy certs - two holders of one store never renew the same name at once", async (t) => {
  const tmp = await tempDir("nodeway-lock-");
  t.teardown(tmp.cleanup);
  const a = new CertStore(tmp.dir);
  const b = new CertStore(tmp.dir); // a second proxy on the same directory
  await a.init();
  let release!: () => void;
  let entered!: () => void;
  const inside = new Promise<void>((r) => (entered = r));
  const held = a.withLock(
    "acme/ca/app.example.com",
    () =>
      new Promise<void>((r) => {
        release = r;
        entered();
      }),
  );
  // Taking the lock is file I/O: wait until the first holder is inside, however long that takes under load (one
  // setImmediate was not always enough when the suite ran in parallel).
  await inside;
  await t.rejects(
    b.withLock("acme/ca/app.example.com", async () => "second"),
    StoreLockedError,
  );
  release();
  await held;
  t.equal(await b.withLock("acme/ca/app.example.com", async () => "after release"), "after release");
});
