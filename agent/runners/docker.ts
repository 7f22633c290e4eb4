/**
 * The `docker` strategy: a job's graph runs in a container of its own, with real limits — memory
 * (no swap), CPUs, pids, a read-only root with a small `/tmp`, every capability dropped, no new privileges, an
 * unprivileged user, and no network unless the operator allows one. The container runs the same runner as the
 * `subprocess` strategy (strategy-child.ts, compiled) with the agent's own code mounted read-only:
 * `dist/`, `node_modules/` and `package.json` only, nothing else of the agent's directory (an operator's secret
 * files, say). Provider keys live in the agent's environment and are not passed in. A run of a `gpu`-pool job is
 * given the agent's GPUs by device id (`gpus`, else those detected: a Docker device request the NVIDIA
 * Container Toolkit serves); other runs get no device at all.
 *
 * The run talks to the agent over a unix socket in a per-run directory mounted into the container. Every run's
 * directory lies in one parent of the agent's, mode 0700: the container reaches its own through the mount, and no
 * other user of the host (nor another run) can reach any run's socket and pose as its runner
 * (frames.ts): a container has no IPC channel, and its stdout belongs to whatever a node prints (its first
 * `RUN_OUTPUT_MAX_BYTES` forwarded to the agent's stderr; the engine keeps none of it). A second connection from a
 * watchdog thread is the run's lifeline: when the agent dies, the socket closes, and the runner kills itself even
 * if a node holds its event loop (the container's init makes that possible; signals to a pid 1 do nothing), so the
 * container goes away with it; a run that outlives a killed agent anyway is removed by the next one (`removeOrphans`).
 *
 * The image: by default `nodeway-runner:node-<version>-<recipe>`, made once from this host's `node` binary and the
 * shared libraries it and the packages' native addons link (`ldd`; sharp's libvips needs libresolv, which node
 * does not), imported into the engine (`docker import`; no registry is needed). It holds node and those libraries
 * and nothing else, which is what the mounted code needs. An operator can name an image of their own
 * (`dockerImage`) with `node` on its PATH, of the version the agent runs; it is not built over.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readdir, readFile, realpath, rm, stat } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { Readable, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import Docker from "dockerode";
import tarStream from "tar-stream";
import { CODEC_LIMITS } from "../../protocol/index.js";
import { pidAlive, pidNamespace, runsDir } from "./runs-dir.js";
import { ASSET_CALLS_AT_ONCE, type Channel, type FromRunner, type ToRunner } from "./channel.js";
import { FrameReader, ROLE_CHANNEL, ROLE_LIFELINE, RUN_FRAME_MAX_BYTES, frame } from "./frames.js";

/** Memory of a docker run when `jobMemoryMb` is 0: a container always has a limit. */
export const DOCKER_DEFAULT_MEMORY_MB = 1024;

export interface DockerSettings {
  /** An operator's image (`node` on its PATH), or null for the runner image made from this host's node. */
  image: string | null;
  /** `none` (no network), or a Docker network the operator allows runs to use. */
  network: string;
  /** Memory limit in MiB, 0 = `DOCKER_DEFAULT_MEMORY_MB`; the run's heap is held below it. */
  memoryMb: number;
  /** CPUs a run may use (fractions allowed). */
  cpus: number;
  /** Processes and threads a run may have. */
  pids: number;
}

const FROM_SOURCE = import.meta.url.endsWith(".ts");
/** The package root, whose compiled runner the container runs (an agent run from sources still needs `npm run build`). */
const PACKAGE_ROOT = fileURLToPath(new URL(FROM_SOURCE ? "../../" : "../../../", import.meta.url));
const MOUNT = "/nodeway";
const RUNNER = `${MOUNT}/dist/agent/runners/strategy-child.js`;
const SOCKET_DIR = "/run/nodeway";
const SOCKET_NAME = "runner.sock";
/** Where the runner image puts node: on the default PATH Docker gives an image that has no environment. */
const IMAGE_NODE = "usr/local/bin/node";
/** What the default image holds, as a tag suffix: a new recipe makes a new image beside images of older ones. */
const IMAGE_RECIPE = "r2";
/** The image a docker agent makes and uses when `dockerImage` names none. */
export const DEFAULT_RUNNER_IMAGE = `nodeway-runner:node-${process.versions.node}-${IMAGE_RECIPE}`;
/** The user a run is: `nobody`, with no home and no files of its own. */
const RUN_USER = "65534:65534";
const TMP_MB = 64;

