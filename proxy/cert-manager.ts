/**
 * Keeps one valid certificate per served name, whatever its source, and swaps in new ones without a restart: the
 * HTTPS server asks `sniCallback` per handshake, so replacing a map entry is the whole "reload".
 *
 * ACME renewal (reliability S11/S12): a certificate is renewed once less than `renewalWindowRatio` of its lifetime
 * is left. A failed attempt is retried after `acmeRetryMinMs`, doubling up to `acmeRetryMaxMs`, while the old
 * certificate keeps being served; each failure raises a `cert.renew_failed` event (the alert). A new certificate is
 * validated before it replaces anything, and the store lock keeps two proxies sharing `certDir` from renewing the
 * same name at once (the loser re-reads the store and installs what the winner wrote).
 *
 * On-demand issuance (a first handshake for a name nobody configured) is what turns a flood of SNI names into a flood
 * of ACME orders, so it is fenced three ways: the name must match `onDemandAllow` and/or be approved by the
 * `onDemandAsk` hook; at most `onDemandMaxNames` names hold or await such a certificate; and every order, renewals
 * included, takes one of `acmeOrdersPerMinute` slots (a throttled one waits for the window, it is not a failure).
 */
import { promises as fs } from "node:fs";
import type { SecureContext } from "node:tls";
import { createEcKeyPem, issueCertificate, type ChallengeSink } from "./acme.js";
import { CertStore, safeName } from "./cert-store.js";
import { createSelfSigned, needsRenewal, renewalDueMs, validateCertificate, type LoadedCert } from "./certs.js";
import { HOSTNAME_RE, type ProxyConfig, TlsMode } from "./config.js";
import { ProxyError, StoreLockedError } from "./errors.js";
import type { ProxyEvent } from "./events.js";
import { isLoopbackLiteral, matchesHostPattern } from "./hosts.js";

/** A certificate as reported by `RunningProxy.certificates()`. */
export interface CertificateInfo {
  readonly name: string;
  readonly serialNumber: string;
  readonly notBefore: string;
  readonly notAfter: string;
  /** Consecutive failed renewal attempts (ACME only). */
  readonly failures: number;
  /** When the next renewal attempt may run, ISO time; `null` when none is scheduled. */
  readonly nextAttemptAt: string | null;
}

interface AcmeState {
  failures: number;
  nextAttemptAtMs: number;
  inFlight: Promise<LoadedCert | null> | null;
  /** Got at a first handshake, not configured: counts against `onDemandMaxNames`, renewed only once it has a cert. */
  onDemand: boolean;
}

/** Thrown inside an issuance when `acmeOrdersPerMinute` orders were placed in the last minute. */
class OrdersThrottled extends Error {}

const ORDER_WINDOW_MS = 60_000;
/** The ask hook's answer must come within this (Caddy gives it 10 s as well). */
const ASK_TIMEOUT_MS = 10_000;
/** Asks in flight at once: a flood of new names gets the fallback certificate instead of as many outgoing requests. */
const MAX_ASKS_IN_FLIGHT = 16;
/** A name the hook refused is not asked about again for this long; the memory of refusals is bounded. */
const ASK_DENIED_TTL_MS = 60_000;
const MAX_ASK_DENIED = 10_000;

/** How long a TLS handshake for an allowed on-demand host waits for its first certificate. */
const ON_DEMAND_WAIT_MS = 60_000;

export class CertManager {
  private readonly config: Readonly<ProxyConfig>;
  private readonly store: CertStore;
  private readonly now: () => number;
  private readonly emit: (e: ProxyEvent) => void;
  /** name (lower-case DNS name, or `*.suffix`) → certificate. */
  private readonly byName = new Map<string, LoadedCert>();
  private readonly acmeStates = new Map<string, AcmeState>();
  private readonly challenges = new Map<string, string>();
  /** When the orders of the last minute were placed, oldest first. */
  private readonly orderTimesMs: number[] = [];
  private onDemandNames = 0;
  private readonly asks = new Map<string, Promise<boolean>>();
  private readonly askDeniedUntilMs = new Map<string, number>();
  /** Served when the client sends no SNI or an unknown name: the first domain's cert, or a throwaway one. */
  private fallback: LoadedCert | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private filesMtimeMs = 0;
  private readonly caDir: string;
  /** Called when the default (no-SNI) certificate changes, so the server's own context can follow. */
  onDefaultChange: (cert: LoadedCert) => void = () => undefined;

