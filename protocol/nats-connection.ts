/**
 * How a gateway or an agent reaches NATS: its server URLs and its credentials, checked once at start-up (design
 * §2), the same for both. Credentials come as a user and a password (`nats://user:pass@host` in the URL, or
 * `natsUser` with `natsPasswordFile`), a token (`nats://token@host`), or a NATS credentials file (`natsCredsFile`,
 * a user JWT and its nkey seed, for operator-mode deployments). The password belongs in a file, not a flag or the
 * URL (both show in `ps` and in config dumps); the URL form is taken because it is what NATS users write. What is
 * logged is `shown`, the URLs without credentials.
 *
 * TLS (`natsTlsCaFile`, and `natsTlsCertFile` + `natsTlsKeyFile` for a NATS that verifies its clients) is used
 * whenever NATS asks for it, and required with a `tls://` URL.
 *
 * Files are read through `readText` (the caller's `readFileSync`), which keeps this module free of I/O.
 */
import { InvalidConfigError } from "./errors.js";

export interface NatsOptions {
  /** NATS server URL(s), comma-separated. @default "nats://127.0.0.1:4222" */
  natsUrl?: string;
  /** User name, with `natsPasswordFile`. */
  natsUser?: string;
  /** File holding the password of `natsUser` (its first line). */
  natsPasswordFile?: string;
  /** NATS credentials file (user JWT + nkey seed), as `nsc` writes it. */
  natsCredsFile?: string;
  /** CA certificate(s) (PEM) that NATS's TLS certificate must chain to; unset: the system's. */
  natsTlsCaFile?: string;
  /** Client certificate (PEM) for a NATS that verifies clients (`tls { verify: true }`), with its key. */
  natsTlsCertFile?: string;
  natsTlsKeyFile?: string;
}

export const NATS_OPTION_KEYS = ["natsUrl", "natsUser", "natsPasswordFile", "natsCredsFile", "natsTlsCaFile", "natsTlsCertFile", "natsTlsKeyFile"] as const;

/** TLS to NATS: what the process trusts and presents (PEM text, read at start-up), or null for the defaults. */
export interface NatsTls {
  ca?: string;
  cert?: string;
  key?: string;
}

export type NatsAuth =
  | { kind: "none" }
  | { kind: "password"; user: string; pass: string }
  | { kind: "token"; token: string }
  | { kind: "creds"; creds: string };

export interface NatsConnection {
  /** The URLs to connect to, without credentials. */
  servers: string[];
  /** The URLs as they may be logged, and how the process authenticates (never the secret). */
  shown: string;
  auth: NatsAuth;
  tls: NatsTls | null;
}

const URL_FORM = /^(nats|tls|ws|wss):\/\/[^\s]+$/;
const HOST_PORT = /^[\w.-]+:\d+$/;

function readSecret(key: string, path: string, readText: (path: string) => string): string {
  let text: string;
  try {
    text = readText(path);
  } catch (err) {
    throw new InvalidConfigError(key, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return text;
}

/** Parses and checks the NATS settings; throws `InvalidConfigError` naming the setting. */
export function compileNatsConnection(opts: NatsOptions, readText: (path: string) => string): NatsConnection {
  const urls = (opts.natsUrl ?? "nats://127.0.0.1:4222").split(",").map((s) => s.trim()).filter(Boolean);
  if (urls.length === 0) throw new InvalidConfigError("natsUrl", "needs at least one URL");
  const servers: string[] = [];
  let userinfo: string | null = null;
  for (const u of urls) {
    if (HOST_PORT.test(u)) {
      servers.push(u);
      continue;
    }
    if (!URL_FORM.test(u)) throw new InvalidConfigError("natsUrl", `not a NATS URL: ${u.replace(/\/\/[^@/]*@/, "//…@")}`);
    const url = new URL(u);
    const info = url.username || url.password ? `${url.username}:${url.password}` : "";
    if (info) {
      if (userinfo !== null && userinfo !== info) throw new InvalidConfigError("natsUrl", "gives different credentials for different servers");
      userinfo = info;
    }
    url.username = "";
    url.password = "";
    servers.push(url.toString().replace(/\/$/, ""));
  }
  let auth: NatsAuth = { kind: "none" };
  if (userinfo !== null) {
    const [user, pass] = userinfo.split(":").map(decodeURIComponent) as [string, string];
    auth = pass ? { kind: "password", user, pass } : { kind: "token", token: user };
  }
  const given = [userinfo !== null && "credentials in natsUrl", opts.natsUser !== undefined && "natsUser", opts.natsCredsFile !== undefined && "natsCredsFile"].filter(Boolean);
  if (given.length > 1) throw new InvalidConfigError(opts.natsCredsFile !== undefined ? "natsCredsFile" : "natsUser", `give one way to authenticate to NATS, not ${given.join(" and ")}`);
  if (opts.natsPasswordFile !== undefined && opts.natsUser === undefined) throw new InvalidConfigError("natsPasswordFile", "needs natsUser (whose password it holds)");
  if (opts.natsUser !== undefined) {
    if (opts.natsUser === "" || /\s/.test(opts.natsUser)) throw new InvalidConfigError("natsUser", "must be a non-empty name without spaces");
    if (opts.natsPasswordFile === undefined) throw new InvalidConfigError("natsUser", "needs natsPasswordFile (the password is kept out of flags and the environment)");
    const pass = readSecret("natsPasswordFile", opts.natsPasswordFile, readText).split(/\r?\n/)[0]!;
    if (pass === "") throw new InvalidConfigError("natsPasswordFile", `${opts.natsPasswordFile} holds no password on its first line`);
    auth = { kind: "password", user: opts.natsUser, pass };
  }
  if (opts.natsCredsFile !== undefined) {
    const creds = readSecret("natsCredsFile", opts.natsCredsFile, readText);
    if (!creds.includes("BEGIN NATS USER JWT") || !creds.includes("BEGIN USER NKEY SEED")) {
      throw new InvalidConfigError("natsCredsFile", `${opts.natsCredsFile} is not a NATS credentials file (a user JWT and its nkey seed)`);
    }
    auth = { kind: "creds", creds };
  }
  let tls: NatsTls | null = null;
  if ((opts.natsTlsCertFile === undefined) !== (opts.natsTlsKeyFile === undefined)) {
    throw new InvalidConfigError(opts.natsTlsCertFile === undefined ? "natsTlsKeyFile" : "natsTlsCertFile", "a client certificate needs both natsTlsCertFile and natsTlsKeyFile");
  }
  const pem = (key: "natsTlsCaFile" | "natsTlsCertFile" | "natsTlsKeyFile", marker: RegExp): string | undefined => {
    const path = opts[key];
    if (path === undefined) return undefined;
    const text = readSecret(key, path, readText);
    if (!marker.test(text)) throw new InvalidConfigError(key, `${path} holds no PEM ${key === "natsTlsKeyFile" ? "private key" : "certificate"}`);
    return text;
  };
  const ca = pem("natsTlsCaFile", /-----BEGIN CERTIFICATE-----/);
  const cert = pem("natsTlsCertFile", /-----BEGIN CERTIFICATE-----/);
  const key = pem("natsTlsKeyFile", /-----BEGIN [A-Z ]*PRIVATE KEY-----/);
  if (ca !== undefined || cert !== undefined) tls = { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert, key: key! } : {}) };
  const how = auth.kind === "password" ? ` as ${auth.user}` : auth.kind === "token" ? " with a token" : auth.kind === "creds" ? ` with credentials from ${opts.natsCredsFile}` : "";
  const over = tls ? ` (TLS${tls.ca !== undefined ? ` trusting ${opts.natsTlsCaFile}` : ""}${tls.cert !== undefined ? `, client certificate ${opts.natsTlsCertFile}` : ""})` : "";
  return { servers, shown: servers.join(",") + how + over, auth, tls };
}