/**
 * Labels every run's container carries: the agent process it belongs to. A run whose agent was killed ends by
 * itself (its lifeline), unless what runs in it ignores that; the next agent on this host removes it.
 */
const AGENT_LABELS = {
  "nodeway.agent-host": hostname(),
  "nodeway.agent-pid": String(process.pid),
  // An agent in a container sharing the host's name sees other pids: only its own namespace's are judged.
  "nodeway.agent-pidns": pidNamespace(),
};

/** Docker's answer to a call, or why it failed, as one line. */
function why(err: unknown): string {
  const e = err as { statusCode?: number; json?: { message?: string }; message?: string };
  return e?.json?.message ?? e?.message ?? String(err);
}

/** The runs of one agent: the engine client, its image, and the limits every container gets. */
export class DockerRunner {
  private constructor(
    private readonly docker: Docker,
    private readonly image: string,
    private readonly nodeCmd: string,
    private readonly settings: DockerSettings,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Checked once at start-up: the engine answers, the compiled runner exists, the image is there (the default one
   * is made if missing). Throws an `Error` saying which.
   */
  static async prepare(settings: DockerSettings, log: (line: string) => void): Promise<DockerRunner> {
    const docker = new Docker(); // DOCKER_HOST, else /var/run/docker.sock
    try {
      await Promise.race([
        docker.ping(),
        new Promise((_, reject) => setTimeout(() => reject(new Error("no answer in 5 s")), 5_000).unref()),
      ]);
    } catch (err) {
      throw new Error(`the docker strategy needs a Docker engine: ${why(err)}`);
    }
    if (!existsSync(join(PACKAGE_ROOT, "dist/agent/runners/strategy-child.js"))) {
      throw new Error(
        `the docker strategy runs the compiled runner, and ${join(PACKAGE_ROOT, "dist")} has none: run \`npm run build\``,
      );
    }
    const image = settings.image ?? DEFAULT_RUNNER_IMAGE;
    const present = await docker
      .getImage(image)
      .inspect()
      .then(
        () => true,
        (err: { statusCode?: number }) => {
          if (err?.statusCode === 404) return false;
          throw new Error(`the docker strategy could not look up image ${image}: ${why(err)}`);
        },
      );
    if (!present) {
      if (settings.image !== null)
        throw new Error(`the docker strategy's image ${image} is not in the engine (dockerImage)`);
      log(`making the runner image ${image} from ${process.execPath}`);
      await buildRunnerImage(docker, image);
    }
    await removeOrphans(docker, log);
    return new DockerRunner(docker, image, settings.image === null ? `/${IMAGE_NODE}` : "node", settings, log);
  }

  get memoryMb(): number {
    return this.settings.memoryMb > 0 ? this.settings.memoryMb : DOCKER_DEFAULT_MEMORY_MB;
  }

  /**
   * A container for one run, as a channel; `label` names the job in the container's labels, `gpus` the device ids
   * of the GPUs it is given (none: no device request at all).
   */
  channel(label: string, gpus: readonly string[] = []): Channel {
    return new ContainerChannel(
      this.docker,
      this.image,
      this.nodeCmd,
      this.settings,
      this.memoryMb,
      label,
      gpus,
      this.log,
    );
  }
}

/** Removes the runs of agents of this host whose process is gone (killed before it could remove them). */
async function removeOrphans(docker: Docker, log: (line: string) => void): Promise<void> {
  const host = AGENT_LABELS["nodeway.agent-host"];
  const runs = await docker
    .listContainers({
      all: true,
      filters: {
        label: [
          "nodeway.role=runner",
          `nodeway.agent-host=${host}`,
          `nodeway.agent-pidns=${AGENT_LABELS["nodeway.agent-pidns"]}`,
        ],
      },
    })
    .catch((err) => {
      log(`could not list the runs of earlier agents of this host: ${why(err)}`);
      return [];
    });
  for (const c of runs) {
    const pid = Number(c.Labels["nodeway.agent-pid"]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pidAlive(pid)) continue;
    log(`removing container ${c.Id.slice(0, 12)} of run ${c.Labels["nodeway.run"]}: its agent (pid ${pid}) is gone`);
    await docker
      .getContainer(c.Id)
      .remove({ force: true })
      .catch((err) => log(`could not remove container ${c.Id.slice(0, 12)}: ${why(err)}`));
  }
}

/** Runs `cmd` and resolves its stdout. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout: 10_000 }, (err, out) => (err ? reject(err) : resolve(out))),
  );
}

/** The host libraries `file` loads (`ldd`), those under node_modules left out (they are mounted). */
async function hostLibraries(file: string): Promise<string[]> {
  const modules = join(PACKAGE_ROOT, "node_modules");
  return [...(await run("ldd", [file])).matchAll(/(\/\S+) \(0x/g)]
    .map((m) => m[1]!)
    .filter((l) => !l.startsWith(modules));
}

/** This platform's native addons and their libraries among the packages (another platform's fail `ldd`: skipped). */
async function addonLibraries(): Promise<string[]> {
  const modules = join(PACKAGE_ROOT, "node_modules");
  const names = await readdir(modules, { recursive: true }).catch(() => [] as string[]);
  const natives = names.filter(
    (n) => /\.node$|\.so(\.\d+)*$/.test(n) && n.includes(`${process.platform}-${process.arch}`),
  );
  const libs = await Promise.all(natives.map((n) => hostLibraries(join(modules, n)).catch(() => [])));
  return libs.flat();
}

/** An image holding this host's node binary and the libraries it and the native addons load, imported without a registry. */
async function buildRunnerImage(docker: Docker, image: string): Promise<void> {
  const node = await realpath(process.execPath);
  let libs: string[];
  try {
    libs = [...new Set([...(await hostLibraries(node)), ...(await addonLibraries())])];
  } catch (err) {
    throw new Error(`the runner image needs \`ldd\` to find node's libraries: ${why(err)}`);
  }
  const pack = tarStream.pack();
  const [repo, tag] = image.split(/:(?=[^:/]+$)/);
  // tar-stream's streams are streamx ones; the engine client wants a Node stream.
  const imported = docker.importImage(Readable.from(pack), { repo, tag: tag ?? "latest" });
  const files = [[node, IMAGE_NODE], ...libs.map((l) => [l, l.slice(1)])] as [string, string][];
  // Directories first, or the engine makes them for the files with a mode only root may pass.
  const dirs = new Set<string>();
  for (const [, name] of files) for (let d = dirname(name); d !== "." && d !== "/"; d = dirname(d)) dirs.add(d);
  for (const d of [...dirs].sort()) {
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: d, type: "directory", mode: 0o755 }, (err) => (err ? reject(err) : resolve())),
    );
  }
  // A library is usually a symlink to a versioned file: the image holds the file's bytes under the linked name.
  for (const [from, name] of files) {
    const bytes = await readFile(from);
    const mode = (await stat(from)).mode & 0o777;
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name, mode, size: bytes.byteLength }, bytes, (err) => (err ? reject(err) : resolve())),
    );
  }
  pack.finalize();
  const progress = await imported;
  await new Promise<void>((resolve, reject) =>
    docker.modem.followProgress(progress, (err) =>
      err ? reject(new Error(`importing the runner image failed: ${why(err)}`)) : resolve(),
    ),
  );
}