  constructor(config: Readonly<ProxyConfig>, now: () => number, emit: (e: ProxyEvent) => void) {
    this.config = config;
    this.store = new CertStore(config.certDir);
    this.now = now;
    this.emit = emit;
    this.caDir = `acme/${safeName(new URL(config.acmeDirectoryUrl).host)}`;
  }

  /**
   * Loads what the store and files hold. Self-signed and operator certificates are ready when this returns; ACME
   * certificates missing from the store are requested in the background (handshakes get the fallback until then).
   * @throws CertificateError for bad operator files; ProxyError when the store cannot be created
   */
  async start(): Promise<void> {
    await this.store.init();
    const mode = this.config.tls;
    if (mode === TlsMode.selfSigned) {
      await this.loadSelfSigned();
    } else if (mode === TlsMode.files) {
      await this.loadFiles(true);
    } else {
      for (const domain of this.config.domain) {
        const stored = await this.readStored(domain);
        if (stored !== null) this.install(domain, stored, "store");
        this.acmeStates.set(domain, { failures: 0, nextAttemptAtMs: 0, inFlight: null, onDemand: false });
      }
    }
    if (this.fallback === null) {
      // No certificate yet (ACME pending): a throwaway self-signed one lets the listener start; clients see a
      // name mismatch until the real one arrives, exactly as with any CA-backed server before its first issuance.
      const names = this.config.domain.length > 0 ? [...this.config.domain] : ["localhost"];
      const pair = createSelfSigned(names, this.now(), 7);
      this.fallback = validateCertificate(pair.certPem, pair.keyPem, [], this.now());
    }
    this.schedule();
  }

  /** Stops timers. An issuance already talking to the CA finishes but installs nothing. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The context for handshakes without SNI. */
  defaultCert(): LoadedCert {
    return this.fallback!;
  }

  /** `tls.Server` SNICallback: exact name, then `*.parent`, then on-demand issuance for allowed hosts. */
  sniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void => {
    const name = servername.toLowerCase();
    const hit = this.lookup(name);
    if (hit !== null) return cb(null, hit.context);
    if (this.config.tls === TlsMode.acme && this.onDemandCandidate(name)) {
      const timeout = setTimeout(() => cb(null, this.fallback!.context), ON_DEMAND_WAIT_MS);
      this.obtainOnDemand(name).then(
        (cert) => {
          clearTimeout(timeout);
          cb(null, (cert ?? this.fallback!).context);
        },
        () => {
          clearTimeout(timeout);
          cb(null, this.fallback!.context);
        },
      );
      return;
    }
    cb(null, this.fallback!.context);
  };

  /**
   * Whether `name` (see `hostName`) is served here: a configured domain, a name holding a certificate, a name allowed
   * on demand without an ask hook, or a loopback literal when `localhost` is served. Others get 421, never a route.
   */
  servesHost(name: string): boolean {
    if (this.lookup(name) !== null || matchesHostPattern(this.config.domain, name)) return true;
    if (this.config.onDemandAsk === null && matchesHostPattern(this.config.onDemandAllow, name)) return true;
    return isLoopbackLiteral(name) && this.config.domain.includes("localhost");
  }

  /** The key authorization for an HTTP-01 token: this process's own, or one another proxy on the store wrote. */
  async challengeResponse(token: string): Promise<string | null> {
    if (!/^[A-Za-z0-9_-]{1,256}$/.test(token)) return null; // RFC 8555 §8.3: base64url only (also blocks "../")
    const mine = this.challenges.get(token);
    if (mine !== undefined) return mine;
    return this.store.readFile(`challenges/${token}`);
  }

  /** Snapshot of installed certificates, for tests and the CLI status line. */
  certificates(): CertificateInfo[] {
    const out: CertificateInfo[] = [];
    const seen = new Set<LoadedCert>();
    for (const [name, cert] of this.byName) {
      if (seen.has(cert)) continue;
      seen.add(cert);
      const st = this.acmeStates.get(name);
      out.push({
        name,
        serialNumber: cert.serialNumber,
        notBefore: new Date(cert.notBeforeMs).toISOString(),
        notAfter: new Date(cert.notAfterMs).toISOString(),
        failures: st?.failures ?? 0,
        nextAttemptAt: st !== undefined && st.nextAttemptAtMs > 0 ? new Date(st.nextAttemptAtMs).toISOString() : null,
      });
    }
    return out;
  }

