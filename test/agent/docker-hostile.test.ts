/**
 * A hostile run in the `docker` strategy: code in the container (here, a module node loads before the runner).
 * What it prints is neither stored on the host's disk by the engine's log driver nor passed on to the agent's
 * stderr past `RUN_OUTPUT_MAX_BYTES`; its socket takes two connections (the channel and the lifeline), so it
 * cannot use up the agent's descriptors; a run that reads nothing of what the agent sends is stopped before the
 * agent holds more than a bounded backlog; a run that outlives its killed agent is removed by the next agent of
 * this host. Skipped where no Docker engine answers.
 */
import t from "tap";
import { DEFAULT_RUNNER_IMAGE } from "../../agent/runners/docker.js";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Readable } from "node:stream";
import Docker from "dockerode";
import tarStream from "tar-stream";
import { removeStaleRunsDirs, type Channel, type FromRunner } from "../../agent/runners/index.js";
import { DockerRunner, RUN_OUTPUT_MAX_BYTES } from "../../agent/runners/docker.js";
import { check } from "../helpers/check.js";

const docker = new Docker();
const IMAGE = "nodeway-test-hostile-run:1";
const SETTINGS = { network: "none", memoryMb: 256, cpus: 1, pids: 256 };

/**
 * Takes the run's channel and lifeline before the real runner; on the agent's `run` frame does what its one node's
 * type says, then reports with a `log_update` event and idles.
 */
const HOSTILE = `import { connect } from "node:net";
import { FrameReader, ROLE_CHANNEL, ROLE_LIFELINE, frame } from "/nodeway/dist/agent/runners/frames.js";
const path = process.env.NODEWAY_RUNNER_SOCKET;
const s = connect(path);
s.on("error", () => {});
await new Promise((r) => s.once("connect", r));
s.write(Buffer.from([ROLE_CHANNEL]));
const lifeline = connect(path, () => lifeline.write(Buffer.from([ROLE_LIFELINE])));
const say = (content) => s.write(frame({ type: "event", event: { type: "log_update", node_id: "h", content } }));
const modes = {
  async flood({ mb }) {
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    for (let i = 0; i < mb * 16; i++)
      if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once("drain", r));
    say("flooded");
  },
  async orphan() {
    lifeline.destroy(); // what the real runner's watchdog would notice, gone: it outlives its agent
    say("orphan");
  },
  async deaf() {
    s.pause(); // reads nothing more the agent sends
    say("deaf");
  },
  async connections({ n }) {
    let open = 0;
    for (let i = 0; i < n; i++)
      await new Promise((r) => {
        const c = connect(path);
        c.on("connect", () => r(open++));
        c.on("error", r);
      });
    say("opened " + open);
  },
};
const reader = new FrameReader();
s.on("data", async (chunk) => {
  for (const m of reader.push(chunk)) if (m.type === "run") await modes[m.graph.nodes[0].type](m.graph.nodes[0].data);
});
await new Promise(() => {});
`;

const engine = await Promise.race([
  docker.ping().then(
    () => true,
    () => false,
  ),
  new Promise<boolean>((r) => setTimeout(() => r(false), 5_000).unref()),
]);
const skip = engine ? false : "no Docker engine answers";

/** The hostile image, over the runner image (made by the agent's own code when missing). */
async function hostileRunner(log: (line: string) => void): Promise<DockerRunner> {
  await DockerRunner.prepare({ image: null, ...SETTINGS }, () => undefined);
  const pack = tarStream.pack();
  pack.entry(
    { name: "Dockerfile" },
    `FROM ${DEFAULT_RUNNER_IMAGE}\nCOPY hostile.mjs /hostile.mjs\nENV NODE_OPTIONS=--import=/hostile.mjs\n`,
  );
  pack.entry({ name: "hostile.mjs" }, HOSTILE);
  pack.finalize();
  const built = await docker.buildImage(Readable.from(pack) as unknown as NodeJS.ReadableStream, { t: IMAGE });
  await new Promise<void>((resolve, reject) =>
    docker.modem.followProgress(built, (err, out) =>
      err
        ? reject(err)
        : out.some((o: { error?: string }) => o.error)
          ? reject(new Error(JSON.stringify(out)))
          : resolve(),
    ),
  );
  return DockerRunner.prepare({ image: IMAGE, ...SETTINGS }, log);
}

