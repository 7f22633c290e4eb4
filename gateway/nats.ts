/** The gateway's NATS side: connection, and the streams, buckets and consumers it owns. */
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import {
  AckPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { Objm, type ObjectStore } from "@nats-io/obj";
import {
  AGENT_TTL_MS,
  BUILTIN_POOLS,
  JOB_QUEUE_DEFAULTS,
  KV_AGENTS,
  KV_JOBS,
  KV_NODES,
  KV_WORKFLOWS,
  KV_THREADS,
  OBJ_ASSETS,
  STREAM_EVENTS,
  STREAM_JOBS,
  InvalidConfigError,
  poolConsumer,
  subjects,
} from "../protocol/index.js";
import {
  AckedKv,
  AckedPublisher,
  EventPublisher,
  connectGateway,
  loadLeaseSigner,
  type LeaseSigner,
} from "../nats/index.js";
import type { GatewayConfig } from "./config.js";

export interface NatsParts {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  jobsKv: KV;
  workflowsKv: KV;
  /** `nw_threads`: chat threads and their messages. */
  threadsKv: KV;
  agentsKv: KV;
  nodesKv: KV;
  /** `nw_assets`: uploaded and produced files. */
  assets: ObjectStore;
  /** Stream publishes (events, dispatches) with their PubAcks on one shared subscription. */
  pub: AckedPublisher;
  /** Job events and dispatches through `pub`: envelope, message id, size check, encoding. */
  events: EventPublisher;
  /** `nw_jobs` with its record and index writes through `pub` (reads through `jobsKv`). */
  jobRecords: AckedKv;
  /** Signs agents' lease tokens and claim secrets (the key all gateways share, nats/lease.ts). */
  leases: LeaseSigner;
  /** False from the moment the client notices the server is gone until it has reconnected. */
  connected(): boolean;
}

/** The replica count NATS is asked for, and where it came from. */
interface Replicas {
  /** Replicas of every stream, bucket and object store. */
  n: number;
  /** Set by the operator (`natsReplicas`): may lower an existing stream's count; the default only raises it. */
  explicit: boolean;
  /** Servers of the cluster as the connection sees them (1 outside a cluster). */
  servers: number;
}

/** Servers of the cluster the connection landed on: 1 outside a cluster, else the client URLs it advertises. */
export function clusterSize(nc: Pick<NatsConnection, "info">): number {
  const info = nc.info;
  if (!info?.cluster) return 1;
  return Math.max(1, new Set(info.connect_urls ?? []).size);
}

function replicasOf(config: Readonly<GatewayConfig>, nc: Pick<NatsConnection, "info">): Replicas {
  const servers = clusterSize(nc);
  if (config.natsReplicas !== null) {
    // A server outside a cluster quietly keeps 1 replica of a stream asked for more: refuse before asking.
    if (config.natsReplicas > 1 && !nc.info?.cluster) {
      throw new InvalidConfigError(
        "natsReplicas",
        `${config.natsReplicas} replicas need a NATS cluster; ${config.nats.shown} runs alone (1 NATS server): set natsReplicas (--nats-replicas) to 1`,
      );
    }
    return { n: config.natsReplicas, explicit: true, servers };
  }
  return { n: Math.min(3, servers), explicit: false, servers };
}

/** The setting behind each stream field a gateway keeps in step (named when NATS refuses a change). */
type Limits = Partial<
  Pick<StreamConfig, "max_age" | "duplicate_window" | "max_bytes" | "max_msgs_per_subject" | "num_replicas">
>;
type LimitSettings = Partial<Record<keyof Limits, string>>;

/** NATS's answer when a stream's `max_bytes` is more than its servers' JetStream storage has left to reserve. */
const NO_STORAGE = /insufficient storage/i;

/**
 * Why NATS refused a stream, naming the setting to change: `bytesKey` (the stream's byte limit) when it had no room
 * for that limit, else `key`.
 */
function refused(
  stream: string,
  what: string,
  err: unknown,
  key: string,
  replicas: Replicas,
  bytesKey?: string,
): InvalidConfigError {
  const message = `NATS refused ${what} of stream ${stream}: ${(err as Error).message}`;
  if (bytesKey !== undefined && NO_STORAGE.test((err as Error).message))
    return new InvalidConfigError(
      bytesKey,
      `${message}; its byte limit reserves that much of the NATS servers' JetStream storage (by default 75% of ` +
        `the disk free when nats-server started, else its max_file_store): set ${bytesKey} lower or give NATS more`,
    );
  const hint =
    key === "natsReplicas"
      ? `; this gateway sees ${replicas.servers} NATS server(s): set natsReplicas (--nats-replicas) to at most that`
      : "";
  return new InvalidConfigError(key, `${message}${hint}`);
}

/**
 * Brings an existing stream's limits and replica count in step with the config; throws `InvalidConfigError`
 * naming the setting when NATS refuses (more replicas than servers, a count a standalone server cannot hold).
 */
async function alignStream(
  jsm: JetStreamManager,
  have: StreamInfo,
  limits: Limits,
  replicas: Replicas,
  settings: LimitSettings,
): Promise<void> {
  const want: Limits = {
    ...limits,
    num_replicas: replicas.explicit ? replicas.n : Math.max(replicas.n, have.config.num_replicas),
  };
  // The server refuses a dedupe window longer than the max age: a shorter age shortens it.
  if (want.max_age && want.duplicate_window === undefined && have.config.duplicate_window > want.max_age)
    want.duplicate_window = want.max_age;
  const changed = (Object.keys(want) as (keyof Limits)[]).filter((k) => have.config[k] !== want[k]);
  if (changed.length === 0) return;
  const name = have.config.name;
  const what = changed.map((k) => `${k} ${have.config[k]} -> ${want[k]}`).join(", ");
  const key = changed.includes("num_replicas") ? "natsReplicas" : (settings[changed[0]!] ?? "natsReplicas");
  const current = await withLeader(jsm, have);
  const now = await jsm.streams.update(name, { ...current.config, ...want }).catch(async (err: unknown) => {
    // A change the cluster applied goes unanswered while the stream elects its leader: read it back.
    const after = await withLeader(jsm, current).catch(() => null);
    if (after && changed.every((k) => after.config[k] === want[k])) return after;
    throw refused(name, `the change (${what})`, err, key, replicas, settings.max_bytes);
  });
  if (now.config.num_replicas !== want.num_replicas) {
    throw refused(
      name,
      `the change (${what})`,
      new Error(`it kept ${now.config.num_replicas} replica(s)`),
      "natsReplicas",
      replicas,
    );
  }
}

/** The stream's info once its Raft group has a leader (right after a change of replicas it may have none). */
async function withLeader(jsm: JetStreamManager, have: StreamInfo): Promise<StreamInfo> {
  const deadline = Date.now() + 30_000;
  let info = have;
  while (info.cluster && !info.cluster.leader && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    info = await jsm.streams.info(have.config.name);
  }
  return info;
}

async function ensureStream(
  jsm: JetStreamManager,
  cfg: Partial<StreamConfig> & { name: string },
  replicas: Replicas,
  settings: LimitSettings,
): Promise<void> {
  const have = await jsm.streams.info(cfg.name).catch(() => null);
  if (!have) {
    await jsm.streams.add({ ...cfg, num_replicas: replicas.n }).catch((err: unknown) => {
      throw refused(
        cfg.name,
        `${replicas.n} replica(s) at creation`,
        err,
        "natsReplicas",
        replicas,
        settings.max_bytes,
      );
    });
    return;
  }
  // Retention settings may change between restarts (max age and caps); the dedupe window follows the age.
  const limits: Limits = {
    max_age: cfg.max_age,
    duplicate_window: cfg.duplicate_window,
    ...(cfg.max_bytes !== undefined ? { max_bytes: cfg.max_bytes } : {}),
    ...(cfg.max_msgs_per_subject !== undefined ? { max_msgs_per_subject: cfg.max_msgs_per_subject } : {}),
  };
  await alignStream(jsm, have, limits, replicas, settings);
}

/** A KV bucket with the given replicas and TTL, created or brought in step (`Kvm.create` leaves one as it is). */
async function ensureBucket(
  kvm: Kvm,
  jsm: JetStreamManager,
  name: string,
  replicas: Replicas,
  ttlMs = 0,
  ttlSetting?: string,
): Promise<KV> {
  const kv = await kvm
    .create(name, { history: 1, replicas: replicas.n, ...(ttlMs ? { ttl: ttlMs } : {}) })
    .catch((err: unknown) => {
      throw refused(`KV_${name}`, `${replicas.n} replica(s) at creation`, err, "natsReplicas", replicas);
    });
  const have = await jsm.streams.info(`KV_${name}`);
  await alignStream(
    jsm,
    have,
    ttlMs ? { max_age: nanos(ttlMs) } : {},
    replicas,
    ttlSetting ? { max_age: ttlSetting } : {},
  );
  return kv;
}

/** Connects and makes sure every stream, bucket and pool consumer exists with the configured shape. */
export async function connectNats(config: Readonly<GatewayConfig>, log: (l: string) => void): Promise<NatsParts> {
  log(`connecting to NATS at ${config.nats.shown}`);
  const nc = await connectGateway(config.nats, log);
  // Health answers from this at once: asking JetStream during an outage only times out (~10 s).
  let connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") connected = false;
      else if (s.type === "reconnect") connected = true;
      if (s.type === "disconnect" || s.type === "reconnect") log(`nats ${s.type}`);
    }
  })();
  const jsm = await jetstreamManager(nc);
  try {
    const state = await ensureState(nc, config, log);
    const pub = new AckedPublisher(nc);
    const jobRecords = new AckedKv(pub, KV_JOBS, (key) => state.jobsKv.get(key));
    const events = new EventPublisher(nc, pub);
    const leases = await loadLeaseSigner(state.jobsKv);
    return {
      nc,
      js: jetstream(nc),
      jsm,
      ...state,
      pub,
      events,
      jobRecords,
      leases,
      connected: () => connected && !nc.isClosed(),
    };
  } catch (err) {
    // A gateway that cannot set up its streams does not start: nothing of it stays connected.
    await nc.close().catch(() => undefined);
    throw err;
  }
}

