/**
 * Connecting to NATS, one function per role: the gateway and the agent share one set of connection options and
 * one first-connect loop; tools and tests connect plainly.
 */
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import type { NatsSettings } from "./settings.js";

/** How often a process waiting for NATS says again why it is still waiting. */
const WAITING_LOG_MS = 10_000;
/** Between attempts while NATS is not there. */
const RETRY_MS = 500;

/** The credentials and TLS of `settings` in nats.js's names. */
export function natsAuthOptions(settings: NatsSettings): Partial<ConnectionOptions> {
  const tls = settings.tls ? { tls: settings.tls } : {};
  const auth = settings.auth;
  switch (auth.kind) {
    case "none":
      return tls;
    case "password":
      return { user: auth.user, pass: auth.pass, ...tls };
    case "token":
      return { token: auth.token, ...tls };
    case "creds":
      return { authenticator: credsAuthenticator(new TextEncoder().encode(auth.creds)), ...tls };
  }
}

/** The options of a long-lived service connection (gateway, agent): reconnects forever, notices a dead link. */
export function serviceConnectOptions(settings: NatsSettings, name: string): ConnectionOptions {
  return {
    servers: settings.servers,
    ...natsAuthOptions(settings),
    name,
    maxReconnectAttempts: -1,
    // No stack captured per request in case it times out: that was 14% of the gateway's CPU under dispatch load.
    noAsyncTraces: true,
    reconnectTimeWait: 500,
    // Two missed pings 3 s apart: a dead link is noticed within ~10 s.
    pingInterval: 3_000,
    maxPingOut: 2,
  };
}

/** A first connect that NATS refused, said with where and as whom. */
export function natsConnectError(settings: NatsSettings, err: unknown): Error {
  const e = err as Error;
  const refused = e?.name === "AuthorizationError" || /Authorization Violation|authentication/i.test(e?.message ?? "");
  if (refused) {
    const check = "check natsUser / natsPasswordFile / natsCredsFile";
    return new Error(`NATS at ${settings.shown} refused the credentials (${e.message}): ${check}`);
  }
  const cause = (e as { cause?: { message?: string } })?.cause?.message;
  const why = `${e?.message ?? String(err)}${cause && cause !== e?.message ? ` (${cause})` : ""}`;
  return new Error(`cannot connect to NATS at ${settings.shown}: ${why}`);
}

/** An error no retry can cure: NATS refused the credentials, or the TLS certificates do not fit. */
function hopeless(err: unknown): boolean {
  const e = err as { name?: string; message?: string; code?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "AuthorizationError" || e?.name === "PermissionViolationError") return true;
  const text = `${e?.message ?? ""} ${e?.cause?.message ?? ""} ${e?.code ?? ""} ${e?.cause?.code ?? ""}`;
  return /certificate|altnames|CERT_|SSL|self.signed|unable to verify|tls.*required|requires tls/i.test(text);
}

/** Why a first connect found no NATS, for the waiting log line. */
function notThereText(settings: NatsSettings, err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string } };
  const noCert = settings.tls && settings.tls.cert === undefined;
  const hint = noCert ? " (a NATS that verifies clients never answers one without natsTlsCertFile)" : "";
  return `NATS at ${settings.shown} did not answer (${e.cause?.message ?? e.message}); trying again${hint}`;
}

/**
 * Connects, trying again every half second while NATS is not there (boot order on a fleet) and saying why every
 * 10 s; an error no retry can cure (credentials refused, a TLS certificate that does not fit) stops the process at
 * once with `natsConnectError`. The library's own `waitOnFirstConnect` would wait as long, but in silence, also
 * for a misconfiguration that never heals.
 */
export async function openNats(
  opts: ConnectionOptions,
  settings: NatsSettings,
  log: (line: string) => void,
): Promise<NatsConnection> {
  let loggedAt = 0;
  for (;;) {
    try {
      return await connect({ ...opts, waitOnFirstConnect: false });
    } catch (err) {
      if (hopeless(err)) throw natsConnectError(settings, err);
      if (Date.now() - loggedAt >= WAITING_LOG_MS) {
        loggedAt = Date.now();
        log(notThereText(settings, err));
      }
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }
}

/** The gateway's connection. */
export function connectGateway(settings: NatsSettings, log: (line: string) => void): Promise<NatsConnection> {
  return openNats(serviceConnectOptions(settings, "nodeway-gateway"), settings, log);
}

/**
 * An agent's connection, named after the agent; its replies come under `inboxPrefix` (`subjects.agentInbox`), the
 * only inbox its NATS user may read.
 */
export function connectAgent(
  settings: NatsSettings,
  agentId: string,
  log: (line: string) => void,
  inboxPrefix?: string,
): Promise<NatsConnection> {
  const opts = serviceConnectOptions(settings, `nodeway-agent-${agentId}`);
  return openNats(inboxPrefix ? { ...opts, inboxPrefix } : opts, settings, log);
}

/** A tool's or a test's connection: one try, no retry loop; `extra` adds or overrides options. */
export function connectTool(
  servers: string | string[],
  name: string,
  extra: Partial<ConnectionOptions> = {},
): Promise<NatsConnection> {
  return connect({ servers, name, ...extra });
}
