/**
 * Child processes for benchmarks: optional CPU pinning (taskset), output capture, an IPC request/reply channel
 * to long-lived worker processes, and cleanup of everything started, even when the benchmark throws or is killed.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import ts from "typescript";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const BENCH_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = resolve(BENCH_DIR, "..");
export const NODEWAY = join(ROOT, "bin", "nodeway.js");
const REGISTER = join(BENCH_DIR, "register.mjs");

const live = new Set<ChildProcess>();
export function killAll(): void {
  for (const p of live) {
    try {
      if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
  live.clear();
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

export interface Spawned {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  out(): string;
  err(): string;
  readonly exited: Promise<number | string>;
  /** Resolves with the first match of `re` in stdout (or stderr), rejects if the process exits first. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** IPC request/reply (only for processes started with `ipc: true` that use `serve`). */
  call<T = unknown>(msg: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const MAX_LOG = 256 * 1024;

/**
 * The last ~MAX_LOG characters of a child's output. Chunks are kept as they come and joined only when read (a
 * waiter checking its pattern, or `out()`), so a chatty child costs O(chunk) per write rather than a copy of the
 * whole tail per chunk in the benchmark process.
 */
class Tail {
  private chunks: string[] = [];
  private length = 0;
  private joined: string | null = "";
  push(chunk: string): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
    this.joined = null;
    while (this.length - this.chunks[0]!.length >= MAX_LOG) this.length -= this.chunks.shift()!.length;
  }
  text(): string {
    if (this.joined === null) {
      this.joined = this.chunks.join("").slice(-MAX_LOG);
      this.chunks = [this.joined];
      this.length = this.joined.length;
    }
    return this.joined;
  }
}

export function start(
  name: string,
  cmd: string,
  args: string[],
  opts: { cpu?: string; env?: NodeJS.ProcessEnv; ipc?: boolean; cwd?: string } = {},
): Spawned {
  const [file, argv] = opts.cpu !== undefined ? ["taskset", ["-c", opts.cpu, cmd, ...args]] : [cmd, args];
  const proc = spawn(file, argv, {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: opts.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"],
  });
  live.add(proc);
  const outTail = new Tail();
  const errTail = new Tail();
  const waiters = new Set<() => void>();
  proc.stdout!.on("data", (d: Buffer) => {
    outTail.push(d.toString());
    for (const w of waiters) w();
  });
  proc.stderr!.on("data", (d: Buffer) => {
    errTail.push(d.toString());
    if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${d.toString()}`);
    for (const w of waiters) w();
  });
  const exited = new Promise<number | string>((r) =>
    proc.once("exit", (code, sig) => {
      live.delete(proc);
      for (const w of waiters) w();
      r(code ?? sig ?? -1);
    }),
  );
  let nextId = 1;
  const pending = new Map<number, { res: (v: unknown) => void; rej: (e: Error) => void }>();
  if (opts.ipc) {
    proc.on("message", (m: { id: number; ok: boolean; value?: unknown; error?: string }) => {
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      if (m.ok) p.res(m.value);
      else p.rej(new Error(`${name}: ${m.error}`));
    });
    void exited.then((c) => {
      for (const p of pending.values()) p.rej(new Error(`${name} exited (${c}): ${errTail.text().slice(-2000)}`));
      pending.clear();
    });
  }
  const s: Spawned = {
    name,
    proc,
    pid: proc.pid!,
    out: () => outTail.text(),
    err: () => errTail.text(),
    exited,
    waitFor(re, timeoutMs = 30_000) {
      return new Promise((res, rej) => {
        const t = setTimeout(
          () => done(new Error(`${name}: no ${re} within ${timeoutMs} ms; stderr: ${errTail.text().slice(-2000)}`)),
          timeoutMs,
        );
        const check = () => {
          const m = re.exec(outTail.text()) ?? re.exec(errTail.text());
          if (m) return done(null, m);
          if (proc.exitCode !== null || proc.signalCode !== null)
            done(
              new Error(
                `${name} exited (${proc.exitCode ?? proc.signalCode}) before ${re}: ${errTail.text().slice(-2000)}`,
              ),
            );
        };
        const done = (e: Error | null, m?: RegExpExecArray) => {
          clearTimeout(t);
          waiters.delete(check);
          if (e) rej(e);
          else res(m!);
        };
        waiters.add(check);
        check();
      });
    },
    call<T>(msg: Record<string, unknown>, timeoutMs = 120_000): Promise<T> {
      const id = nextId++;
      return new Promise<T>((res, rej) => {
        const t = setTimeout(() => {
          pending.delete(id);
          rej(new Error(`${name}: ${String(msg.op)} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, {
          res: (v) => {
            clearTimeout(t);
            res(v as T);
          },
          rej: (e) => {
            clearTimeout(t);
            rej(e);
          },
        });
        proc.send({ ...msg, id });
      });
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
  return s;
}

