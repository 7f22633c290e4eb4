/**
 * The `docker` strategy against a real Docker engine: a job runs in a container of its own — another
 * host, an unprivileged user, a read-only root, no network, the configured memory, CPU and pid limits, every
 * capability dropped — with its events streamed as for `inline`; cancel stops a node that ignores it by killing
 * its container; a run past its memory fails its job alone; an agent that dies takes its containers with it;
 * and an agent that cannot run containers refuses to start rather than offer what it cannot give.
 */
import t from "tap";
import { DEFAULT_RUNNER_IMAGE } from "../../agent/runners/docker.js";
import { hostname } from "node:os";
import { Readable } from "node:stream";
import Docker from "dockerode";
import tarStream from "tar-stream";
import { compileAgentConfig } from "../../agent/index.js";
import { WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { runNodeway } from "../helpers/procs.js";
import { startStack } from "../helpers/stack.js";
import { allocGraph, runOver, spinGraph, submit, terminal, where, whereGraph } from "../helpers/strategy-jobs.js";

const docker = new Docker();
const RUNNER_IMAGE = DEFAULT_RUNNER_IMAGE;

/** The events of `graph` run to its end with `strategy`. */
const eventsOf = async (ws: WsClient, graph: unknown, strategy: string) =>
  (await runOver(ws, graph, strategy, 60_000)).events;
/** Containers of runs (of one job, with `jobId`), stopped ones too. */
const runners = (jobId?: string) =>
  docker.listContainers({ all: true, filters: { label: [jobId ? `nodeway.run=${jobId}` : "nodeway.role=runner"] } });
const noRunnerOf = (jobId: string) =>
  check(async () => ((await runners(jobId)).length === 0 ? true : null), 20_000, {
    name: `container of ${jobId} gone`,
  });
// A failed test must not leave a spinning container behind for the rest of the suite.
t.teardown(async () => {
  for (const c of await runners().catch(() => []))
    await docker
      .getContainer(c.Id)
      .remove({ force: true })
      .catch(() => undefined);
});

t.test(
  "docker - a job runs in a container: another host, nobody, read-only root, no network; events stream as inline",
  async (t) => {
    // From scratch: the agent makes the runner image from this host's node when the engine has none.
    await docker
      .getImage(RUNNER_IMAGE)
      .remove({ force: true })
      .catch(() => undefined);
    const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "inline,docker", "--max-jobs", "3"] });
    t.match(s.agents[0]!.stderr(), /making the runner image nodeway-runner:node-/, "the agent made the runner image");
    await docker.getImage(RUNNER_IMAGE).inspect();
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const gw = new URL(s.url);
    const probe = { host: "127.0.0.1", port: Number(gw.port) };

    const inline = where(await eventsOf(ws, whereGraph(probe), "inline"));
    t.equal(inline.reached, true, "control: inline, the probe reaches the gateway's port");
    t.equal(inline.host, hostname(), "control: inline runs on this host");

    const events = await eventsOf(ws, whereGraph(probe), "docker");
    t.equal(terminal(events).status, "completed", "the docker job completed");
    const w = where(events);
    t.not(w.host, hostname(), "in a container: a host name of its own");
    t.not(w.pid, s.agents[0]!.proc.pid, "not the agent's process");
    t.equal(w.uid, 65534, "as nobody");
    t.equal(w.root_writable, false, "its root is read-only");
    t.equal(w.reached, false, "no network: the gateway's port on the host's loopback is out of reach");
    t.equal(
      events.find((e) => e.type === "job_update" && e.status === "running")?.strategy,
      "docker",
      "the running update names docker",
    );
    t.same(
      events.filter((e) => e.type === "chunk" && !e.done).map((e) => e.content),
      ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 "],
      "every token streamed, in order",
    );
    t.same((terminal(events).result as { text: string[] }).text, ["tok0 tok1 tok2 tok3 tok4 "], "outputs as inline");
    t.ok(
      events.some((e) => e.type === "node_update") && events.some((e) => e.type === "output_update"),
      "node and output updates arrive too",
    );
    await noRunnerOf(String(events[0]!.job_id));
  },
);

