/**
 * The runner agent: connects to NATS (reconnecting forever), registers in `nw_agents` with its capabilities,
 * heartbeats, pulls jobs from its pools only while it has a free slot, runs them, and drains on SIGTERM.
 */
import { createHash, randomBytes } from "node:crypto";
import { createInbox, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, jetstream, type Consumer, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import {
  KV_AGENTS,
  KV_NODES,
  OBJ_ASSETS,
  STREAM_JOBS,
  STREAM_EVENTS,
  EVENTS_DEFAULTS,
  jobEventBudget,
  agentKey,
  decodeAgentControl,
  decodeJobCancel,
  decodeJobDispatch,
  jobIdOfCancelSubject,
  poolConsumer,
  subjects,
  type AgentRegistration,
  type AgentState,
  type AgentModel,
  type LlmProvider,
  JOB_QUEUE_DEFAULTS,
  InvalidConfigError,
} from "../protocol/index.js";
import { AckedKv, AckedPublisher, EventPublisher, Outbox, RecordClient, connectAgent } from "../nats/index.js";
import { nodeCatalogKey, type Graph, type NodeMetadata } from "../protocol/index.js";
import { createLogger, type Logger } from "../obs/index.js";
import { compileAgentConfig, type AgentConfig, type AgentOptions } from "./config.js";
import { detectDocker, detectFfmpeg, detectGpus, detectProviders, runGpuIds } from "./capabilities.js";
import { GpuGroups } from "./gpus.js";
import { RunnerSpares, removeStaleRunsDirs, type DockerRunner } from "./runners/index.js";
import { ComfyClient, classesCatalog, comfyNodes, compileComfyGroups, type ComfyClass } from "./integrations/index.js";
import { GatewayAssets } from "./asset-io.js";
import { JobRunner, QueueClock } from "./job-runner.js";
import { metadataOf, type NodeDef } from "./engine/types.js";
import { nodeCatalog, nodeLibrary } from "./nodes/index.js";

export const AGENT_VERSION = "0.1.0";

export interface RunningAgent {
  readonly id: string;
  readonly config: Readonly<AgentConfig>;
  /** Stop pulling, let running jobs finish within the grace period, hand back the rest, deregister. */
  stop(opts?: { graceful?: boolean }): Promise<void>;
  /** Resolves when the agent has stopped. */
  readonly closed: Promise<void>;
}

/** How often the agent asks its providers which models they offer. */
const MODELS_REFRESH_MS = 60_000;
/** How long an idle ↔ busy change waits before it is written (see `stateChanged`). */
const STATE_BEAT_DELAY_MS = 250;
/** How long a pull waits for a job when every pool has one open (each costs the server one request per expiry). */
const IDLE_PULL_MS = 5_000;
/**
 * How long it waits while another pool's loop has no slot (more pools than slots): the slots rotate at this pace,
 * so a job in a pool without an open pull waits up to this long per pool ahead of it. nats.js's least.
 */
const STARVED_PULL_MS = 1_000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Binds to a bucket the gateway created (throws while it does not exist yet). `Kvm.open` binds without reading the
 * bucket's settings, so its reads would take the JetStream API (`STREAM.MSG.GET`) even where the stream allows
 * direct gets, which every server answers without the API's queue: one such read is on every claim's path.
 */
async function openBucket(kvm: Kvm, name: string): Promise<KV> {
  const status = await (await kvm.open(name)).status();
  return status.streamInfo.config.allow_direct === true ? kvm.open(name, { allow_direct: true }) : kvm.open(name);
}

/** What the agent found on its host at start-up, and the pools it consumes from. */
interface Capabilities {
  gpus: AgentRegistration["capabilities"]["gpus"];
  /** The GPUs `gpu`-pool runs are given. */
  runGpus: readonly string[];
  docker: boolean;
  providers: LlmProvider[];
  ffmpeg: { version: string | null } | null;
  pools: string[];
}

class Agent implements RunningAgent {
  readonly id: string;
  private nc!: NatsConnection;
  private pub!: AckedPublisher;
  /** Events NATS has not acknowledged yet, republished in order (nats/outbox.ts). */
  private outbox!: Outbox;
  /** The jobs' events, through `outbox`. */
  private publisher!: EventPublisher;
  private agentsKv!: KV;
  /** `nw_agents` with the registration's writes through `pub`. */
  private registrations!: AckedKv;
  /** Whether `nw_assets` exists (the gateway made it), for binary outputs too large to travel in events. */
  private assetsOpen = false;
  /** Its jobs' records, through the gateways (agents have no access to `nw_jobs`; gateway/agent-records.ts). */
  private records!: RecordClient;
  /**
   * Who this agent is to NATS and the gateways: its NATS user where it has one (the account config lets that user
   * publish events and record requests only under this token), else its own id.
   */
  readonly principal: string;
  private readonly running = new Map<string, JobRunner>();
  private state: AgentState = "starting";
  private stopping = false;
  private paused = false;
  private heartbeat: NodeJS.Timeout | null = null;
  /** The registration write of an idle ↔ busy change, once it has waited `STATE_BEAT_DELAY_MS`. */
  private stateBeat: NodeJS.Timeout | null = null;
  private modelsTimer: NodeJS.Timeout | null = null;
  /** Models each configured provider listed at its last answer (kept while a later listing fails). */
  private readonly models = new Map<LlmProvider, AgentModel[]>();
  private registration!: AgentRegistration;
  private readonly library: ReadonlyMap<string, NodeDef>;
  /** The node definitions this agent offers: the built-in library, and `comfy.*` beside a ComfyUI. */
  private readonly offered: readonly NodeDef[];
  /** The ComfyUI beside this agent (`comfyuiUrl`), or null. */
  private readonly comfy: ComfyClient | null;
  /** ComfyUI's node classes in the catalog, by the node type each is offered as. */
  private comfyOffered = new Map<string, ComfyClass>();
  private kvm: Kvm | null = null;
  private slotWaiters: { ticket: number; wake: () => void }[] = [];
  private waitTickets = 0;
  /** The slots each pool's jobs take: `poolSlots`' own budgets, else the shared `maxJobs` (set at start). */
  private readonly slotsByPool = new Map<string, Slots>();
  private closeResolve!: () => void;
  readonly closed: Promise<void> = new Promise((r) => (this.closeResolve = r));
  private ackWaitMs: number = JOB_QUEUE_DEFAULTS.ackWaitMs;
  private maxAttempts: number = JOB_QUEUE_DEFAULTS.maxAttempts;
  /** Events one attempt may publish (`jobEventBudget` of NW_EVENTS's per-job cap). */
  private eventBudget: number = jobEventBudget(EVENTS_DEFAULTS.maxEventsPerJob);
  private disconnectedAt: number | null = null;
  private docker: DockerRunner | null = null;
  private spares: RunnerSpares | null = null;
  /** The GPUs `gpu`-pool runs are given (`gpus`, else every GPU detected), `gpusPerRun` at a time. */
  private gpuGroups = new GpuGroups([], 0);
  /** Pools whose nodes this agent runs itself: what it serves and what it has; other pools get child jobs. */
  private ablePools: ReadonlySet<string> = new Set();
  /** GPU groups promised to pulls in flight, as `reserved` is for slots. */
  private gpuReserved = 0;
  private readonly queueClock = new QueueClock((behindMs) =>
    this.log(
      `this host's clock runs at least ${Math.round(behindMs)} ms behind the NATS server's; queue ages are corrected for it (keep clocks in sync with NTP)`,
    ),
  );

  /** Every line carries the agent's name; a line about a job carries its id too. */
  private readonly logger: Logger;

  constructor(readonly config: Readonly<AgentConfig>) {
    this.id = `${config.name.replace(/[^\w-]/g, "-").slice(0, 40)}-${randomBytes(4).toString("hex")}`;
    const auth = config.nats.auth;
    this.principal = auth.kind === "password" ? auth.user : this.id;
    this.logger = createLogger("agent", { agent: config.name });
    this.comfy = config.comfyuiUrl ? new ComfyClient(config.comfyuiUrl, (l) => this.log(l)) : null;
    const extra = this.comfy ? comfyNodes(this.comfy) : [];
    // The test nodes (one spins its thread, one fills its heap) only where the operator asked for them.
    this.offered = [...nodeLibrary(config.testNodes), ...extra];
    const library = new Map(nodeCatalog(nodeLibrary(config.testNodes)));
    for (const d of extra) library.set(d.type, d);
    this.library = library;
  }

  private log(line: string): void {
    this.logger.info(line);
  }

  async start(): Promise<void> {
    await this.prepareRunners();
    await this.comfy?.start();
    await this.connectNats();
    const kvm = new Kvm(this.nc);
    const jsm = await jetstreamManager(this.nc);
    await this.openBuckets(kvm, jsm);
    await this.openOutbox(jsm);
    const found = await this.findCapabilities();
    this.kvm = kvm;
    const catalog = await this.publishCatalog(kvm);
    if (this.comfy) this.comfy.onClasses = () => void this.republishCatalog();
    // A pool without a consumer yet gets one from a gateway once the agent registers with it: registered early then.
    let registered = false;
    const register = async () => {
      if (!registered) await this.register(found, catalog);
      registered = true;
    };
    const consumers = await this.bindConsumers(jsm, found.pools, register);
    await register();
    this.subscribeControl();
    this.subscribeCancels();
    // Each loop ends by itself once `stopping` is set (at the latest when its pending pull expires).
    this.budgetSlots(found.pools);
    consumers.forEach((c, i) => void this.pullLoop(c, found.pools[i]!));
    const own = Object.entries(this.config.poolSlots).filter(([p]) => found.pools.includes(p));
    const ownText = own.length > 0 ? ` (and ${own.map(([p, n]) => `${n} for ${p}`).join(", ")})` : "";
    this.log(
      `registered as ${this.id}, pools ${found.pools.join(",")}, max ${this.config.maxJobs} jobs${ownText}, ${catalog.count} node types`,
    );
  }

  /** The docker runner (checked now) and the spare threads and processes, as the config asks. */
  private async prepareRunners(): Promise<void> {
    const c = this.config;
    await removeStaleRunsDirs((l) => this.log(l));
    // Offering docker and failing every job that asks for it would be worse than not starting.
    if (c.strategies.includes("docker")) {
      // Loaded only here: the engine client and its dependencies are megabytes an agent without docker never needs.
      const { DockerRunner } = await import("./runners/docker.js");
      const settings = {
        image: c.dockerImage,
        network: c.dockerNetwork,
        memoryMb: c.jobMemoryMb,
        cpus: c.jobCpus,
        pids: c.jobPids,
      };
      this.docker = await DockerRunner.prepare(settings, (l) => this.log(l));
    }
    const warmKinds = c.strategies.filter(
      (k): k is "threaded" | "subprocess" => k === "threaded" || k === "subprocess",
    );
    if (c.warmRunners > 0 && warmKinds.length > 0) {
      this.spares = new RunnerSpares(warmKinds, c.warmRunners, c.jobMemoryMb, c.warmRunners + c.maxJobs);
    }
  }

  /** Connects (reconnecting forever), watches the link, and makes the acked publisher. */
  private async connectNats(): Promise<void> {
    this.log(`connecting to NATS at ${this.config.nats.shown}`);
    const inbox = subjects.agentInbox(this.principal);
    this.nc = await connectAgent(this.config.nats, this.id, (l) => this.log(l), inbox);
    void this.watchLink();
    this.pub = new AckedPublisher(this.nc, createInbox(inbox));
    this.records = new RecordClient(this.nc, this.principal);
  }

  /** Notes when the link went down (running jobs judge their lease by it) and logs each change. */
  private async watchLink(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === "disconnect") this.disconnectedAt ??= Date.now();
      else if (s.type === "reconnect") {
        this.disconnectedAt = null;
        // A cancel sent while the link was down reached no one: each running job reads its record now.
        for (const runner of this.running.values()) runner.recheck();
      }
      if (s.type === "disconnect" || s.type === "reconnect") this.log(`nats ${s.type}`);
    }
  }

  /** The gateway creates the streams and buckets; wait for them (up to a minute) rather than race it. */
  private async openBuckets(kvm: Kvm, jsm: JetStreamManager): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await jsm.streams.info(STREAM_JOBS);
        const agentsKv = await openBucket(kvm, KV_AGENTS);
        this.agentsKv = agentsKv;
        this.registrations = new AckedKv(this.pub, KV_AGENTS, (key) => agentsKv.get(key));
        // Opened by the gateway; this agent reaches it only through the gateways (agent/asset-io.ts).
        await jsm.streams.info(subjects.objectStream(OBJ_ASSETS));
        this.assetsOpen = true;
        // The stream's per-job cap, less the gateway's room; a user without STREAM.INFO rights assumes the default.
        const perJob = await jsm.streams.info(STREAM_EVENTS).then(
          (i) => i.config.max_msgs_per_subject ?? 0,
          () => EVENTS_DEFAULTS.maxEventsPerJob,
        );
        this.eventBudget = jobEventBudget(perJob);
        return;
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`NATS has no Nodeway streams (is a gateway running?): ${(err as Error).message}`);
        await sleep(250);
      }
    }
  }

  private async openOutbox(jsm: JetStreamManager): Promise<void> {
    // A republished event is deduplicated only within the stream's window: the outbox gives up before it closes.
    const dupMs = await jsm.streams.info(STREAM_EVENTS).then(
      (i) => Math.floor(Number(i.config.duplicate_window ?? 0) / 1e6),
      () => 0,
    );
    const maxAgeMs = dupMs > 0 ? Math.min(this.config.outboxMaxAgeMs, dupMs) : this.config.outboxMaxAgeMs;
    this.outbox = new Outbox(this.nc, this.pub, { maxBytes: this.config.outboxMaxBytes, maxAgeMs });
    this.publisher = new EventPublisher(this.nc, this.pub, this.outbox, this.principal);
  }

  /** GPUs, docker and providers found on this host, the pools they give, and the GPU groups of `gpu` runs. */
  private async findCapabilities(): Promise<Capabilities> {
    const gpus = await detectGpus();
    const runGpus = runGpuIds(this.config.gpus, gpus);
    // An engine the docker strategy already reached is there, however it was found.
    const docker = this.docker !== null || detectDocker();
    const providers = detectProviders();
    const ffmpegFound = await detectFfmpeg();
    const ffmpeg = ffmpegFound ? { version: ffmpegFound.version } : null;
    // A provider's pool is consumed by the agents with its key, so a job calling its models lands where the key is.
    const found = [
      "cpu",
      ...(gpus.length > 0 ? ["gpu"] : []),
      ...(docker ? ["docker"] : []),
      ...(this.comfy ? ["comfyui"] : []),
    ];
    const pools = this.config.pools ?? [...found, ...providers, ...this.config.labels];
    this.ablePools = new Set([...found, ...providers, ...pools]);
    const perRun = this.config.gpusPerRun;
    if (pools.includes("gpu") && perRun > runGpus.length) {
      const have = `${runGpus.length} to give${runGpus.length ? ` (${runGpus.join(", ")})` : ""}`;
      throw new InvalidConfigError("gpusPerRun", `asks for ${perRun} GPUs a run; this agent has ${have}`);
    }
    this.gpuGroups = new GpuGroups(runGpus, perRun);
    if (this.gpuGroups.unused.length > 0)
      this.log(`GPUs ${this.gpuGroups.unused.join(", ")} make no whole group of ${perRun} and are given to no run`);
    return { gpus, runGpus, docker, providers, ffmpeg, pools };
  }

  /**
   * One consumer per pool, made by the gateways (an operator label's once an agent registers with it; agents may
   * not make consumers). The lease (`ack_wait`) and attempts (`max_deliver`) are the consumers'.
   */
  private async bindConsumers(
    jsm: JetStreamManager,
    pools: readonly string[],
    register: () => Promise<void>,
  ): Promise<Consumer[]> {
    const js = jetstream(this.nc);
    const consumers: Consumer[] = [];
    for (const pool of pools) {
      const name = poolConsumer(pool);
      const deadline = Date.now() + 60_000;
      let info = await jsm.consumers.info(STREAM_JOBS, name).catch(() => null);
      if (!info) await register();
      while (!info) {
        if (Date.now() > deadline) throw new Error(`no gateway made the consumer of pool ${pool} (${name}) in 60 s`);
        await sleep(200);
        info = await jsm.consumers.info(STREAM_JOBS, name).catch(() => null);
      }
      this.ackWaitMs = Math.round(Number(info.config.ack_wait ?? 0) / 1e6) || this.ackWaitMs;
      this.maxAttempts = Math.max(1, (info.config.max_deliver ?? this.maxAttempts + 1) - 1);
      consumers.push(await js.consumers.get(STREAM_JOBS, name));
    }
    return consumers;
  }

  /** The node catalog: the library's nodes, and the node classes of the ComfyUI beside the agent. */
  private catalogEntries(): NodeMetadata[] {
    const own = this.offered.map(metadataOf);
    const classes = this.comfy?.classes;
    if (!classes) return own;
    const { entries, offered, left } = classesCatalog(classes, (type) => this.library.has(type));
    this.comfyOffered = offered;
    if (left > 0) this.log(`${left} of ComfyUI's ${classes.size} node classes left out of the catalog (its size cap)`);
    return [...own, ...entries];
  }

  /** ComfyUI's classes were read anew: the catalog and the registration name the new ones. */
  private async republishCatalog(): Promise<void> {
    if (!this.kvm || !this.registration || this.nc.isClosed()) return;
    try {
      const catalog = await this.publishCatalog(this.kvm);
      this.registration = {
        ...this.registration,
        node_catalog: catalog.key,
        capabilities: { ...this.registration.capabilities, node_types: catalog.count },
      };
      await this.beat();
    } catch (err) {
      this.logger.warn(`the node catalog could not be published again: ${(err as Error).message}`);
    }
  }

  /** Stores the node catalog in `nw_nodes` under its hash, which the registration names. */
  private async publishCatalog(kvm: Kvm): Promise<{ key: string; count: number }> {
    const catalog = this.catalogEntries();
    const catalogJson = JSON.stringify(catalog);
    const hash = createHash("sha256").update(catalogJson).digest("hex").slice(0, 32);
    const key = nodeCatalogKey(hash, this.principal === this.id ? null : this.principal);
    const nodesKv = await kvm.open(KV_NODES);
    await nodesKv.put(key, catalogJson);
    // The first reading of the queue clock, from the entry's store time (as `beat` does with the registration's
    // later): taken here, the first registration is the last step of starting, and no caller sees it sooner.
    const ackedMs = Date.now();
    const stored = await nodesKv.get(key);
    if (stored) this.queueClock.ageMs(stored.created.getTime(), ackedMs);
    return { key, count: catalog.length };
  }

  /** A graph as this agent runs it: ComfyUI's class nodes compiled into prompts (agent/integrations/comfy-classes.ts). */
  private compileGraph(graph: Graph): Graph {
    const classes = this.comfy?.classes;
    const comfy = classes ? { classes, offered: this.comfyOffered } : null;
    return compileComfyGroups(graph, (type) => this.library.has(type), comfy);
  }

  /** Writes the first registration and starts the heartbeat and the providers' model listings. */
  private async register(found: Capabilities, catalog: { key: string; count: number }): Promise<void> {
    const { gpus, runGpus, docker, providers, ffmpeg, pools } = found;
    const startedAt = new Date().toISOString();
    this.registration = {
      type: "agent.registration",
      v: 1,
      id: this.id,
      name: this.config.name,
      version: AGENT_VERSION,
      labels: this.config.labels,
      pools,
      capabilities: {
        gpus,
        docker,
        providers,
        max_jobs: this.config.maxJobs,
        strategies: this.config.strategies,
        node_types: catalog.count,
        run_gpus: { ids: [...runGpus], per_run: this.config.gpusPerRun },
        warm_runners: this.spares ? this.config.warmRunners : 0,
        ffmpeg,
        ...(this.comfy ? { comfyui: this.comfy.info } : {}),
      },
      state: "idle",
      running_jobs: [],
      node_catalog: catalog.key,
      started_at: startedAt,
      heartbeat_at: startedAt,
    };
    this.state = "idle";
    await this.beat();
    this.heartbeat = setInterval(
      () => void this.beat(true).catch((e: unknown) => this.logger.warn(`heartbeat failed: ${(e as Error).message}`)),
      this.config.heartbeatMs,
    );
    if (providers.length > 0) {
      // After registering: a provider slow to list its models must not hold the agent's start.
      void this.refreshModels(providers);
      this.modelsTimer = setInterval(() => void this.refreshModels(providers), MODELS_REFRESH_MS);
    }
  }

  /** Drain and resume requests from operators (`nodeway agents drain|resume`). */
  private subscribeControl(): void {
    this.nc.subscribe(subjects.agentControl(this.id), {
      callback: (err, m) => {
        if (err) return;
        try {
          const c = decodeAgentControl(m.data);
          if (c.type === "agent.drain") void this.stop({ graceful: true });
          else if (c.type === "agent.resume") this.paused = false;
          if (m.reply)
            m.respond(
              new TextEncoder().encode(
                JSON.stringify({
                  ok: true,
                  id: this.id,
                  state: this.state === "starting" ? this.state : this.currentState(),
                }),
              ),
            );
        } catch {
          /* not ours to answer */
        }
      },
    });
  }

  /**
   * One subscription for every cancel: a job's runner exists from the moment its message is pulled, so a cancel
   * sent right after the claim finds it.
   */
  private subscribeCancels(): void {
    this.nc.subscribe(subjects.cancelAll(), {
      callback: (err, m) => {
        if (err) return;
        const runner = this.running.get(jobIdOfCancelSubject(m.subject));
        if (!runner) return;
        try {
          runner.cancel(decodeJobCancel(m.data));
        } catch {
          /* a malformed cancel is ignored: only the gateway publishes here */
        }
      },
    });
  }

  private currentState(): AgentState {
    if (this.stopping) return "draining";
    return this.running.size > 0 ? "busy" : "idle";
  }

  /**
   * Writes the registration. `readClock` (the periodic beats): read the entry back for the queue
   * clock. The beats on a change of state (idle ↔ busy, which come with jobs) only write: a clock offset moves
   * slowly, and the read-back was a second round trip in an agent's busiest moments.
   */
  private async beat(readClock = false): Promise<void> {
    if (this.nc.isClosed()) return;
    this.state = this.currentState();
    this.registration = {
      ...this.registration,
      state: this.state,
      running_jobs: [...this.running.keys()],
      heartbeat_at: new Date().toISOString(),
    };
    if (this.comfy) this.registration.capabilities = { ...this.registration.capabilities, comfyui: this.comfy.info };
    const key = agentKey(this.id, this.principal);
    await this.registrations.put(key, JSON.stringify(this.registration));
    if (!readClock) return;
    // The entry's store time is the server's clock at a moment before the put was acknowledged: reading it back
    // tells the queue clock how far ours runs behind (see `QueueClock`), before the first dispatch needs it.
    const ackedMs = Date.now();
    const stored = await this.agentsKv.get(key);
    if (stored) this.queueClock.ageMs(stored.created.getTime(), ackedMs);
  }

  /**
   * Asks each provider for its models and publishes the list with the registration when it changed. A provider
   * that does not answer keeps the list it gave last (none before its first answer), and says why in the log.
   */
  private async refreshModels(providers: readonly LlmProvider[]): Promise<void> {
    const { listModels } = await import("./integrations/providers.js");
    let changed = false;
    await Promise.all(
      providers.map(async (p) => {
        try {
          const list = await listModels(p);
          const old = this.models.get(p);
          if (!old || old.length !== list.length || old.some((m, i) => m.id !== list[i]!.id)) changed = true;
          this.models.set(p, list);
        } catch (err) {
          this.logger.warn(`${p} did not list its models: ${(err as Error).message}`);
        }
      }),
    );
    if (!changed || this.stopping || this.nc.isClosed()) return;
    this.registration.capabilities = { ...this.registration.capabilities, models: [...this.models.values()].flat() };
    await this.beat().catch((e: unknown) => this.logger.warn(`heartbeat failed: ${(e as Error).message}`));
  }

  /** Pools named in `poolSlots` get a budget each; the others share one of `maxJobs`. */
  private budgetSlots(pools: readonly string[]): void {
    const shared = pools.filter((p) => !Object.hasOwn(this.config.poolSlots, p));
    const sharedSlots = new Slots(this.config.maxJobs, shared.length);
    for (const p of pools)
      this.slotsByPool.set(
        p,
        Object.hasOwn(this.config.poolSlots, p) ? new Slots(this.config.poolSlots[p]!, 1) : sharedSlots,
      );
  }

  private slotsOf(pool: string): Slots {
    return this.slotsByPool.get(pool)!;
  }

  /**
   * A `comfyui` job pulled by a pull that was already open when ComfyUI stopped answering: held unclaimed (its lease
   * kept with in-progress acks) until ComfyUI answers again, for up to `ackWaitMs`, then handed back. Running it
   * would only fail it; handing it back at once would spend one of its attempts per pull while ComfyUI is away.
   */
  private async holdForComfy(msg: JsMsg, pool: string): Promise<void> {
    const slots = this.slotsOf(pool);
    slots.held++;
    const deadline = Date.now() + this.ackWaitMs;
    const keep = setInterval(() => msg.working(), Math.max(500, Math.floor(this.ackWaitMs / 3)));
    try {
      while (!this.stopping && !this.comfy?.up && Date.now() < deadline) await sleep(200);
    } finally {
      clearInterval(keep);
      slots.held--;
    }
    if (!this.stopping && this.comfy?.up) this.startJob(msg, pool);
    else {
      msg.nak();
      this.wakeSlotWaiters();
    }
  }

  /** GPU groups a `gpu` pull may still ask for (unbounded when every run shares all GPUs). */
  private freeGpuGroups(): number {
    return this.gpuGroups.available - this.gpuReserved;
  }

  /** No slot for `pool` now (for the `gpu` pool, no GPU group either). */
  private blocked(pool: string): boolean {
    return this.slotsOf(pool).free() <= 0 || (pool === "gpu" && this.freeGpuGroups() <= 0);
  }

  /**
   * Waits for a free slot and reserves it for one pull of `pool`; the check and the reservation happen in one turn
   * of the loop, so two loops never take one slot. A loop whose last pull found nothing queues behind the loops
   * already waiting (`yieldToWaiting`): with more pools than slots, the slots rotate among the pools.
   */
  private async reserveForPull(pool: string, yieldToWaiting: boolean): Promise<number> {
    const slots = this.slotsOf(pool);
    const yielding = yieldToWaiting && slots.starvedLoops > 0;
    if (this.blocked(pool) || yielding) {
      slots.starvedLoops++;
      const ticket = ++this.waitTickets;
      // Woken loops that find no slot (a GPU-blocked one) leave it free: look again once they have looked.
      if (yielding) setImmediate(() => this.wakeSlotWaiters());
      try {
        do await new Promise<void>((wake) => this.queueForSlot(ticket, wake));
        while (this.blocked(pool) && !this.stopping);
      } finally {
        slots.starvedLoops--;
      }
    }
    if (this.stopping) return 0;
    const gpuPool = pool === "gpu";
    const want = Math.max(
      1,
      Math.min(Math.floor(slots.free() / slots.loops), gpuPool ? this.freeGpuGroups() : Number.POSITIVE_INFINITY),
    );
    slots.reserved += want;
    if (gpuPool) this.gpuReserved += want;
    return want;
  }

  /** Waiters stay in the order they first waited: one woken and still blocked keeps its place in the line. */
  private queueForSlot(ticket: number, wake: () => void): void {
    const at = this.slotWaiters.findIndex((w) => w.ticket > ticket);
    this.slotWaiters.splice(at < 0 ? this.slotWaiters.length : at, 0, { ticket, wake });
  }

  /** Slots came free (a job ended, a pull gave back its unused reservation): every waiting loop looks again. */
  private wakeSlotWaiters(): void {
    for (const w of this.slotWaiters.splice(0)) w.wake();
  }

  /**
   * Pulls for one pool. Each pull asks for as many jobs as it has reserved slots (shared fairly between the
   * pools' loops), so a busy agent pulls in batches rather than a round trip per job, and the server never
   * holds more open requests for this agent than it has free slots: "pull only while free" stays exact. While a
   * pool's loop waits for a slot, the open pulls expire after `STARVED_PULL_MS` instead of `IDLE_PULL_MS`, so a
   * job in a pool without a pull waits about that long, not a whole idle pull.
   */
  private async pullLoop(consumer: Consumer, pool: string): Promise<void> {
    const slots = this.slotsOf(pool);
    let idle = false;
    while (!this.stopping) {
      const want = await this.reserveForPull(pool, idle);
      if (this.stopping) break;
      const gpuPool = pool === "gpu";
      let got = 0;
      try {
        // A ComfyUI that does not answer runs nothing: its jobs wait queued (for this agent or another).
        if (this.paused || this.nc.isClosed() || (pool === "comfyui" && !this.comfy?.up)) {
          await sleep(200);
          continue;
        }
        const expires = slots.starvedLoops > 0 ? STARVED_PULL_MS : IDLE_PULL_MS;
        const batch = await consumer.fetch({ max_messages: want, expires });
        for await (const msg of batch) {
          got++;
          slots.reserved--;
          if (gpuPool) this.gpuReserved--;
          if (this.stopping) msg.nak();
          else this.startJob(msg, pool);
        }
      } catch (err) {
        if (!this.stopping) {
          this.logger.warn(`pull from ${pool} failed: ${(err as Error).message}`);
          await sleep(500);
        }
      } finally {
        idle = got === 0;
        slots.reserved -= want - got;
        if (gpuPool) this.gpuReserved -= want - got;
        this.wakeSlotWaiters();
      }
    }
  }

  private startJob(msg: JsMsg, pool: string): void {
    if (pool === "comfyui" && !this.comfy?.up && !this.stopping) {
      void this.holdForComfy(msg, pool);
      return;
    }
    let dispatch: ReturnType<typeof decodeJobDispatch>;
    try {
      dispatch = decodeJobDispatch(msg.data);
    } catch (err) {
      this.logger.warn(`dropping malformed job message: ${(err as Error).message}`);
      msg.term(); // no reason: nats-server < 2.10 ignores "+TERM <reason>"
      return;
    }
    // The pull reserved a group for it: one is free.
    const gpus = pool === "gpu" ? this.gpuGroups.take() : [];
    const jobLog = this.logger.child({ job: dispatch.job_id });
    const runner = new JobRunner(
      {
        publisher: this.publisher,
        records: this.records,
        library: this.library,
        compile: (graph) => this.compileGraph(graph),
        runsPool: (pool) => this.ablePools.has(pool),
        nodeLimits: this.config.nodeLimits,
        strategies: this.config.strategies,
        jobMemoryMb: this.config.jobMemoryMb,
        docker: this.docker,
        gpus,
        spares: this.spares,
        assetStore: (jobId, proof) =>
          this.assetsOpen ? new GatewayAssets(this.pub, this.records, jobId, proof) : null,
        assetInlineMaxBytes: this.config.assetInlineMaxBytes,
        jobAssetMaxBytes: this.config.jobAssetMaxBytes,
        agentId: this.id,
        ackWaitMs: this.ackWaitMs,
        maxAttempts: this.maxAttempts,
        eventBudget: this.eventBudget,
        disconnectedSinceMs: () => this.disconnectedAt,
        queueClock: this.queueClock,
        log: (l) => jobLog.info(l),
      },
      msg,
      dispatch,
    );
    this.running.set(dispatch.job_id, runner);
    const slots = this.slotsOf(pool);
    slots.running++;
    void runner
      .run()
      .catch((err: unknown) =>
        jobLog.error(`job ${dispatch.job_id} crashed in the runner: ${(err as Error).stack ?? String(err)}`),
      )
      .finally(() => {
        this.running.delete(dispatch.job_id);
        slots.running--;
        this.gpuGroups.give(gpus);
        this.wakeSlotWaiters();
        if (this.running.size === 0) this.stateChanged();
      });
    if (this.running.size === 1) this.stateChanged();
  }

  /**
   * Idle ↔ busy is written to the registration `STATE_BEAT_DELAY_MS` later, and only if it still holds then: a run of
   * short jobs one after another would otherwise make two KV writes per job, beside its claim and first events.
   */
  private stateChanged(): void {
    if (this.stateBeat) return;
    this.stateBeat = setTimeout(() => {
      this.stateBeat = null;
      if (!this.stopping && this.currentState() !== this.state) void this.beat().catch(() => undefined);
    }, STATE_BEAT_DELAY_MS);
  }

  async stop(opts: { graceful?: boolean } = {}): Promise<void> {
    if (this.stopping) return this.closed;
    this.stopping = true;
    const graceful = opts.graceful ?? true;
    this.log(graceful ? `draining (${this.running.size} running, grace ${this.config.drainGraceMs} ms)` : "stopping");
    this.wakeSlotWaiters();
    await this.beat().catch(() => undefined);
    if (graceful) {
      const deadline = Date.now() + this.config.drainGraceMs;
      while (this.running.size > 0 && Date.now() < deadline) await sleep(50);
    }
    for (const r of this.running.values()) r.handBack();
    const handBackDeadline = Date.now() + 5_000;
    while (this.running.size > 0 && Date.now() < handBackDeadline) await sleep(20);
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.stateBeat) clearTimeout(this.stateBeat);
    if (this.modelsTimer) clearInterval(this.modelsTimer);
    this.spares?.close();
    this.comfy?.stop();
    await this.agentsKv.delete(agentKey(this.id, this.principal)).catch(() => undefined);
    this.outbox?.close();
    await this.nc.drain().catch(() => undefined);
    this.pub.close();
    this.closeResolve();
    return this.closed;
  }
}

/** Starts an agent; throws `InvalidConfigError` for bad options, or when NATS cannot be reached. */
export async function startAgent(options: AgentOptions): Promise<RunningAgent> {
  const agent = new Agent(compileAgentConfig(options));
  await agent.start();
  return agent;
}

/**
 * One budget of job slots: the one the pools share (`maxJobs`) or a pool's own (`poolSlots`). Running, reserved
 * (promised to pulls still open at the server) and held (comfyui jobs waiting for ComfyUI) never exceed `max`.
 */
class Slots {
  running = 0;
  reserved = 0;
  held = 0;
  /** Pull loops waiting for one of these slots: while any waits, pulls are short so the slots rotate. */
  starvedLoops = 0;

  constructor(
    readonly max: number,
    /** Pull loops that share this budget (each pull asks for its share of what is free). */
    readonly loops: number,
  ) {}

  free(): number {
    return this.max - this.running - this.reserved - this.held;
  }
}