/**
 * Bytes the agent may have written to a run that it has not read: the answers to every asset call it may have
 * in flight (ASSET_CALLS_AT_ONCE, each at most a frame), and one frame more.
 */
const SEND_BACKLOG_MAX_BYTES = (ASSET_CALLS_AT_ONCE + 1) * CODEC_LIMITS.maxMessageBytes;

/** What of a run's output (stdout and stderr together) is passed on to the agent's stderr; the rest is dropped. */
export const RUN_OUTPUT_MAX_BYTES = 1024 * 1024;

/**
 * A run's output: passed on to the agent's stderr up to `RUN_OUTPUT_MAX_BYTES`, then `onFull` is called once (the
 * agent stops reading it); the last `max` characters of its stderr are kept as a dead run's last words.
 */
class RunOutput {
  text = "";
  private passed = 0;
  readonly stdout = new Writable({
    write: (chunk: Buffer, _enc, done) => {
      this.pass(chunk);
      done();
    },
  });
  readonly stderr = new Writable({
    write: (chunk: Buffer, _enc, done) => {
      this.pass(chunk);
      this.text = (this.text + chunk.toString()).slice(-this.max);
      done();
    },
  });
  constructor(
    private readonly max: number,
    private readonly onFull: () => void,
  ) {}

  private pass(chunk: Buffer): void {
    const room = RUN_OUTPUT_MAX_BYTES - this.passed;
    if (room <= 0) return;
    process.stderr.write(chunk.byteLength > room ? chunk.subarray(0, room) : chunk);
    this.passed += chunk.byteLength;
    if (this.passed >= RUN_OUTPUT_MAX_BYTES) this.onFull();
  }
}