  /**
   * Runs one maintenance pass now: ACME names due (or missing) are renewed unless backing off, operator files
   * re-read if they changed, the self-signed certificate remade near expiry. Resolves when the pass is done.
   */
  async check(): Promise<void> {
    if (this.stopped) return;
    const mode = this.config.tls;
    if (mode === TlsMode.files) {
      await this.loadFiles(false);
    } else if (mode === TlsMode.selfSigned) {
      const cur = this.byName.get(this.config.domain[0]!);
      if (cur === undefined || needsRenewal(cur, this.now(), this.config.renewalWindowRatio))
        await this.loadSelfSigned();
    } else {
      // An on-demand name without a certificate is retried by its next handshake, not in the background.
      const due = [...this.acmeStates].filter(([name, st]) => !st.onDemand || this.byName.has(name));
      await Promise.all(due.map(([name]) => this.maybeRenew(name)));
    }
  }

  private lookup(name: string): LoadedCert | null {
    const exact = this.byName.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf(".");
    if (dot > 0) {
      const wild = this.byName.get(`*${name.slice(dot)}`);
      if (wild !== undefined) return wild;
    }
    return null;
  }

  /** A name that may start on-demand issuance (still subject to the ask hook and the caps). */
  private onDemandCandidate(name: string): boolean {
    const st = this.acmeStates.get(name);
    if (st !== undefined) return st.onDemand; // a configured name is issued by the maintenance pass
    const c = this.config;
    if (c.onDemandAllow.length === 0 && c.onDemandAsk === null) return false;
    if (c.onDemandAllow.length > 0 && !matchesHostPattern(c.onDemandAllow, name)) return false;
    // An SNI name is whatever the client sent: only a dotted DNS name can ever get a certificate.
    return name.includes(".") && HOSTNAME_RE.test(name);
  }

  private async obtainOnDemand(name: string): Promise<LoadedCert | null> {
    let st = this.acmeStates.get(name);
    if (st === undefined) {
      // Cheap refusals first: a full cap or an exhausted order budget do not even reach the ask hook.
      if (!this.roomOnDemand() || this.orderWaitMs() > 0) return null;
      if (this.config.onDemandAsk !== null && !(await this.ask(name))) return null;
      st = this.acmeStates.get(name); // another handshake for the name may have got here during the ask
      if (st === undefined) {
        if (!this.roomOnDemand()) return null;
        st = { failures: 0, nextAttemptAtMs: 0, inFlight: null, onDemand: true };
        this.acmeStates.set(name, st);
        this.onDemandNames++;
        // First sight of this host: maybe another proxy on the store already has it.
        const stored = await this.readStored(name);
        if (stored !== null) {
          this.install(name, stored, "store");
          return stored;
        }
      }
    }
    if (st.inFlight !== null) return st.inFlight;
    if (st.nextAttemptAtMs > this.now()) return null; // backing off: never hammer the CA from handshakes
    return this.renew(name, st);
  }

  /**
   * True when one more on-demand name fits; frees the slots of names whose attempt failed or was deferred and
   * whose wait is over. A name with no attempt yet is still starting (its store read in flight): it keeps its slot.
   */
  private roomOnDemand(): boolean {
    if (this.onDemandNames < this.config.onDemandMaxNames) return true;
    const now = this.now();
    for (const [name, st] of this.acmeStates) {
      const tried = st.failures > 0 || st.nextAttemptAtMs > 0;
      const failed = tried && st.inFlight === null && st.nextAttemptAtMs <= now;
      if (st.onDemand && failed && !this.byName.has(name)) {
        this.acmeStates.delete(name);
        this.onDemandNames--;
      }
    }
    return this.onDemandNames < this.config.onDemandMaxNames;
  }

  /** `GET onDemandAsk?domain=name`: true on a 2xx. One request per name at a time; refusals are remembered a while. */
  private ask(name: string): Promise<boolean> {
    const pending = this.asks.get(name);
    if (pending !== undefined) return pending;
    const now = this.now();
    const refused = (this.askDeniedUntilMs.get(name) ?? 0) > now;
    if (refused || this.asks.size >= MAX_ASKS_IN_FLIGHT) return Promise.resolve(false);
    const url = new URL(this.config.onDemandAsk!);
    url.searchParams.set("domain", name);
    const answer = fetch(url, { redirect: "manual", signal: AbortSignal.timeout(ASK_TIMEOUT_MS) }).then(
      async (res) => {
        await res.body?.cancel();
        const ok = res.status >= 200 && res.status < 300;
        if (!ok) {
          if (this.askDeniedUntilMs.size >= MAX_ASK_DENIED) this.askDeniedUntilMs.clear();
          this.askDeniedUntilMs.set(name, now + ASK_DENIED_TTL_MS);
        }
        return ok;
      },
      // The hook unreachable or slow: no certificate now, and the next handshake asks again.
      () => false,
    );
    this.asks.set(name, answer);
    void answer.finally(() => this.asks.delete(name));
    return answer;
  }

