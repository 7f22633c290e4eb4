/** What every command of the `nodeway` CLI shares: failing with a message, flags, and the gateway it talks to. */
import { NodewayClient } from "../../client/index.js";
import { UsageError, parseArgs, type CommandFlags, type ParsedArgs } from "../settings.js";

/**
 * The password of every `user:password@` in a URL (`http://`, `nats://`, or none: `user:pw@host:4222`) as `***`,
 * so that what the CLI prints, its own words or a module's error, never shows one.
 */
export function redactUrls(text: string): string {
  return text.replace(/((?:^|[\s"'(<=,[])(?:[a-z][a-z0-9+.-]*:\/\/)?[^\s"'<>/@:]*):[^\s"'<>/@]*@/gi, "$1:***@");
}

export function fail(message: string, code = 2): never {
  process.stderr.write(`nodeway: ${redactUrls(message)}\n`);
  process.exit(code);
}

/** A boolean flag that is given and not given as `false`. */
export function flagOn(args: ParsedArgs, name: string): boolean {
  const v = args.flags.get(name)?.at(-1);
  return v !== undefined && v !== "false";
}

/** The last value of a flag. */
export const flag = (args: ParsedArgs, name: string): string | undefined => args.flags.get(name)?.at(-1);

/** The command line of one command; one it does not take (a flag, a value, an argument) exits 2 saying why. */
export function parseCommand(argv: readonly string[], spec: CommandFlags): ParsedArgs {
  try {
    return parseArgs(argv, spec);
  } catch (err) {
    if (err instanceof UsageError) fail(err.message);
    throw err;
  }
}

/**
 * The gateway a client command talks to (`--gateway`, else NODEWAY_GATEWAY_URL), without a trailing slash. One that
 * is no http(s) URL, or holds a user or password (never sent: `fetch` refuses such URLs), exits 2 saying so.
 */
export function gatewayUrl(args: ParsedArgs): string {
  const given = flag(args, "gateway");
  const url = (given ?? process.env.NODEWAY_GATEWAY_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
  const from = given !== undefined ? "--gateway" : "NODEWAY_GATEWAY_URL";
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return fail(`${from} ${url}: not a URL (give http://host:port or https://host)`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:")
    fail(`${from} ${url}: not an http:// or https:// URL`);
  if (parsed.username !== "" || parsed.password !== "")
    fail(
      `${from} ${url}: a user or password in the URL is never sent; give an API token with --token or NODEWAY_API_TOKEN`,
    );
  return url;
}

/** `--token`, else NODEWAY_API_TOKEN, which keeps the token off the command line (where `ps` shows it). */
export function apiToken(args: ParsedArgs): string | undefined {
  return flag(args, "token") ?? process.env.NODEWAY_API_TOKEN;
}

/** The typed client of the command's gateway (MessagePack on `/ws`). */
export function clientOf(args: ParsedArgs): NodewayClient {
  const token = apiToken(args);
  return new NodewayClient({ url: gatewayUrl(args), ...(token ? { token } : {}) });
}

/** An error of the client or the gateway as one line: `CODE: message`. */
export function errorLine(err: unknown): string {
  const e = err as { code?: string; message?: string; status?: number };
  // The client gives an answer without a `message` (a proxy's 413, say) as `HTTP_<status>` and `<status> <body>`.
  const head = `${e.status} `;
  if (e.status !== undefined && e.code === `HTTP_${e.status}` && e.message?.startsWith(head))
    return answerLine(e.status, e.message.slice(head.length));
  return e.code && !e.message?.startsWith(e.code) ? `${e.code}: ${e.message}` : String(e.message ?? err);
}

/**
 * A gateway's (or its proxy's) answer that is not 2xx, as one line: `CODE: message` from its JSON body; one without
 * a message gets words for its status (413: too large) rather than the raw body.
 */
export function answerLine(status: number, body: string): string {
  let said: { code?: unknown; message?: unknown } = {};
  try {
    const v = JSON.parse(body) as unknown;
    if (v !== null && typeof v === "object") said = v as typeof said;
  } catch {
    /* not JSON: said as it is, below */
  }
  const code = typeof said.code === "string" ? said.code : `HTTP_${status}`;
  if (typeof said.message === "string") return `${code}: ${said.message}`;
  if (status === 413) return `${code}: larger than the gateway, or a proxy in front of it, accepts (HTTP 413)`;
  return `${code}: ${status} ${body.slice(0, 200)}`.trimEnd();
}

/** The flags of every command that talks to a gateway. */
export const GATEWAY_FLAGS = ["gateway", "token"] as const;

/** Writes `value` as one JSON line (`--json`). */
export const printJson = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value)}\n`);