/** One run's container, seen as a strategy channel. */
class ContainerChannel implements Channel {
  readonly what = "container";
  private messageFn: (m: FromRunner) => void = () => {};
  private goneFn: (how: string) => void = () => {};
  private gone = false;
  private queued: ToRunner[] = [];
  private conn: Socket | null = null;
  private lifeline: Socket | null = null;
  private server: Server | null = null;
  private dir: string | null = null;
  private container: Docker.Container | null = null;
  private exited = false;
  private killed = false;
  /** The engine's stream of what the run prints. */
  private attached: { destroy(): void } | null = null;
  private readonly output = new RunOutput(2_000, () => this.outputFull());

  constructor(
    private readonly docker: Docker,
    private readonly image: string,
    private readonly nodeCmd: string,
    private readonly settings: DockerSettings,
    private readonly memoryMb: number,
    private readonly label: string,
    private readonly gpus: readonly string[],
    private readonly log: (line: string) => void,
  ) {
    this.start().catch((err) => {
      // A container created but never started is not removed by AutoRemove.
      this.container?.remove({ force: true }).catch(() => undefined);
      const said = why(err);
      // The engine names no GPU problem plainly: "could not select device driver" is a host without the toolkit.
      const gpuHint =
        this.gpus.length > 0 && /device driver|nvidia|gpu/i.test(said)
          ? `; it was to have GPUs ${this.gpus.join(",")} (gpus): the engine needs the NVIDIA Container Toolkit for them`
          : "";
      this.end(`could not start: ${said}${gpuHint}`);
    });
  }

  alive(): boolean {
    return !this.gone;
  }
  hold(): void {
    // A container is never a spare: it holds the loop through its socket for as long as it runs.
  }

  send(m: ToRunner): void {
    if (this.gone) return;
    if (!this.conn) return void this.queued.push(m);
    this.conn.write(frame(m));
    // What the run does not read stays in the agent's memory: a run that lets it pile up is stopped.
    if (this.conn.writableLength > SEND_BACKLOG_MAX_BYTES)
      this.refuse(`is not reading what the agent sends (${this.conn.writableLength} bytes wait)`);
  }
  onMessage(fn: (m: FromRunner) => void): void {
    this.messageFn = fn;
  }
  onGone(fn: (how: string) => void): void {
    this.goneFn = fn;
  }
  kill(): void {
    this.killed = true;
    if (this.container && !this.exited) this.container.kill().catch(() => undefined); // gone already: nothing to do
    this.cleanUp();
  }

