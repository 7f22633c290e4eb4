/**
 * Certificate checks, self-signed generation and TLS contexts. Nothing here does I/O.
 *
 * The TLS posture follows Mozilla's "intermediate" profile (v5.7): TLS 1.2 and 1.3 only, AEAD ECDHE suites for 1.2
 * (1.3 suites are all fine and left to OpenSSL), no cipher-order preference since every offered suite is strong.
 */
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import { createSecureContext, type SecureContext } from "node:tls";
import forge from "node-forge";
import { CertificateError } from "./errors.js";

/** TLS 1.2 suites of the Mozilla intermediate profile, minus DHE (no dhparam file to manage). */
export const TLS12_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** Options shared by the server's default context and every SNI context: a context carries its own posture. */
export const TLS_POSTURE = {
  minVersion: "TLSv1.2",
  ciphers: TLS12_CIPHERS,
  ecdhCurve: "X25519:prime256v1:secp384r1",
  honorCipherOrder: false,
} as const;

/** What the proxy knows about an installed certificate. */
export interface LoadedCert {
  readonly certPem: string;
  readonly keyPem: string;
  readonly context: SecureContext;
  /** DNS names and IPs the leaf covers (from subjectAltName). */
  readonly names: readonly string[];
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly serialNumber: string;
}

/** How much a CA's clock may be ahead of ours before a fresh certificate counts as "not yet valid". */
const CLOCK_SKEW_MS = 5 * 60_000;

/**
 * Validates a certificate chain and key before it may be served (reliability S12): it parses, the key matches the
 * leaf, `now` is inside the validity window, the leaf covers every name in `hosts`, and each certificate in the chain
 * is signed by the next one. Returns the parsed form ready to install.
 * @throws CertificateError with a `reason`
 */
export function validateCertificate(
  certPem: string,
  keyPem: string,
  hosts: readonly string[],
  nowMs: number,
): LoadedCert {
  const blocks = certPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (blocks === null || blocks.length === 0) throw new CertificateError("parse", "no PEM certificate found");
  let chain: X509Certificate[];
  try {
    chain = blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    throw new CertificateError("parse", "certificate does not parse", { cause: err });
  }
  const leaf = chain[0]!;
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(keyPem));
  } catch (err) {
    throw new CertificateError("parse", "private key does not parse", { cause: err });
  }
  if (!matches) throw new CertificateError("key_mismatch", "private key does not match the certificate");

  const notBeforeMs = Date.parse(leaf.validFrom);
  const notAfterMs = Date.parse(leaf.validTo);
  if (!(notAfterMs > nowMs)) throw new CertificateError("expired", `certificate expired at ${leaf.validTo}`);
  if (notBeforeMs > nowMs + CLOCK_SKEW_MS)
    throw new CertificateError("not_yet_valid", `certificate not valid before ${leaf.validFrom}`);

  for (const host of hosts) {
    const ok =
      isIP(host) !== 0 ? leaf.checkIP(host) !== undefined : leaf.checkHost(host, { subject: "never" }) !== undefined;
    if (!ok) throw new CertificateError("san_mismatch", `certificate does not cover ${host}`);
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    const child = chain[i]!;
    const parent = chain[i + 1]!;
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      throw new CertificateError("chain", `certificate ${i} in the chain is not signed by certificate ${i + 1}`);
    }
  }
  return {
    certPem,
    keyPem,
    context: createSecureContext({ ...TLS_POSTURE, cert: certPem, key: keyPem }),
    names: sanNames(leaf),
    notBeforeMs,
    notAfterMs,
    serialNumber: leaf.serialNumber,
  };
}

/** True when less than `ratio` of the lifetime is left at `nowMs` (renew at a third left by default). */
export function needsRenewal(
  cert: Pick<LoadedCert, "notBeforeMs" | "notAfterMs">,
  nowMs: number,
  ratio: number,
): boolean {
  const lifetime = cert.notAfterMs - cert.notBeforeMs;
  return cert.notAfterMs - nowMs < lifetime * ratio;
}

/** The time at which `needsRenewal` becomes true. */
export function renewalDueMs(cert: Pick<LoadedCert, "notBeforeMs" | "notAfterMs">, ratio: number): number {
  return cert.notAfterMs - (cert.notAfterMs - cert.notBeforeMs) * ratio;
}

/**
 * A certificate serial as hex: 16 random bytes, positive (RFC 5280 §4.1.2.2), and minimal in DER. node-forge
 * writes the bytes as given, and OpenSSL refuses an INTEGER with a needless leading zero byte ("illegal
 * padding"): the first byte is kept in 0x40–0x7f so it is neither negative nor padding.
 */
export function newSerialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x3f) | 0x40;
  return b.toString("hex");
}

/**
 * Makes a self-signed certificate for `names` (DNS names and IPs). The RSA key comes from Node's native crypto
 * (fast, and node-forge's pure-JS keygen takes seconds); node-forge only assembles and signs the certificate.
 */
export function createSelfSigned(
  names: readonly string[],
  nowMs: number,
  validDays = 365,
): { certPem: string; keyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const pubPem = publicKey.export({ type: "spki", format: "pem" }).toString();

  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(pubPem);
  cert.serialNumber = newSerialHex();
  // Backdated a little so a client with a slow clock accepts it at once.
  cert.validity.notBefore = new Date(nowMs - 60 * 60_000);
  cert.validity.notAfter = new Date(nowMs + validDays * 86_400_000);
  const cn = names[0] ?? "localhost";
  const attrs = [
    { name: "commonName", value: cn },
    { name: "organizationName", value: "Nodeway self-signed" },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: names.map((n) => (isIP(n) !== 0 ? { type: 7, ip: n } : { type: 2, value: n })),
    },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(keyPem), forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem };
}

/** SAN entries of a leaf: `DNS:a, IP Address:1.2.3.4` → `["a", "1.2.3.4"]`, lower-cased. */
function sanNames(leaf: X509Certificate): string[] {
  const san = leaf.subjectAltName;
  if (san === undefined) return [];
  const out: string[] = [];
  for (const part of san.split(/,\s*/)) {
    const i = part.indexOf(":");
    if (i < 0) continue;
    const kind = part.slice(0, i);
    if (kind === "DNS" || kind === "IP Address") out.push(part.slice(i + 1).toLowerCase());
  }
  return out;
}