  /** 0 when an ACME order may be placed now, else how long until one of the last minute's leaves the window. */
  private orderWaitMs(): number {
    const now = this.now();
    const times = this.orderTimesMs;
    while (times.length > 0 && times[0]! <= now - ORDER_WINDOW_MS) times.shift();
    return times.length < this.config.acmeOrdersPerMinute ? 0 : times[0]! + ORDER_WINDOW_MS - now;
  }

  private async maybeRenew(name: string): Promise<void> {
    const st = this.acmeStates.get(name)!;
    if (st.inFlight !== null) {
      await st.inFlight;
      return;
    }
    const cur = this.byName.get(name);
    if (cur !== undefined && !needsRenewal(cur, this.now(), this.config.renewalWindowRatio)) return;
    if (st.nextAttemptAtMs > this.now()) return;
    await this.renew(name, st);
  }

  private renew(name: string, st: AcmeState): Promise<LoadedCert | null> {
    const run = async (): Promise<LoadedCert | null> => {
      try {
        const cert = await this.store.withLock(`${this.caDir}/${name}`, async () => {
          // Another proxy sharing the store may have renewed while we waited for the lock.
          const stored = await this.readStored(name);
          if (stored !== null && !needsRenewal(stored, this.now(), this.config.renewalWindowRatio))
            return { cert: stored, fresh: false };
          if (this.orderWaitMs() > 0) throw new OrdersThrottled();
          this.orderTimesMs.push(this.now());
          const accountKeyPem = await this.accountKey();
          const caBundlePem =
            this.config.acmeCaBundleFile !== null ? await fs.readFile(this.config.acmeCaBundleFile, "utf8") : null;
          const pair = await issueCertificate({
            directoryUrl: this.config.acmeDirectoryUrl,
            accountKeyPem,
            email: this.config.email,
            domain: name,
            caBundlePem,
            challenges: this.challengeSink,
          });
          // S12: a wrong SAN, an expired certificate or a chain not matching the key is never stored or served.
          const loaded = validateCertificate(pair.certPem, pair.keyPem, [name], this.now());
          await this.store.writePair(this.caDir, name, pair);
          return { cert: loaded, fresh: true };
        });
        if (this.stopped) return null;
        st.failures = 0;
        st.nextAttemptAtMs = 0;
        this.install(name, cert.cert, cert.fresh ? "acme" : "store");
        return cert.cert;
      } catch (err) {
        if (err instanceof OrdersThrottled) {
          // Not a failure: the name waits for the order window (an on-demand one for its next handshake after it).
          st.nextAttemptAtMs = this.now() + this.orderWaitMs();
          return null;
        }
        if (err instanceof StoreLockedError) {
          // Not a failure of ours: look again soon and pick up the holder's result from the store.
          st.nextAttemptAtMs = this.now() + Math.min(this.config.acmeRetryMinMs, this.config.renewCheckIntervalMs);
          return null;
        }
        st.failures += 1;
        const delay = Math.min(
          this.config.acmeRetryMaxMs,
          this.config.acmeRetryMinMs * 2 ** Math.min(st.failures - 1, 30),
        );
        st.nextAttemptAtMs = this.now() + delay;
        this.emit({
          type: "cert.renew_failed",
          name,
          code: err instanceof ProxyError ? err.code : "PROXY_ERR_ACME",
          message: (err as Error).message,
          failures: st.failures,
          retryInMs: delay,
          stillServing: this.byName.has(name),
        });
        return null;
      } finally {
        st.inFlight = null;
        this.schedule();
      }
    };
    st.inFlight = run();
    return st.inFlight;
  }

  private readonly challengeSink: ChallengeSink = {
    set: async (token, keyAuthorization) => {
      this.challenges.set(token, keyAuthorization);
      // Shared so that whichever proxy the CA reaches can answer (Caddy keeps challenge tokens in storage too).
      await this.store.writeFile(`challenges/${token}`, keyAuthorization);
    },
    remove: async (token) => {
      this.challenges.delete(token);
      await this.store.removeFile(`challenges/${token}`);
    },
  };

