/** The gateway's NATS side: connection, and the streams, buckets and consumers it owns (design §3). */
import { connect, createInbox, credsAuthenticator, headers, nanos, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DiscardPolicy, RetentionPolicy, StorageType, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
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
  AckedKv,
  AckedPublisher,
  natsAuthOptions,
  openNats,
  poolConsumer,
  subjects,
} from "../protocol/index.js";
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
  pub: AckedPublisher<MsgHdrs>;
  /** `nw_jobs` with its record and index writes through `pub` (reads through `jobsKv`). */
  jobRecords: AckedKv<MsgHdrs>;
  /** False from the moment the client notices the server is gone until it has reconnected. */
  connected(): boolean;
}

async function ensureStream(jsm: JetStreamManager, cfg: Parameters<JetStreamManager["streams"]["add"]>[0]): Promise<void> {
  const have = await jsm.streams.info(cfg.name!).catch(() => null);
  if (!have) {
    await jsm.streams.add(cfg);
    return;
  }
  // Keep retention settings in step with the config (max age and caps may change between restarts; the dedupe
  // window follows the age, since the server refuses a window longer than the max age).
  const limits = {
    max_age: cfg.max_age,
    duplicate_window: cfg.duplicate_window,
    ...(cfg.max_bytes !== undefined ? { max_bytes: cfg.max_bytes } : {}),
    ...(cfg.max_msgs_per_subject !== undefined ? { max_msgs_per_subject: cfg.max_msgs_per_subject } : {}),
  };
  if (Object.entries(limits).some(([k, v]) => have.config[k as keyof typeof limits] !== v)) {
    await jsm.streams.update(cfg.name!, { ...have.config, ...limits });
  }
}

/** Connects and makes sure every stream, bucket and pool consumer exists with the configured shape. */
export async function connectNats(config: Readonly<GatewayConfig>, log: (l: string) => void): Promise<NatsParts> {
  log(`connecting to NATS at ${config.nats.shown}`);
  const { creds, ...auth } = natsAuthOptions(config.nats);
  const nc = await openNats(
    connect,
    {
      servers: config.nats.servers,
      ...auth,
      ...(creds ? { authenticator: credsAuthenticator(creds) } : {}),
      name: "nodeway-gateway",
      maxReconnectAttempts: -1,
      // No stack captured per request in case it times out: that was 14% of the gateway's CPU under dispatch load.
      noAsyncTraces: true,
      reconnectTimeWait: 500,
      pingInterval: 3_000,
      maxPingOut: 2,
    },
    config.nats,
    log,
  );
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
  const dup = nanos(JOB_QUEUE_DEFAULTS.duplicateWindowMs);
  await ensureStream(jsm, {
    name: STREAM_JOBS,
    subjects: [subjects.jobsAll()],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: dup,
    max_age: 0,
  });
  await ensureStream(jsm, {
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
  });
  for (const pool of BUILTIN_POOLS) {
    const name = poolConsumer(pool);
    const cfg = {
      durable_name: name,
      name,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(config.ackWaitMs),
      // One delivery past the last attempt lets an agent record "max deliveries reached" (design §4).
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
  const kvm = new Kvm(nc);
  const jobsKv = await kvm.create(KV_JOBS, { history: 1, ttl: config.jobsRetentionMs });
  const workflowsKv = await kvm.create(KV_WORKFLOWS, { history: 1 });
  const threadsKv = await kvm.create(KV_THREADS, { history: 1 });
  const agentsKv = await kvm.create(KV_AGENTS, { history: 1, ttl: AGENT_TTL_MS });
  const nodesKv = await kvm.create(KV_NODES, { history: 1 });
  const assets = await new Objm(nc).create(OBJ_ASSETS, { storage: StorageType.File, ttl: nanos(config.assetsMaxAgeMs) });
  const assetsStream = `OBJ_${OBJ_ASSETS}`;
  const assetsInfo = await jsm.streams.info(assetsStream);
  if (assetsInfo.config.max_age !== nanos(config.assetsMaxAgeMs)) await jsm.streams.update(assetsStream, { ...assetsInfo.config, max_age: nanos(config.assetsMaxAgeMs) });
  const pub = new AckedPublisher<MsgHdrs>(nc, createInbox());
  const jobRecords = new AckedKv<MsgHdrs>(pub, KV_JOBS, headers, (key) => jobsKv.get(key));
  return { nc, js: jetstream(nc), jsm, jobsKv, workflowsKv, threadsKv, agentsKv, nodesKv, assets, pub, jobRecords, connected: () => connected && !nc.isClosed() };
}
