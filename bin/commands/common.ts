/** What every command of the `nodeway` CLI shares: failing with a message, flags, and the gateway it talks to. */
import { NodewayClient } from "../../client/index.js";
import { UsageError, parseArgs, type CommandFlags, type ParsedArgs } from "../settings.js";

export function fail(message: string, code = 2): never {
  process.stderr.write(`nodeway: ${message}\n`);
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

/** The gateway a client command talks to (`--gateway`, else NODEWAY_GATEWAY_URL), without a trailing slash. */
export function gatewayUrl(args: ParsedArgs): string {
  return (flag(args, "gateway") ?? process.env.NODEWAY_GATEWAY_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
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
  const e = err as { code?: string; message?: string };
  return e.code && !e.message?.startsWith(e.code) ? `${e.code}: ${e.message}` : String(e.message ?? err);
}

/** The flags of every command that talks to a gateway. */
export const GATEWAY_FLAGS = ["gateway", "token"] as const;

/** Writes `value` as one JSON line (`--json`). */
export const printJson = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value)}\n`);
