/**
 * ACME issuance over HTTP-01 with `acme-client`. One call issues one certificate; scheduling, backoff, locking and
 * validation live in `cert-manager.ts`.
 */
import { generateKeyPairSync } from "node:crypto";
import { Agent as HttpsAgent } from "node:https";
import { rootCertificates } from "node:tls";
import { AcmeError } from "./errors.js";

type Acme = typeof import("acme-client");
let loaded: Promise<Acme> | null = null;

/**
 * acme-client is loaded on the first issuance, not with the proxy: with its HTTP client a bare import is ~8.6 MB
 * of heap, which every major GC marks again, and a proxy on its own or self-signed certificates never needs it.
 *
 * It keeps one shared axios instance. Its built-in retry waits 5 s, 10 s, … up to five times on network errors and
 * 5xx, which would stall a renewal for over a minute while the CA is down; the proxy has its own backoff
 * (acmeRetryMinMs..acmeRetryMaxMs), so one quick retry is enough here. badNonce retries are separate (RFC 8555
 * §6.5) and stay on.
 */
function loadAcme(): Promise<Acme> {
  return (loaded ??= import("acme-client").then((acme) => {
    const defaults = acme.axios.defaults as unknown as {
      acmeSettings: { retryMaxAttempts: number; retryDefaultDelay: number };
    };
    defaults.acmeSettings.retryMaxAttempts = 1;
    defaults.acmeSettings.retryDefaultDelay = 1;
    return acme;
  }));
}

/** Where the HTTP-01 key authorizations go while the CA validates them. */
export interface ChallengeSink {
  set(token: string, keyAuthorization: string): Promise<void>;
  remove(token: string): Promise<void>;
}

export interface IssueRequest {
  readonly directoryUrl: string;
  /** PEM account key (created once per CA and kept in the store). */
  readonly accountKeyPem: string;
  readonly email: string | null;
  readonly domain: string;
  /** Extra trusted CA certificates (PEM) for the CA's own HTTPS endpoint, e.g. Pebble's. */
  readonly caBundlePem: string | null;
  readonly challenges: ChallengeSink;
}

/** Makes an ECDSA P-256 key (PKCS#8 PEM): used for ACME accounts and certificate keys alike. */
export function createEcKeyPem(): string {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

let trustedBundle: string | null = null;

/**
 * Trusts `caBundlePem` (in addition to the system roots) for requests to the CA. acme-client has no per-client
 * agent option, so this sets the shared instance's agent; one process serves one CA trust set in practice.
 */
function trustCa(acme: Acme, caBundlePem: string | null): void {
  if (caBundlePem === trustedBundle) return;
  trustedBundle = caBundlePem;
  acme.axios.defaults.httpsAgent =
    caBundlePem === null ? undefined : new HttpsAgent({ ca: [...rootCertificates, caBundlePem], keepAlive: false });
}

/**
 * Issues a certificate for `req.domain` and returns the chain (leaf first) and its new key. Does not validate the
 * result: the caller does, before installing anything.
 * @throws AcmeError wrapping the CA's or the network's error
 */
export async function issueCertificate(req: IssueRequest): Promise<{ certPem: string; keyPem: string }> {
  const keyPem = createEcKeyPem();
  try {
    const acme = await loadAcme(); // a failure to load is this issuance's error too, with the same code
    trustCa(acme, req.caBundlePem);
    const client = new acme.Client({
      directoryUrl: req.directoryUrl,
      accountKey: req.accountKeyPem,
      // Status polling: Pebble and Let's Encrypt validate in well under a second, so start short.
      backoffAttempts: 10,
      backoffMin: 250,
      backoffMax: 10_000,
    });
    const [, csr] = await acme.crypto.createCsr({ commonName: req.domain, altNames: [req.domain] }, keyPem);
    const certPem = await client.auto({
      csr,
      email: req.email ?? undefined,
      termsOfServiceAgreed: true,
      challengePriority: ["http-01"],
      // acme-client would first fetch the challenge itself through public DNS, which fails behind NAT, split DNS or
      // a load balancer even when the CA can reach us; the CA's own validation is the one that counts.
      skipChallengeVerification: true,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        await req.challenges.set(challenge.token, keyAuthorization);
      },
      challengeRemoveFn: async (_authz, challenge) => {
        await req.challenges.remove(challenge.token);
      },
    });
    return { certPem, keyPem };
  } catch (err) {
    throw new AcmeError(`ACME issuance for ${req.domain} failed: ${whyIssuanceFailed(err, req)}`, { cause: err });
  }
}

/**
 * What went wrong, in words. acme-client's retry interceptor, once its tries are used up on a network error (no
 * response at all), throws a TypeError of its own ("reading 'config'") in place of that error.
 */
function whyIssuanceFailed(err: unknown, req: IssueRequest): string {
  const message = (err as Error).message;
  if (err instanceof TypeError && /reading 'config'/.test(message))
    return `no answer from the ACME directory ${req.directoryUrl} (connection refused, reset or timed out)`;
  return message;
}