  private async start(): Promise<void> {
    // Only the container reaches it (through its mount): the parent is the agent's alone.
    this.dir = await mkdtemp(join(runsDir(), "run-"));
    // The run is another user: it may pass through the directory and use the socket, not list or add files.
    await chmod(this.dir, 0o711);
    const path = join(this.dir, SOCKET_NAME);
    this.server = createServer((s) => this.accept(s));
    // The runner's channel and its lifeline, no more: each connection is a descriptor of the agent's.
    this.server.maxConnections = 2;
    await new Promise<void>((resolve, reject) => this.server!.once("error", reject).listen(path, resolve));
    await chmod(path, 0o666);
    if (this.killed) return this.cleanUp();
    // The heap stays below the container's memory, so a run that outgrows it fails as V8 running out of heap
    // (a message) rather than the kernel's OOM killer (a bare SIGKILL).
    const heapMb = Math.max(16, Math.floor(this.memoryMb * 0.75));
    this.container = await this.docker.createContainer({
      Image: this.image,
      Cmd: [this.nodeCmd, `--max-old-space-size=${heapMb}`, RUNNER],
      Env: [`NODEWAY_RUNNER_SOCKET=${SOCKET_DIR}/${SOCKET_NAME}`],
      User: RUN_USER,
      WorkingDir: "/tmp",
      Labels: { "nodeway.role": "runner", "nodeway.run": this.label, ...AGENT_LABELS },
      NetworkDisabled: this.settings.network === "none",
      // What a run prints is read through the attach below, never stored by the engine: a log driver would keep
      // all of it on the host's disk for as long as the container lives.
      AttachStdout: true,
      AttachStderr: true,
      HostConfig: {
        AutoRemove: true,
        Init: true,
        LogConfig: { Type: "none", Config: {} },
        Binds: [
          `${join(PACKAGE_ROOT, "dist")}:${MOUNT}/dist:ro`,
          `${join(PACKAGE_ROOT, "node_modules")}:${MOUNT}/node_modules:ro`,
          `${join(PACKAGE_ROOT, "package.json")}:${MOUNT}/package.json:ro`,
          `${this.dir}:${SOCKET_DIR}`,
        ],
        NetworkMode: this.settings.network,
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": `rw,noexec,nosuid,size=${TMP_MB}m` },
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        Memory: this.memoryMb * 1024 * 1024,
        MemorySwap: this.memoryMb * 1024 * 1024, // the same: no swap
        NanoCpus: Math.round(this.settings.cpus * 1e9),
        PidsLimit: this.settings.pids,
        // Named devices only, never "all": a run sees the GPUs its agent was told to give, no others.
        ...(this.gpus.length > 0
          ? { DeviceRequests: [{ Driver: "nvidia", DeviceIDs: [...this.gpus], Capabilities: [["gpu"]] }] }
          : {}),
      },
    });
    const out = await this.container.attach({ stream: true, stdout: true, stderr: true });
    this.attached = out as unknown as { destroy(): void };
    // What a node prints goes to the agent's stderr, as for a subprocess run, up to RUN_OUTPUT_MAX_BYTES.
    this.docker.modem.demuxStream(out, this.output.stdout, this.output.stderr);
    // Waited on before it starts (its next exit: a created container is already "not running"): with AutoRemove,
    // a run that ends at once would be gone before a later wait.
    const exit = (
      this.container.wait({ condition: "next-exit" }) as Promise<{
        StatusCode: number;
        Error?: { Message?: string } | null;
      }>
    ).catch((err) => ({
      StatusCode: -1,
      Error: { Message: `the engine stopped answering: ${why(err)}` },
    }));
    if (this.killed) return void this.container.remove({ force: true }).catch(() => undefined);
    await this.container.start();
    const res = await exit;
    this.exited = true;
    const code = res.StatusCode === 137 ? "killed (SIGKILL; out of memory or stopped)" : `exit code ${res.StatusCode}`;
    const last = this.output.text.trim().split("\n").slice(-3).join(" | ");
    this.end(`${code}${res.Error?.Message ? `, ${res.Error.Message}` : ""}${last ? `; it said: ${last}` : ""}`);
  }

  /** The run printed all the agent passes on: the engine drops the rest (no log driver, no one attached). */
  private outputFull(): void {
    this.log(`run ${this.label} printed more than ${RUN_OUTPUT_MAX_BYTES} bytes; the rest of its output is dropped`);
    this.attached?.destroy();
  }

  private accept(s: Socket): void {
    s.once("data", (first: Buffer) => {
      if (first[0] === ROLE_LIFELINE && !this.lifeline) {
        this.lifeline = s;
        return this.bothIn();
      }
      if (first[0] !== ROLE_CHANNEL || this.conn) return void s.destroy();
      this.conn = s;
      this.bothIn();
      const reader = new FrameReader(RUN_FRAME_MAX_BYTES);
      const take = (chunk: Buffer) => {
        let frames: unknown[];
        try {
          frames = reader.push(chunk);
        } catch (err) {
          return this.refuse(`sent what is not a frame (${(err as Error).message})`);
        }
        // What the frames say is checked where every runner's messages are (runnerMessageProblem).
        for (const f of frames) this.messageFn(f as FromRunner);
      };
      if (first.byteLength > 1) take(first.subarray(1));
      s.on("data", take);
      s.on("error", () => undefined); // the container going away is seen by its exit
      for (const m of this.queued.splice(0)) s.write(frame(m));
    });
    s.on("error", () => undefined);
  }

  /** Once the channel and the lifeline are in, the socket takes no other connection. */
  private bothIn(): void {
    if (!this.conn || !this.lifeline) return;
    this.server?.close();
    this.server = null;
  }

  /** The run broke the protocol: it is stopped, and its job fails saying how. */
  private refuse(how: string): void {
    this.log(`run ${this.label} ${how}; stopping it`);
    this.kill();
    this.end(how);
  }

  private end(how: string): void {
    if (this.gone) return;
    this.gone = true;
    this.cleanUp();
    this.goneFn(how);
  }

  private cleanUp(): void {
    this.conn?.destroy();
    this.lifeline?.destroy();
    this.server?.close();
    this.server = null;
    const dir = this.dir;
    this.dir = null;
    if (dir) void rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
