/**
 * The agent's own directory for what its runs write: a docker run's socket directory, and the temp directory a
 * thread or process runner is given (its TMPDIR, where the media nodes copy their inputs). A runner that is
 * killed (stopped past its grace, out of memory, crashed) cannot remove what it wrote: its directory goes when it
 * does, the agent's at exit, and one left by a killed agent when the next agent of this user starts.
 */
import { chmodSync, lstatSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { lstat, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const RUNS_PREFIX = "nodeway-runs-";
/** The file in a runs directory naming the agent it belongs to: `{ pid, pidns }`. */
const RUNS_OWNER = "owner.json";

/** This process's pid namespace (`pid:[4026531836]`), "" where /proc does not say. */
export function pidNamespace(): string {
  try {
    return readlinkSync("/proc/self/ns/pid");
  } catch {
    return "";
  }
}

/** Whether a process `pid` of this host exists (another user's too). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

let runsParent: string | null = null;

/**
 * The directory every run's directory of this process goes in: made once (`mkdtemp`, so its name is not known
 * beforehand), mode 0700 and this process's own, checked as such; removed with what is left in it at exit.
 */
export function runsDir(): string {
  if (runsParent !== null && lstatSync(runsParent, { throwIfNoEntry: false })) return runsParent;
  const dir = mkdtempSync(join(tmpdir(), RUNS_PREFIX));
  chmodSync(dir, 0o700);
  const st = lstatSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (st.mode & 0o777) !== 0o700 || (uid !== undefined && st.uid !== uid)) {
    throw new Error(`${dir} is not a directory of this agent's with mode 0700`);
  }
  writeFileSync(join(dir, RUNS_OWNER), JSON.stringify({ pid: process.pid, pidns: pidNamespace() }), { mode: 0o600 });
  if (runsParent === null)
    process.once("exit", () => runsParent && rmSync(runsParent, { recursive: true, force: true }));
  runsParent = dir;
  return dir;
}

/** A fresh temp directory for one thread or process runner, and its removal (once, whatever came of the run). */
export function runnerTempDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(runsDir(), "tmp-"));
  let removed = false;
  return {
    dir,
    remove: () => {
      if (removed) return;
      removed = true;
      rm(dir, { recursive: true, force: true }).catch(() => undefined); // gone with the agent's directory at exit
    },
  };
}

/**
 * Removes the runs directories of this user's agents whose process is gone (a killed agent cannot remove its own);
 * one without an owner file, or of another pid namespace, is left alone.
 */
export async function removeStaleRunsDirs(log: (line: string) => void, parent = tmpdir()): Promise<void> {
  const names = await readdir(parent).catch(() => [] as string[]);
  const uid = process.getuid?.();
  for (const name of names.filter((n) => n.startsWith(RUNS_PREFIX))) {
    const dir = join(parent, name);
    const st = await lstat(dir).catch(() => null);
    if (!st?.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
    const owner = await readFile(join(dir, RUNS_OWNER), "utf8")
      .then((text) => JSON.parse(text) as { pid?: unknown; pidns?: unknown })
      .catch(() => null);
    const pid = Number(owner?.pid);
    if (!Number.isSafeInteger(pid) || pid <= 0 || owner?.pidns !== pidNamespace() || pidAlive(pid)) continue;
    log(`removing ${dir}: its agent (pid ${pid}) is gone`);
    await rm(dir, { recursive: true, force: true }).catch((err) =>
      log(`could not remove ${dir}: ${(err as Error).message}`),
    );
  }
}