  private async accountKey(): Promise<string> {
    const rel = `${this.caDir}/account.key`;
    const existing = await this.store.readFile(rel);
    if (existing !== null) return existing;
    const pem = createEcKeyPem();
    await this.store.writeFile(rel, pem);
    return pem;
  }

  /** A stored ACME certificate for `name` that passes validation, or `null` (missing, expired or damaged). */
  private async readStored(name: string): Promise<LoadedCert | null> {
    const pair = await this.store.readPair(this.caDir, name);
    if (pair === null) return null;
    try {
      return validateCertificate(pair.certPem, pair.keyPem, [name], this.now());
    } catch {
      return null;
    }
  }

  private async loadSelfSigned(): Promise<void> {
    const names = [
      ...new Set([...this.config.domain, ...(this.config.domain.includes("localhost") ? ["127.0.0.1", "::1"] : [])]),
    ];
    const key = names[0]!;
    const pair = await this.store.readPair("self-signed", key);
    let loaded: LoadedCert | null = null;
    if (pair !== null) {
      try {
        const c = validateCertificate(pair.certPem, pair.keyPem, names, this.now());
        if (!needsRenewal(c, this.now(), this.config.renewalWindowRatio)) loaded = c;
      } catch {
        loaded = null; // remade below
      }
    }
    if (loaded === null) {
      const fresh = createSelfSigned(names, this.now());
      loaded = validateCertificate(fresh.certPem, fresh.keyPem, names, this.now());
      await this.store.writePair("self-signed", key, fresh);
    }
    for (const n of this.config.domain) this.install(n, loaded, "self-signed");
  }

  private async loadFiles(initial: boolean): Promise<void> {
    const certFile = this.config.certFile!;
    const keyFile = this.config.keyFile!;
    const [cs, ks] = await Promise.all([fs.stat(certFile), fs.stat(keyFile)]);
    const mtime = Math.max(cs.mtimeMs, ks.mtimeMs);
    if (!initial && mtime === this.filesMtimeMs) return;
    this.filesMtimeMs = mtime;
    try {
      const [certPem, keyPem] = await Promise.all([fs.readFile(certFile, "utf8"), fs.readFile(keyFile, "utf8")]);
      const loaded = validateCertificate(certPem, keyPem, this.config.domain, this.now());
      const names = this.config.domain.length > 0 ? this.config.domain : loaded.names;
      for (const n of names) this.install(n, loaded, "files");
    } catch (err) {
      if (initial) throw err;
      // A half-written or wrong pair from the operator: keep serving the old one and say so.
      this.emit({ type: "cert.rejected", name: certFile, message: (err as Error).message });
    }
  }

  private install(name: string, cert: LoadedCert, source: "acme" | "store" | "self-signed" | "files"): void {
    if (this.stopped) return;
    const prev = this.byName.get(name);
    this.byName.set(name, cert);
    if (prev?.serialNumber !== cert.serialNumber) {
      this.emit({
        type: "cert.installed",
        name,
        serialNumber: cert.serialNumber,
        notAfter: new Date(cert.notAfterMs).toISOString(),
        source,
      });
    }
    const first = this.config.domain[0] ?? name;
    if (name === first && this.fallback !== cert) {
      this.fallback = cert;
      this.onDefaultChange(cert);
    }
  }

  /**
   * Arms the next maintenance pass: at the regular interval, or sooner when a certificate enters its renewal window
   * or a backoff delay ends, so short-lived certificates renew on time and retries follow the backoff.
   */
  private schedule(): void {
    if (this.stopped) return;
    const now = this.now();
    let next = this.config.renewCheckIntervalMs;
    for (const [name, st] of this.acmeStates) {
      if (st.inFlight !== null) continue; // its completion re-arms the timer
      const cur = this.byName.get(name);
      const due = cur !== undefined ? renewalDueMs(cur, this.config.renewalWindowRatio) : 0;
      next = Math.min(next, Math.max(0, Math.max(due, st.nextAttemptAtMs) - now));
    }
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.check()
        .catch((err: unknown) =>
          this.emit({ type: "proxy.error", where: "cert-check", message: (err as Error).message }),
        )
        .finally(() => this.schedule());
    }, next);
    this.timer.unref();
  }
}
