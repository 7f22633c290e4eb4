/** What this machine offers, detected at start and refreshed with the heartbeat. */
import { execFile } from "node:child_process";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";
import {
  InvalidConfigError,
  LLM_PROVIDERS,
  PROVIDER_SETTING,
  type GpuInfo,
  type LlmProvider,
} from "../protocol/index.js";

function run(cmd: string, args: string[], timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout) => resolve(err ? null : stdout));
  });
}

/**
 * Parses `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits`.
 * Lines that do not parse are skipped: a GPU we cannot describe is not offered.
 */
export function parseNvidiaSmi(csv: string): GpuInfo[] {
  const gpus: GpuInfo[] = [];
  for (const line of csv.split("\n")) {
    const parts = line.split(",").map((s) => s.trim());
    if (parts.length < 3) continue;
    const index = Number(parts[0]);
    const mem = Number(parts[2]);
    if (!Number.isInteger(index) || !Number.isFinite(mem)) continue;
    const gpu: GpuInfo = { index, name: parts[1]!, memory_total_mb: mem };
    if (parts[3]) gpu.uuid = parts[3];
    gpus.push(gpu);
  }
  return gpus;
}

/**
 * The GPU device ids `gpu`-pool runs are given (agent/gpus.ts): the configured ones (`gpus`), else every detected GPU
 * by UUID (stable across reboots, where an index is not). A configured id that names none of the detected GPUs is
 * refused: an agent would otherwise fail every GPU job at container start. With nothing detected (no nvidia-smi
 * on the agent's host, say) the configured ids are taken as they are.
 */
export function runGpuIds(configured: readonly string[] | null, detected: readonly GpuInfo[]): string[] {
  if (configured === null) return detected.map((g) => g.uuid ?? String(g.index));
  if (detected.length > 0) {
    const known = new Set(detected.flatMap((g) => [String(g.index), ...(g.uuid ? [g.uuid] : [])]));
    const unknown = configured.filter((id) => !known.has(id));
    if (unknown.length > 0) {
      throw new InvalidConfigError(
        "gpus",
        `names ${unknown.join(", ")}, which this host's GPUs are not (${detected.map((g) => `${g.index}${g.uuid ? ` ${g.uuid}` : ""}`).join("; ")})`,
      );
    }
  }
  return [...configured];
}

/** GPUs via nvidia-smi; none (or no nvidia-smi) is fine. */
export async function detectGpus(): Promise<GpuInfo[]> {
  const out = await run(
    "nvidia-smi",
    ["--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"],
    5_000,
  );
  return out ? parseNvidiaSmi(out) : [];
}

/**
 * A Docker engine this agent can reach, where the engine client would look for it: `DOCKER_HOST` when set (a
 * `unix://` socket that exists; `tcp://` and `ssh://` count as configured, since only a client could tell more),
 * else the default socket. A `/_ping` would need the client, which only an agent offering the docker strategy
 * loads (and which then checks the engine answers before the agent starts).
 */
export function detectDocker(env: NodeJS.ProcessEnv = process.env, defaultSocket = "/var/run/docker.sock"): boolean {
  const host = env.DOCKER_HOST;
  if (!host) return existsSync(defaultSocket);
  if (host.startsWith("unix://")) return existsSync(host.slice("unix://".length));
  return /^(?:tcp|ssh|https?):\/\/./.test(host);
}

/** Providers configured on this agent: keys live here, in its environment, never in a job. */
export function detectProviders(env: NodeJS.ProcessEnv = process.env): LlmProvider[] {
  return LLM_PROVIDERS.filter((p) => Boolean(env[PROVIDER_SETTING[p]]));
}

/** The executable `name` on `env.PATH` (absolute entries only), or null; no process is started. */
export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  for (const dir of (env.PATH ?? "").split(delimiter)) {
    if (!isAbsolute(dir)) continue;
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      if (statSync(file).isFile()) return file;
    } catch {
      // not here: the next entry
    }
  }
  return null;
}

/** Where this host's `ffmpeg` and `ffprobe` are: the video nodes need both. */
export interface FfmpegTools {
  ffmpeg: string;
  ffprobe: string;
}

/** `ffmpeg` and `ffprobe` on PATH, or null when either is missing (then the agent offers no video nodes). */
export function findFfmpeg(env: NodeJS.ProcessEnv = process.env): FfmpegTools | null {
  const ffmpeg = findOnPath("ffmpeg", env);
  const ffprobe = findOnPath("ffprobe", env);
  return ffmpeg && ffprobe ? { ffmpeg, ffprobe } : null;
}

/** What an agent reports of ffmpeg: where it is and its version (the first line of `ffmpeg -version`), or null. */
export interface FfmpegInfo extends FfmpegTools {
  version: string | null;
}

/** ffmpeg as found on PATH, with its version; null when it (or ffprobe) is not there. */
export async function detectFfmpeg(env: NodeJS.ProcessEnv = process.env): Promise<FfmpegInfo | null> {
  const tools = findFfmpeg(env);
  if (!tools) return null;
  const out = await run(tools.ffmpeg, ["-hide_banner", "-version"], 5_000);
  const version = /^ffmpeg version (\S+)/.exec(out ?? "")?.[1] ?? null;
  return { ...tools, version };
}