/** The built-in pools' consumers on NW_JOBS, with the configured ack wait and attempts. */
async function ensurePoolConsumers(jsm: JetStreamManager, config: Readonly<GatewayConfig>): Promise<void> {
  for (const pool of BUILTIN_POOLS) {
    const name = poolConsumer(pool);
    const cfg = {
      durable_name: name,
      name,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(config.ackWaitMs),
      // One delivery past the last attempt lets an agent record "max deliveries reached".
      max_deliver: config.maxAttempts + 1,
      filter_subject: subjects.jobs(pool),
      max_ack_pending: 10_000,
    };
    const have = await jsm.consumers.info(STREAM_JOBS, name).catch(() => null);
    if (!have) await jsm.consumers.add(STREAM_JOBS, cfg);
    else if (have.config.ack_wait !== cfg.ack_wait || have.config.max_deliver !== cfg.max_deliver) {
      await jsm.consumers.update(STREAM_JOBS, name, { ack_wait: cfg.ack_wait, max_deliver: cfg.max_deliver });
    }
  }
}

type State = Pick<NatsParts, "jobsKv" | "workflowsKv" | "threadsKv" | "agentsKv" | "nodesKv" | "assets">;

/** Makes every stream, bucket, pool consumer and the object store, or brings the existing ones in step. */
async function ensureState(
  nc: NatsConnection,
  config: Readonly<GatewayConfig>,
  log: (l: string) => void,
): Promise<State> {
  // Changing a stream's replica count waits on its new peers: longer than a request's usual 5 s on a busy host.
  const jsm = await jetstreamManager(nc, { timeout: 30_000 });
  const replicas = replicasOf(config, nc);
  const by = replicas.explicit ? " (natsReplicas)" : "";
  log(
    `NATS: ${replicas.servers} server(s) seen; streams, buckets and the object store keep ${replicas.n} replica(s)${by}`,
  );
  const dup = nanos(JOB_QUEUE_DEFAULTS.duplicateWindowMs);
  await ensureStream(
    jsm,
    {
      name: STREAM_JOBS,
      subjects: [subjects.jobsAll()],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: dup,
      max_age: 0,
    },
    replicas,
    {},
  );
  await ensureStream(
    jsm,
    {
      name: STREAM_EVENTS,
      subjects: [subjects.eventsAll()],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      // nats-server rejects a duplicate window longer than the max age: a short retention shortens it.
      duplicate_window: nanos(Math.min(JOB_QUEUE_DEFAULTS.duplicateWindowMs, config.eventsMaxAgeMs)),
      max_age: nanos(config.eventsMaxAgeMs),
      // Bounded whatever clients and agents send: past the bytes the oldest events go; a job's agent ends it
      // (JOB_ERR_TOO_MANY_EVENTS, protocol/streams.ts `jobEventBudget`) before its own cap would drop any.
      max_bytes: config.eventsMaxBytes,
      max_msgs_per_subject: config.eventsMaxPerJob,
      discard: DiscardPolicy.Old,
    },
    replicas,
    {
      max_age: "eventsMaxAgeMs",
      duplicate_window: "eventsMaxAgeMs",
      max_bytes: "eventsMaxBytes",
      max_msgs_per_subject: "eventsMaxPerJob",
    },
  );
  await ensurePoolConsumers(jsm, config);
  const kvm = new Kvm(nc);
  const jobsKv = await ensureBucket(kvm, jsm, KV_JOBS, replicas, config.jobsRetentionMs, "jobsRetentionMs");
  const workflowsKv = await ensureBucket(kvm, jsm, KV_WORKFLOWS, replicas);
  const threadsKv = await ensureBucket(kvm, jsm, KV_THREADS, replicas);
  const agentsKv = await ensureBucket(kvm, jsm, KV_AGENTS, replicas, AGENT_TTL_MS);
  const nodesKv = await ensureBucket(kvm, jsm, KV_NODES, replicas);
  const assetsTtl = nanos(config.assetsMaxAgeMs);
  const assetLimits = { ttl: assetsTtl, max_bytes: config.assetsMaxBytes };
  const assets = await new Objm(nc)
    .create(OBJ_ASSETS, { storage: StorageType.File, ...assetLimits, replicas: replicas.n })
    .catch((err: unknown) => {
      throw refused(
        `OBJ_${OBJ_ASSETS}`,
        `${replicas.n} replica(s) at creation`,
        err,
        "natsReplicas",
        replicas,
        "assetsMaxBytes",
      );
    });
  const assetsInfo = await jsm.streams.info(`OBJ_${OBJ_ASSETS}`);
  await alignStream(jsm, assetsInfo, { max_age: assetsTtl, max_bytes: config.assetsMaxBytes }, replicas, {
    max_age: "assetsMaxAgeMs",
    max_bytes: "assetsMaxBytes",
  });
  return { jobsKv, workflowsKv, threadsKv, agentsKv, nodesKv, assets };
}
