/** Real Nodeway processes (the compiled `nodeway` command), started for a test and always cleaned up. */
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { check } from "./check.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const NODEWAY = join(ROOT, "bin", "nodeway.js");

export interface Proc {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
}

/** Its exit code, or "still running" (and then it is killed) when it has not exited within `ms`. */
export async function exitWithin(p: Proc, ms = 20_000): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((r) => (timer = setTimeout(() => r("still running"), ms)));
  const how = await Promise.race([p.exited, late]);
  clearTimeout(timer);
  if (how === "still running") await p.kill("SIGKILL");
  return how;
}

export function runNodeway(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const proc = spawn(process.execPath, [NODEWAY, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((r) => proc.once("exit", (code, sig) => r(code ?? sig ?? -1)));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    async kill(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/**
 * The first match of `re` in the process's stdout (group 1). Fails at once if the process ends first, and after
 * `timeoutMs` otherwise (killing it); either way with what it wrote, which is the only place it says why.
 */
async function waitForLine(p: Proc, what: string, re: RegExp, timeoutMs = 30_000): Promise<string> {
  const ended = p.exited.then((how) =>
    Promise.reject(
      new Error(`${what} exited (${typeof how === "number" ? `code ${how}` : how}) before its start line`),
    ),
  );
  try {
    return await Promise.race([
      check(() => re.exec(p.stdout())?.[1] ?? null, timeoutMs, { name: `${what} started` }),
      ended,
    ]);
  } catch (err) {
    void p.kill("SIGKILL");
    throw new Error(
      `${(err as Error).message}; its stdout: ${p.stdout().slice(-2_000)} stderr: ${p.stderr().slice(-2_000)}`,
    );
  } finally {
    ended.catch(() => undefined);
  }
}

export interface AgentProc extends Proc {
  id: string;
}

/**
 * Starts `nodeway agent` and waits until it has registered. Test agents offer the `nodeway.test.*` nodes
 * (`--test-nodes`); `extra` may turn them off again (`--test-nodes false`: the last flag wins).
 */
export async function startAgentProc(
  natsUrl: string,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<AgentProc> {
  const p = runNodeway(["agent", "--nats", natsUrl, "--test-nodes", ...extra], env);
  const id = await waitForLine(p, "agent", /agent (\S+) running/);
  return Object.assign(p, { id });
}

/** Starts `nodeway gateway` as a process on a free port. */
export async function startGatewayProc(
  natsUrl: string,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
  startMs = 30_000,
): Promise<Proc & { url: string }> {
  const p = runNodeway(["gateway", "--nats", natsUrl, "--port", "0", ...extra], env);
  const url = await waitForLine(p, "gateway", /gateway listening on (\S+)/, startMs);
  return Object.assign(p, { url });
}
