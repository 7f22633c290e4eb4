/**
 * Replicated state: every stream, bucket and the object store the gateway makes keeps `natsReplicas` replicas
 * (by default the cluster's server count, at most 3), existing ones are brought to it, and a count NATS refuses
 * stops start-up naming the setting. `jobsRetentionMs` reaches an existing nw_jobs bucket too.
 */
import t from "tap";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, nanos } from "@nats-io/transport-node";
import { compileGatewayConfig, type GatewayOptions } from "../../gateway/index.js";
import { connectNats } from "../../gateway/nats.js";
import { InvalidConfigError } from "../../protocol/index.js";
import { NatsCluster, NatsServer } from "../helpers/nats-server.js";
import { startGateway } from "./lib.js";

const STREAMS = [
  "NW_JOBS",
  "NW_EVENTS",
  "KV_nw_jobs",
  "KV_nw_workflows",
  "KV_nw_threads",
  "KV_nw_agents",
  "KV_nw_nodes",
  "OBJ_nw_assets",
];

/** Connects as a gateway would at start-up (streams made or brought in step), then lets go. */
async function gatewayStart(natsUrl: string, opts: Omit<GatewayOptions, "natsUrl"> = {}): Promise<void> {
  const parts = await connectNats(compileGatewayConfig({ natsUrl, ...opts }), () => undefined);
  await parts.nc.close();
}

/** Each stream's replica count and config, read back from the server. */
async function readBack(
  natsUrl: string,
): Promise<Map<string, { replicas: number; maxAge: number; dupWindow: number }>> {
  const nc = await connect({ servers: natsUrl.split(",") });
  try {
    const jsm = await jetstreamManager(nc);
    const out = new Map<string, { replicas: number; maxAge: number; dupWindow: number }>();
    for (const s of STREAMS) {
      const c = (await jsm.streams.info(s)).config;
      out.set(s, { replicas: c.num_replicas, maxAge: c.max_age, dupWindow: c.duplicate_window });
    }
    return out;
  } finally {
    await nc.close();
  }
}

const replicasOf = async (url: string) => [...(await readBack(url)).entries()].map(([s, v]) => `${s} R${v.replicas}`);
const all = (n: number) => STREAMS.map((s) => `${s} R${n}`);

t.test("cluster config - one server: 1 replica; natsReplicas 3 stops start-up, saying why", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  await gatewayStart(ns.url);
  t.same(await replicasOf(ns.url), all(1), "every stream, bucket and the object store has 1 replica");
  const err = await gatewayStart(ns.url, { natsReplicas: 3 }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof InvalidConfigError, "start-up fails with a config error");
  t.match(
    (err as Error).message,
    /natsReplicas.*need a NATS cluster.*runs alone/s,
    `it names the setting and why: ${(err as Error).message}`,
  );
  t.same(await replicasOf(ns.url), all(1), "nothing changed");
});

t.test(
  "cluster config - jobsRetentionMs reaches an existing nw_jobs bucket (longer, and shorter than its dedupe window)",
  async (t) => {
    const ns = await NatsServer.start();
    t.teardown(() => ns.stop());
    await gatewayStart(ns.url, { jobsRetentionMs: 3_600_000 });
    t.equal((await readBack(ns.url)).get("KV_nw_jobs")!.maxAge, nanos(3_600_000), "created with 1 h");
    await gatewayStart(ns.url, { jobsRetentionMs: 7_200_000 });
    t.equal(
      (await readBack(ns.url)).get("KV_nw_jobs")!.maxAge,
      nanos(7_200_000),
      "a restart with 2 h changes the bucket's TTL",
    );
    await gatewayStart(ns.url, { jobsRetentionMs: 60_000 });
    const short = (await readBack(ns.url)).get("KV_nw_jobs")!;
    t.equal(short.maxAge, nanos(60_000), "a restart with 1 min shortens it");
    t.ok(short.dupWindow <= short.maxAge, "its dedupe window follows (NATS refuses one longer than the TTL)");
  },
);

t.test(
  "cluster config - 3 servers: 3 replicas by default; natsReplicas lowers and raises existing streams",
  async (t) => {
    const cluster = await NatsCluster.start();
    t.teardown(() => cluster.stop());
    await gatewayStart(cluster.url);
    t.same(await replicasOf(cluster.url), all(3), "the default follows the cluster: 3 replicas everywhere");
    // Through the command line, as an operator sets it.
    const gw = await startGateway(t, cluster.url, ["--nats-replicas", "1"]);
    await gw.kill("SIGTERM");
    t.same(
      await replicasOf(cluster.url),
      all(1),
      "`nodeway gateway --nats-replicas 1` brings every existing stream to 1",
    );
    await gatewayStart(cluster.url, { natsReplicas: 2 });
    t.same(await replicasOf(cluster.url), all(2), "natsReplicas 2 raises them to 2");
    await gatewayStart(cluster.url);
    t.same(await replicasOf(cluster.url), all(3), "the default raises them back to the cluster's 3");
    const err = await gatewayStart(cluster.url, { natsReplicas: 5 }).then(
      () => null,
      (e: unknown) => e,
    );
    t.match(
      (err as Error | null)?.message ?? "",
      /natsReplicas.*refused.*3 NATS server/s,
      `5 replicas on 3 servers stops start-up: ${(err as Error | null)?.message}`,
    );
    t.same(await replicasOf(cluster.url), all(3), "and changes nothing");
  },
);