/** Runs a bench TypeScript file under plain node with the ts-node loader. */
export function startTs(
  name: string,
  script: string,
  args: string[] = [],
  opts: { cpu?: string; env?: NodeJS.ProcessEnv; ipc?: boolean; nodeArgs?: string[] } = {},
): Spawned {
  return start(
    name,
    process.execPath,
    [...(opts.nodeArgs ?? []), "--import", REGISTER, join(BENCH_DIR, script), ...args],
    opts,
  );
}

/** Where `startCompiled` writes the JavaScript it runs (ignored by git, beside the results). */
const COMPILED_DIR = join(BENCH_DIR, "results", "js");

/**
 * Writes `script` (relative to bench/) and the local modules it imports as JavaScript under `COMPILED_DIR`, keeping
 * their relative paths (so `node_modules` resolves as from the sources); returns the entry's path.
 */
function compile(script: string, seen = new Set<string>()): string {
  const out = join(COMPILED_DIR, script.replace(/\.ts$/, ".js"));
  if (seen.has(script)) return out;
  seen.add(script);
  const src = readFileSync(join(BENCH_DIR, script), "utf8");
  const js = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, js);
  for (const m of src.matchAll(/from "(\.{1,2}\/[^"]+)\.js"/g)) compile(join(dirname(script), `${m[1]}.ts`), seen);
  return out;
}

/**
 * Runs a bench TypeScript file compiled ahead, with plain node: a process as lean at start as the compiled
 * gateway. Under the TypeScript loader the compiler itself fills a fresh process's heap (about 45 MB resident),
 * so pages the gateway touches for the first time are already resident there: memory figures would not compare.
 */
export function startCompiled(
  name: string,
  script: string,
  args: string[] = [],
  opts: { cpu?: string; env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {},
): Spawned {
  return start(name, process.execPath, [...(opts.nodeArgs ?? []), compile(script), ...args], opts);
}

/** The node flags our servers run with where they are deployed (bin/nodeway.js, deploy/systemd, deploy/local-up.sh). */
export const SERVER_NODE_ARGS = ["--no-memory-reducer", "--max-semi-space-size=4"] as const;

/** Runs the compiled `nodeway` command, with `SERVER_NODE_ARGS`. */
export function startNodeway(
  name: string,
  args: string[],
  opts: { cpu?: string; env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {},
): Spawned {
  return start(name, process.execPath, [...SERVER_NODE_ARGS, ...(opts.nodeArgs ?? []), NODEWAY, ...args], opts);
}

/** In a worker: answers `call`s from the parent. */
export function serve(handler: (msg: Record<string, unknown> & { op: string }) => Promise<unknown>): void {
  process.on("message", (m: Record<string, unknown> & { op: string; id: number }) => {
    handler(m).then(
      (value) => process.send!({ id: m.id, ok: true, value }),
      (err: unknown) => process.send!({ id: m.id, ok: false, error: (err as Error)?.stack ?? String(err) }),
    );
  });
  process.on("disconnect", () => process.exit(0));
}

/**
 * CPU time of a process in nanoseconds, all threads: the sum of `/proc/<pid>/task/<tid>/schedstat` run times
 * (ns resolution); falls back to utime+stime from `/proc/<pid>/stat` (10 ms ticks).
 */
export function cpuNs(pid: number): number {
  try {
    let sum = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        sum += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        /* thread ended */
      }
    }
    return sum;
  } catch {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) * 1e7;
  }
}

/** User and system CPU of a process in ns from `/proc/<pid>/stat` (10 ms ticks, all threads). */
export function cpuSplitNs(pid: number): { user: number; sys: number } {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return { user: Number(rest[11]) * 1e7, sys: Number(rest[12]) * 1e7 };
}

export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const nowMs = (): number => performance.timeOrigin + performance.now();

/**
 * Makes sure the commands a benchmark runs exist: missing ones are installed from their Debian packages when we
 * run as root (as the README's test command does for its services); otherwise the answer says what to install.
 * `commands` maps a command to its package. Returns null when all are there.
 */
export function ensureCommands(commands: Record<string, string>): string | null {
  const has = (cmd: string) => {
    try {
      execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  };
  const missing = [
    ...new Set(
      Object.entries(commands)
        .filter(([cmd]) => !has(cmd))
        .map(([, pkg]) => pkg),
    ),
  ];
  if (missing.length === 0) return null;
  if (process.getuid?.() !== 0) return `needs ${missing.join(", ")}: apt-get install ${missing.join(" ")}`;
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () =>
    execFileSync("apt-get", ["install", "-y", "--no-install-recommends", ...missing], { stdio: "ignore", env });
  try {
    install();
  } catch {
    try {
      execFileSync("apt-get", ["update"], { stdio: "ignore", env });
      install();
    } catch (err) {
      return `could not install ${missing.join(", ")}: ${(err as Error).message}`;
    }
  }
  const still = Object.keys(commands).filter((cmd) => !has(cmd));
  return still.length ? `still missing after installing: ${still.join(", ")}` : null;
}