t.test(
  "docker - the container has the configured limits; cancel kills a node that ignores it, and the container goes",
  async (t) => {
    const s = await startStack(t, {
      agents: 1,
      agentArgs: ["--strategies", "docker", "--job-memory-mb", "96", "--job-cpus", "0.5", "--job-pids", "64"],
    });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const jobId = await submit(ws, spinGraph(120), "docker");
    await check(
      () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
      60_000,
      { name: "spin started" },
    );
    const [c] = await runners(jobId);
    t.ok(c, "the job's container is labelled with its id");
    const info = await docker.getContainer(c!.Id).inspect();
    const h = info.HostConfig;
    t.equal(h.Memory, 96 * 1024 * 1024, "memory: jobMemoryMb");
    t.equal(h.MemorySwap, 96 * 1024 * 1024, "and no swap beyond it");
    t.equal(h.NanoCpus, 0.5e9, "CPUs: jobCpus");
    t.equal(h.PidsLimit, 64, "pids: jobPids");
    t.equal(h.ReadonlyRootfs, true, "read-only root");
    t.same(h.CapDrop, ["ALL"], "every capability dropped");
    t.ok(h.SecurityOpt?.includes("no-new-privileges"), "no new privileges");
    t.equal(h.NetworkMode, "none", "no network");
    t.equal(info.Config.User, "65534:65534", "an unprivileged user");
    t.notOk(h.Privileged, "not privileged");
    t.same(h.Devices ?? [], [], "no host devices");
    t.notOk(
      (h.Binds ?? []).some((b) => /docker\.sock|^\/(proc|sys|dev|etc|root|home)[/:]/.test(b)),
      `no engine socket or host system folder mounted: ${(h.Binds ?? []).join(", ")}`,
    );
    t.same(
      (info.Config.Env ?? []).filter((e) => !/^(PATH|NODEWAY_RUNNER_SOCKET)=/.test(e)),
      [],
      "the run's environment holds no key or credential of the agent's",
    );
    t.notOk(
      (h.Binds ?? []).some((b) => /:\/nodeway:|^\/[^:]*:\/nodeway$/.test(b)),
      "the agent's directory is not mounted whole",
    );
    t.ok(
      (h.Binds ?? []).every((b) => b.endsWith(":ro") || b.includes(":/run/nodeway")),
      "its code is mounted read-only",
    );

    const asked = Date.now();
    await ws.request("cancel_job", { job_id: jobId });
    const end = await check(() => terminal(ws.events(jobId)), 30_000, { name: "spin cancelled" });
    t.equal(end.status, "cancelled", "the spinning job ends cancelled");
    t.ok(Date.now() - asked < 20_000, "within the grace period, not after the node's 120 s");
    await noRunnerOf(jobId);
  },
);

t.test("docker - a run past its memory fails its job (JOB_ERR_RUNNER_CRASHED); the next job runs", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "docker", "--job-memory-mb", "64"] });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const big = await eventsOf(ws, allocGraph(256), "docker");
  const end = terminal(big);
  t.equal(end.status, "failed", "the job fails");
  t.equal((end.error as { code: string }).code, "JOB_ERR_RUNNER_CRASHED");
  t.match(
    (end.error as { message: string }).message,
    /container.*memory limit is 64 MiB/,
    "naming the container and its limit",
  );
  const small = await eventsOf(ws, allocGraph(4), "docker");
  t.equal(terminal(small).status, "completed", "a job within the limit completes after it");
});

t.test("docker - an agent killed mid-run takes its container with it", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "docker"] });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const jobId = await submit(ws, spinGraph(300), "docker");
  await check(
    () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
    60_000,
    { name: "spin started" },
  );
  t.equal((await runners(jobId)).length, 1, "the container runs");
  s.agents[0]!.kill("SIGKILL"); // no clean-up runs in the agent
  await noRunnerOf(jobId);
  t.pass("the container ended although its node holds its loop");
});