/** Starts a run of one hostile node; resolves the channel and the first event's content (or how the run went). */
async function hostileRun(
  t: { teardown(fn: () => unknown): void },
  runner: DockerRunner,
  type: string,
  data: Record<string, unknown>,
): Promise<{ ch: Channel; label: string; said: string }> {
  const label = `hostile-${type}-${process.pid}-${Date.now()}`;
  const ch = runner.channel(label);
  t.teardown(() => ch.kill());
  const said = new Promise<string>((resolve) => {
    ch.onMessage((m: FromRunner) => {
      if (m.type === "event") resolve(String((m.event as { content?: unknown }).content));
    });
    ch.onGone((how) => resolve(`gone: ${how}`));
  });
  ch.send({
    type: "run",
    graph: { nodes: [{ id: "h", type, data }], edges: [] },
    params: {},
    nodes: { offered: [], host: [], limits: { listMaxItems: 1, stringMaxBytes: 1, dictMaxKeys: 1 } },
  });
  return { ch, label, said: await said };
}

const containerOf = async (label: string) => {
  const [c] = await docker.listContainers({ filters: { label: [`nodeway.run=${label}`] } });
  return docker.getContainer(c!.Id).inspect();
};

t.teardown(async () => {
  for (const c of await docker
    .listContainers({ all: true, filters: { label: ["nodeway.run"] } })
    .catch(() => [] as Docker.ContainerInfo[])) {
    if (String(c.Labels["nodeway.run"]).startsWith("hostile-"))
      await docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => undefined);
  }
  await docker
    .getImage(IMAGE)
    .remove({ force: true })
    .catch(() => undefined);
});

const lines: string[] = [];
const runner = engine ? await hostileRunner((line) => lines.push(line)) : null;

t.test(
  "docker hostile - 64 MiB printed reach neither the host's disk nor the agent's stderr past the cap",
  { skip },
  async (t) => {
    let passed = 0;
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array) => {
      passed += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.byteLength;
      return true;
    }) as typeof process.stderr.write;
    t.teardown(() => void (process.stderr.write = write));
    const { label, said } = await hostileRun(t, runner!, "flood", { mb: 64 });
    process.stderr.write = write;
    t.equal(said, "flooded", "the run printed it all and went on: its output is not held up");
    const info = await containerOf(label);
    t.equal(info.HostConfig.LogConfig?.Type, "none", "the engine keeps no log of the run");
    const stored = info.LogPath ? (statSync(info.LogPath, { throwIfNoEntry: false })?.size ?? 0) : 0;
    t.ok(stored < 1024 * 1024, `the engine stored ${stored} bytes of it on the host's disk (a json-file log: 67 MB)`);
    t.ok(passed <= RUN_OUTPUT_MAX_BYTES, `the agent's stderr got ${passed} bytes of it (all 64 MiB before)`);
    t.ok(passed >= RUN_OUTPUT_MAX_BYTES / 2, "what it printed first is still passed on");
    t.ok(
      lines.some(
        (l) => l.includes(label) && /printed more than 1048576 bytes; the rest of its output is dropped/.test(l),
      ),
      "the agent's log says the rest was dropped",
    );
  },
);

t.test(
  "docker hostile - 2,000 connections to a run's socket hold at most two of the agent's descriptors",
  { skip },
  async (t) => {
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    const { said } = await hostileRun(t, runner!, "connections", { n: 2_000 });
    t.match(said, /^opened \d+$/, "the run tried them all");
    const held = fds() - before;
    t.ok(held < 16, `the agent holds ${held} more descriptors (2,000 before)`);
  },
);

