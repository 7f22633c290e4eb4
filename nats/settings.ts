/**
 * How a gateway or an agent reaches NATS: its server URLs and its credentials, checked once at start-up, the same
 * for both. Credentials come as a user and a password (`nats://user:pass@host` in the URL, or
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
import { InvalidConfigError } from "../protocol/index.js";

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

export const NATS_OPTION_KEYS = [
  "natsUrl",
  "natsUser",
  "natsPasswordFile",
  "natsCredsFile",
  "natsTlsCaFile",
  "natsTlsCertFile",
  "natsTlsKeyFile",
] as const;

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

export interface NatsSettings {
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
    throw new InvalidConfigError(
      key,
      `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  return text;
}

/** Parses and checks the NATS settings; throws `InvalidConfigError` naming the setting. */
export function compileNatsConnection(opts: NatsOptions, readText: (path: string) => string): NatsSettings {
  const { servers, userinfo } = parseUrls(opts.natsUrl ?? "nats://127.0.0.1:4222");
  const auth = authOf(opts, userinfo, readText);
  const tls = tlsOf(opts, readText);
  return { servers, shown: servers.join(",") + shownAuth(opts, auth, tls), auth, tls };
}

/** The server URLs without credentials, and the `user:pass` (or token) they carry, the same for all. */
function parseUrls(natsUrl: string): { servers: string[]; userinfo: string | null } {
  const urls = natsUrl
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (urls.length === 0) throw new InvalidConfigError("natsUrl", "needs at least one URL");
  const servers: string[] = [];
  let userinfo: string | null = null;
  for (const u of urls) {
    if (HOST_PORT.test(u)) {
      servers.push(u);
      continue;
    }
    if (!URL_FORM.test(u))
      throw new InvalidConfigError("natsUrl", `not a NATS URL: ${u.replace(/\/\/[^@/]*@/, "//…@")}`);
    const url = new URL(u);
    const info = url.username || url.password ? `${url.username}:${url.password}` : "";
    if (info) {
      if (userinfo !== null && userinfo !== info)
        throw new InvalidConfigError("natsUrl", "gives different credentials for different servers");
      userinfo = info;
    }
    url.username = "";
    url.password = "";
    servers.push(url.toString().replace(/\/$/, ""));
  }
  return { servers, userinfo };
}

/** How the process authenticates: at most one of URL credentials, `natsUser` + password file, a creds file. */
function authOf(opts: NatsOptions, userinfo: string | null, readText: (path: string) => string): NatsAuth {
  let auth: NatsAuth = { kind: "none" };
  if (userinfo !== null) {
    const [user, pass] = userinfo.split(":").map(decodeURIComponent) as [string, string];
    auth = pass ? { kind: "password", user, pass } : { kind: "token", token: user };
  }
  const given = [
    userinfo !== null && "credentials in natsUrl",
    opts.natsUser !== undefined && "natsUser",
    opts.natsCredsFile !== undefined && "natsCredsFile",
  ].filter(Boolean);
  if (given.length > 1)
    throw new InvalidConfigError(
      opts.natsCredsFile !== undefined ? "natsCredsFile" : "natsUser",
      `give one way to authenticate to NATS, not ${given.join(" and ")}`,
    );
  if (opts.natsPasswordFile !== undefined && opts.natsUser === undefined)
    throw new InvalidConfigError("natsPasswordFile", "needs natsUser (whose password it holds)");
  if (opts.natsUser !== undefined) {
    if (opts.natsUser === "" || /\s/.test(opts.natsUser))
      throw new InvalidConfigError("natsUser", "must be a non-empty name without spaces");
    if (opts.natsPasswordFile === undefined)
      throw new InvalidConfigError(
        "natsUser",
        "needs natsPasswordFile (the password is kept out of flags and the environment)",
      );
    const pass = readSecret("natsPasswordFile", opts.natsPasswordFile, readText).split(/\r?\n/)[0]!;
    if (pass === "")
      throw new InvalidConfigError("natsPasswordFile", `${opts.natsPasswordFile} holds no password on its first line`);
    auth = { kind: "password", user: opts.natsUser, pass };
  }
  if (opts.natsCredsFile !== undefined) {
    const creds = readSecret("natsCredsFile", opts.natsCredsFile, readText);
    if (!creds.includes("BEGIN NATS USER JWT") || !creds.includes("BEGIN USER NKEY SEED")) {
      throw new InvalidConfigError(
        "natsCredsFile",
        `${opts.natsCredsFile} is not a NATS credentials file (a user JWT and its nkey seed)`,
      );
    }
    auth = { kind: "creds", creds };
  }
  return auth;
}

/** The CA to trust and the client certificate to present, read as PEM text; null for the defaults. */
function tlsOf(opts: NatsOptions, readText: (path: string) => string): NatsTls | null {
  if ((opts.natsTlsCertFile === undefined) !== (opts.natsTlsKeyFile === undefined)) {
    throw new InvalidConfigError(
      opts.natsTlsCertFile === undefined ? "natsTlsKeyFile" : "natsTlsCertFile",
      "a client certificate needs both natsTlsCertFile and natsTlsKeyFile",
    );
  }
  const pem = (key: "natsTlsCaFile" | "natsTlsCertFile" | "natsTlsKeyFile", marker: RegExp): string | undefined => {
    const path = opts[key];
    if (path === undefined) return undefined;
    const text = readSecret(key, path, readText);
    if (!marker.test(text))
      throw new InvalidConfigError(
        key,
        `${path} holds no PEM ${key === "natsTlsKeyFile" ? "private key" : "certificate"}`,
      );
    return text;
  };
  const ca = pem("natsTlsCaFile", /-----BEGIN CERTIFICATE-----/);
  const cert = pem("natsTlsCertFile", /-----BEGIN CERTIFICATE-----/);
  const key = pem("natsTlsKeyFile", /-----BEGIN [A-Z ]*PRIVATE KEY-----/);
  if (ca === undefined && cert === undefined) return null;
  return { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert, key: key! } : {}) };
}

/** What the logged form adds to the URLs: as whom, and over which TLS (never a secret). */
function shownAuth(opts: NatsOptions, auth: NatsAuth, tls: NatsTls | null): string {
  const how =
    auth.kind === "password"
      ? ` as ${auth.user}`
      : auth.kind === "token"
        ? " with a token"
        : auth.kind === "creds"
          ? ` with credentials from ${opts.natsCredsFile}`
          : "";
  if (!tls) return how;
  const trusting = tls.ca !== undefined ? ` trusting ${opts.natsTlsCaFile}` : "";
  const presenting = tls.cert !== undefined ? `, client certificate ${opts.natsTlsCertFile}` : "";
  return `${how} (TLS${trusting}${presenting})`;
}