t.test(
  "docker - an operator's image without node fails each job with what the container said; the agent keeps serving",
  async (t) => {
    // An image of one file: what `docker import` makes of a tar with no node in it.
    const pack = tarStream.pack();
    pack.entry({ name: "README", mode: 0o644 }, "no node here\n");
    pack.finalize();
    const progress = await docker.importImage(Readable.from(pack), { repo: "nodeway-test-nonode", tag: "1" });
    await new Promise<void>((resolve, reject) =>
      docker.modem.followProgress(progress, (err) => (err ? reject(err) : resolve())),
    );
    t.teardown(() =>
      docker
        .getImage("nodeway-test-nonode:1")
        .remove({ force: true })
        .catch(() => undefined),
    );
    const s = await startStack(t, {
      agents: 1,
      agentArgs: ["--strategies", "inline,docker", "--docker-image", "nodeway-test-nonode:1"],
    });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const end = terminal(await eventsOf(ws, spinGraph(0), "docker"))!;
    t.equal(end.status, "failed", "the job fails");
    t.equal((end.error as { code: string }).code, "JOB_ERR_RUNNER_CRASHED");
    t.match(
      (end.error as { message: string }).message,
      /container running the graph ended before it finished \(exit code \d+.*node/,
      "with the exit code and the engine's or runner's words about node",
    );
    t.equal(terminal(await eventsOf(ws, spinGraph(0), "inline"))!.status, "completed", "the agent still runs jobs");
  },
);

t.test(
  "docker - a gpu-pool run asks the engine for the named GPUs and fails saying so where it has none; other pools get no device",
  async (t) => {
    // This engine has no NVIDIA Container Toolkit: a device request is what makes its start fail. nvidia-smi is absent
    // too, so the configured id is taken as it is (with GPUs detected, an unknown one is refused at start-up).
    const s = await startStack(t, {
      agents: 1,
      agentArgs: ["--strategies", "docker", "--pools", "cpu,gpu", "--gpus", "0"],
    });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const gpuJob = await runOver(ws, spinGraph(0), "docker", 60_000, "gpu");
    const end = terminal(gpuJob.events);
    t.equal(end.status, "failed", "the gpu job fails: the engine cannot give it a GPU");
    t.equal((end.error as { code: string }).code, "JOB_ERR_RUNNER_CRASHED");
    const message = (end.error as { message: string }).message;
    t.match(message, /could not start: .*device driver/i, "with the engine's words about the device request");
    t.match(message, /GPUs 0 \(gpus\).*NVIDIA Container Toolkit/, "naming the GPUs and what the engine lacks");
    await noRunnerOf(gpuJob.jobId); // a container created but never started is removed too

    const cpuJob = await submit(ws, spinGraph(120), "docker", "cpu");
    await check(
      () => ws.events(cpuJob).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
      60_000,
      { name: "cpu spin started" },
    );
    const [c] = await runners(cpuJob);
    const h = (await docker.getContainer(c!.Id).inspect()).HostConfig;
    t.same(h.DeviceRequests ?? [], [], "a cpu-pool run has no device request");
    await ws.request("cancel_job", { job_id: cpuJob });
    t.equal(
      (await check(() => terminal(ws.events(cpuJob)), 30_000, { name: "cpu spin cancelled" })).status,
      "cancelled",
    );
    await noRunnerOf(cpuJob);
  },
);

/**
 * A hostile runner image: the runner image with a module node loads before the runner (`NODE_OPTIONS`). It takes
 * the run's channel first and never lets the real runner start; on the agent's `run` frame it sends, for a Spin
 * of 1 second, an event forging the job's completion, and for any other, bytes that are not MessagePack.
 */
const HOSTILE = `import { connect } from "node:net";
import { FrameReader, ROLE_CHANNEL, frame } from "/nodeway/dist/agent/runners/frames.js";
const s = connect(process.env.NODEWAY_RUNNER_SOCKET);
s.on("error", () => {});
await new Promise((r) => s.once("connect", r));
s.write(Buffer.from([ROLE_CHANNEL]));
const reader = new FrameReader();
s.on("data", (chunk) => {
  for (const m of reader.push(chunk)) {
    if (m.type !== "run") continue;
    if (m.graph.nodes[0].data.seconds === 1) s.write(frame({ type: "event", event: { type: "job_update", status: "completed", result: { forged: [true] } } }));
    else s.write(Buffer.from([0, 0, 0, 3, 0xc1, 0xc1, 0xc1]));
  }
});
await new Promise(() => {});
`;

t.test(
  "docker - a container that forges a job event or sends what is not a frame is stopped; its job fails saying so",
  async (t) => {
    await startStack(t, { agents: 1, agentArgs: ["--strategies", "docker"] }); // its agent makes the runner image if missing
    const pack = tarStream.pack();
    pack.entry(
      { name: "Dockerfile" },
      `FROM ${RUNNER_IMAGE}\nCOPY hostile.mjs /hostile.mjs\nENV NODE_OPTIONS=--import=/hostile.mjs\n`,
    );
    pack.entry({ name: "hostile.mjs" }, HOSTILE);
    pack.finalize();
    const built = await docker.buildImage(Readable.from(pack) as unknown as NodeJS.ReadableStream, {
      t: "nodeway-test-hostile:1",
    });
    await new Promise<void>((resolve, reject) =>
      docker.modem.followProgress(built, (err, out) =>
        err
          ? reject(err)
          : out.some((o: { error?: string }) => o.error)
            ? reject(new Error(JSON.stringify(out)))
            : resolve(),
      ),
    );
    t.teardown(() =>
      docker
        .getImage("nodeway-test-hostile:1")
        .remove({ force: true })
        .catch(() => undefined),
    );
    const s = await startStack(t, {
      agents: 1,
      agentArgs: ["--strategies", "inline,docker", "--docker-image", "nodeway-test-hostile:1"],
    });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());

    const forged = await runOver(ws, spinGraph(1), "docker", 60_000);
    const end = terminal(forged.events);
    t.equal(end.status, "failed", "the job fails: the container's completion is not the job's");
    t.equal((end.error as { code: string }).code, "JOB_ERR_RUNNER_CRASHED");
    t.match(
      (end.error as { message: string }).message,
      /container running the graph sent a "job_update" event, which a graph does not emit; it was stopped/,
      "naming what it sent",
    );
    t.equal(
      forged.events.filter((e) => e.type === "job_update" && e.status === "completed").length,
      0,
      "no client saw a forged completion",
    );
    t.notOk(
      forged.events.some((e) => JSON.stringify(e).includes("forged")),
      "nor anything of the forged event",
    );
    await noRunnerOf(forged.jobId);

    const garbage = await runOver(ws, spinGraph(2), "docker", 60_000);
    const gEnd = terminal(garbage.events);
    t.equal(gEnd.status, "failed", "bytes that are not a frame fail the job too");
    t.match((gEnd.error as { message: string }).message, /sent what is not a frame/, "saying so");
    await noRunnerOf(garbage.jobId);
    t.equal(terminal(await eventsOf(ws, spinGraph(0), "inline")).status, "completed", "and the agent serves on");
  },
);