t.test(
  "docker hostile - a run that reads nothing is stopped before the agent holds more than its backlog",
  { skip },
  async (t) => {
    const { ch, said } = await hostileRun(t, runner!, "deaf", {});
    t.equal(said, "deaf", "the run stopped reading");
    let how: string | null = null;
    ch.onGone((h) => (how = h));
    const answer = new Uint8Array(15 * 1024 * 1024).fill(3); // an asset read: under a frame's 16 MiB
    let sent = 0;
    for (; sent < 20 && how === null; sent++)
      ch.send({ type: "asset_result", call: sent + 1, ok: true, bytes: answer });
    await check(() => how, 10_000, { name: "the deaf run stopped" });
    t.match(how, /is not reading what the agent sends \(\d+ bytes wait\)/, "the run is stopped, saying why");
    t.ok(sent <= 10, `after ${sent} answers of 15 MiB (all 20, 300 MiB, held before)`);
  },
);

/** The owner file of a runs directory, "" when it has none. */
function ownerOf(dir: string): string {
  try {
    return readFileSync(join(dir, "owner.json"), "utf8");
  } catch {
    return "";
  }
}

/** An agent of its own process: starts one hostile `orphan` run, says so on stdout, and waits to be killed. */
const AGENT = `
const { DockerRunner } = await import(process.argv[1]);
const runner = await DockerRunner.prepare(JSON.parse(process.argv[2]), () => {});
const ch = runner.channel(process.argv[3]);
ch.onMessage((m) => m.type === "event" && console.log("running"));
ch.send({ type: "run", graph: { nodes: [{ id: "h", type: "orphan", data: {} }], edges: [] }, params: {},
  nodes: { offered: [], host: [], limits: { listMaxItems: 1, stringMaxBytes: 1, dictMaxKeys: 1 } } });
`;

t.test(
  "docker hostile - a run that outlives its killed agent is removed by the next agent of the host",
  { skip },
  async (t) => {
    const label = `hostile-orphan-${process.pid}-${Date.now()}`;
    const compiled = fileURLToPath(new URL("../../dist/agent/runners/docker.js", import.meta.url));
    const agent = spawn(
      process.execPath,
      ["--input-type=module", "-e", AGENT, compiled, JSON.stringify({ image: IMAGE, ...SETTINGS }), label],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    agent.stdout.on("data", (c: Buffer) => (out += c));
    await check(() => out.includes("running"), 30_000, { name: "the orphan run started" });
    const exited = new Promise((r) => agent.once("exit", r));
    agent.kill("SIGKILL");
    await exited;
    const running = async () =>
      (await docker.listContainers({ filters: { label: [`nodeway.run=${label}`] } })).length > 0;
    t.ok(await running(), "its agent killed, the run's container still runs");
    const runsDirs = () =>
      readdirSync(tmpdir())
        .filter((n) => n.startsWith("nodeway-runs-"))
        .filter((n) => ownerOf(join(tmpdir(), n)).includes(`"pid":${agent.pid},`))
        .map((n) => join(tmpdir(), n));
    const left = runsDirs();
    t.equal(left.length, 1, "and its runs directory is left in the temp folder");
    const swept: string[] = [];
    // What an agent's start does: its docker runner removes orphan runs, then stale runs directories go.
    await DockerRunner.prepare({ image: IMAGE, ...SETTINGS }, (line) => swept.push(line));
    await removeStaleRunsDirs((line) => swept.push(line));
    t.notOk(await running(), "the next agent's start removed it");
    t.notOk(existsSync(left[0]!), "and the killed agent's runs directory");
    t.ok(
      swept.some((l) => l.includes(label) && l.includes(`its agent (pid ${agent.pid}) is gone`)),
      "saying whose run it was",
    );
  },
);