/**
 * The `connect()` options for the credentials and TLS, in nats.js's names; a credentials file comes back as its bytes, for the
 * caller's `credsAuthenticator` (which lives in the NATS client, not here).
 */
export function natsAuthOptions(conn: NatsConnection): { user?: string; pass?: string; token?: string; creds?: Uint8Array; tls?: NatsTls } {
  const tls = conn.tls ? { tls: conn.tls } : {};
  const auth = conn.auth;
  switch (auth.kind) {
    case "none":
      return tls;
    case "password":
      return { user: auth.user, pass: auth.pass, ...tls };
    case "token":
      return { token: auth.token, ...tls };
    case "creds":
      return { creds: new TextEncoder().encode(auth.creds), ...tls };
  }
}

/** A first connect that NATS refused, said with where and as whom. */
export function natsConnectError(conn: NatsConnection, err: unknown): Error {
  const e = err as Error;
  const refused = e?.name === "AuthorizationError" || /Authorization Violation|authentication/i.test(e?.message ?? "");
  const cause = (e as { cause?: { message?: string } })?.cause?.message;
  return new Error(refused ? `NATS at ${conn.shown} refused the credentials (${e.message}): check natsUser / natsPasswordFile / natsCredsFile` : `cannot connect to NATS at ${conn.shown}: ${e?.message ?? String(err)}${cause && cause !== e?.message ? ` (${cause})` : ""}`);
}

/** How often a process waiting for NATS says again why it is still waiting. */
const WAITING_LOG_MS = 10_000;
/** Between attempts while NATS is not there. */
const RETRY_MS = 500;

/** An error no retry can cure: NATS refused the credentials, or the TLS certificates do not fit. */
function hopeless(err: unknown): boolean {
  const e = err as { name?: string; message?: string; code?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "AuthorizationError" || e?.name === "PermissionViolationError") return true;
  const text = `${e?.message ?? ""} ${e?.cause?.message ?? ""} ${e?.code ?? ""} ${e?.cause?.code ?? ""}`;
  return /certificate|altnames|CERT_|SSL|self.signed|unable to verify|tls.*required|requires tls/i.test(text);
}

/**
 * Connects with `connect` (nats.js's), trying again every half second while NATS is not there (boot order on a
 * fleet) and saying why every 10 s; an error no retry can cure (credentials refused, a TLS certificate that does
 * not fit) stops the process at once with `natsConnectError`. The library's own `waitOnFirstConnect` would wait
 * as long, but in silence, also for a misconfiguration that never heals.
 */
export async function openNats<C, O extends Record<string, unknown>>(connect: (opts: O & { waitOnFirstConnect: boolean }) => Promise<C>, opts: O, conn: NatsConnection, log: (line: string) => void): Promise<C> {
  let loggedAt = 0;
  for (;;) {
    try {
      return await connect({ ...opts, waitOnFirstConnect: false });
    } catch (err) {
      if (hopeless(err)) throw natsConnectError(conn, err);
      if (Date.now() - loggedAt >= WAITING_LOG_MS) {
        loggedAt = Date.now();
        const e = err as { message?: string; cause?: { message?: string } };
        log(`NATS at ${conn.shown} did not answer (${e.cause?.message ?? e.message}); trying again${conn.tls?.cert === undefined && conn.tls ? " (a NATS that verifies clients never answers one without natsTlsCertFile)" : ""}`);
      }
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }
}