t.test("docker - settings are checked; an agent that cannot run containers does not start", async (t) => {
  t.same(
    compileAgentConfig({ gpus: "0, GPU-5f3c2a1e-77aa-4c3b-9d10-0123456789ab" }).gpus,
    ["0", "GPU-5f3c2a1e-77aa-4c3b-9d10-0123456789ab"],
    "GPU ids from the flag's list",
  );
  t.same(compileAgentConfig({ gpus: "none" }).gpus, [], "none: no GPU for any run");
  t.equal(compileAgentConfig({}).gpus, null, "unset: the GPUs detected");
  t.throws(
    () => compileAgentConfig({ gpus: "all" }),
    /gpus: not a GPU index or UUID: "all"/,
    "never all: devices are named",
  );
  t.throws(() => compileAgentConfig({ gpus: ["0", "1;rm"] }), /gpus: not a GPU index or UUID: "1;rm"/);
  t.throws(
    () => compileAgentConfig({ gpus: "none,0" }),
    /gpus: not a GPU index or UUID: "none"/,
    "none alone or not at all",
  );
  t.throws(() => compileAgentConfig({ gpus: [] }), /gpus: must be `none` or a list/);
  t.throws(() => compileAgentConfig({ jobCpus: 0 }), /jobCpus: must be a number of CPUs > 0/);
  t.throws(() => compileAgentConfig({ jobPids: -3 }), /jobPids: must be a positive integer/);
  t.throws(() => compileAgentConfig({ dockerNetwork: "my net" }), /dockerNetwork: not a network name/);
  t.throws(() => compileAgentConfig({ dockerImage: "bad image" }), /dockerImage: not an image reference/);
  t.equal(compileAgentConfig({ jobCpus: "1.5" as never }).jobCpus, 1.5, "CPUs from the environment's string form");

  const noEngine = runNodeway(["agent", "--nats", "nats://127.0.0.1:1", "--strategies", "docker"], {
    DOCKER_HOST: "unix:///nonexistent/docker.sock",
  });
  await check(() => (noEngine.proc.exitCode !== null ? true : null), 20_000, {
    name: "agent without an engine exited",
  });
  t.not(noEngine.proc.exitCode, 0, "it exits with an error");
  t.match(noEngine.stderr(), /docker strategy needs a Docker engine/, "saying why");

  const noImage = runNodeway([
    "agent",
    "--nats",
    "nats://127.0.0.1:1",
    "--strategies",
    "docker",
    "--docker-image",
    "nodeway-test-absent:1",
  ]);
  await check(() => (noImage.proc.exitCode !== null ? true : null), 20_000, {
    name: "agent with a missing image exited",
  });
  t.not(noImage.proc.exitCode, 0, "a named image that is missing: it exits");
  t.match(noImage.stderr(), /image nodeway-test-absent:1 is not in the engine/, "saying which");
});
