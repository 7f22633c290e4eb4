/**
 * How a gateway or an agent reaches NATS: its server URLs and its credentials, checked once at start-up (design
 * §2), the same for both. Credentials come as a user and a password (`nats://user:pass@host` in the URL, or
 * `natsUser` with `natsPasswordFile`), a token (`nats://token@host`), or a NATS credentials file (`natsCredsFile`,
 * a user JWT and its nkey seed, for operator-mode deployments). The password belongs in a file, not a flag or the
 * URL (both show in `ps` and in config dumps); the URL form is taken because it is what NATS users write. What is
 * logged is `shown`, the URLs without credentials.
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
}

export const NATS_OPTION_KEYS = ["natsUrl", "natsUser", "natsPasswordFile", "natsCredsFile"] as const;

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
  const how = auth.kind === "password" ? ` as ${auth.user}` : auth.kind === "token" ? " with a token" : auth.kind === "creds" ? ` with credentials from ${opts.natsCredsFile}` : "";
  return { servers, shown: servers.join(",") + how, auth };
}

/**
 * The `connect()` options for `auth`, in nats.js's names; a credentials file comes back as its bytes, for the
 * caller's `credsAuthenticator` (which lives in the NATS client, not here).
 */
export function natsAuthOptions(auth: NatsAuth): { user?: string; pass?: string; token?: string; creds?: Uint8Array } {
  switch (auth.kind) {
    case "none":
      return {};
    case "password":
      return { user: auth.user, pass: auth.pass };
    case "token":
      return { token: auth.token };
    case "creds":
      return { creds: new TextEncoder().encode(auth.creds) };
  }
}

/** A first connect that NATS refused, said with where and as whom. */
export function natsConnectError(conn: NatsConnection, err: unknown): Error {
  const e = err as Error;
  const refused = e?.name === "AuthorizationError" || /Authorization Violation|authentication/i.test(e?.message ?? "");
  return new Error(refused ? `NATS at ${conn.shown} refused the credentials (${e.message}): check natsUser / natsPasswordFile / natsCredsFile` : `cannot connect to NATS at ${conn.shown}: ${e?.message ?? String(err)}`);
}
