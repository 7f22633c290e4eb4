/**
 * The asset store is bounded (`assetsMaxBytes`): past it an upload is refused with 507 GW_ERR_STORE_FULL and the
 * gateway goes on serving; what is stored stays whole. Before, the bucket had a TTL only: uploads and job outputs
 * could fill the disk JetStream keeps every job's events and records on. A store made before the bound gets it.
 */
import t from "tap";
import { startGateway } from "../../gateway/index.js";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { OBJ_ASSETS } from "../../protocol/index.js";
import { NatsServer } from "../helpers/nats-server.js";

const MiB = 1024 * 1024;

async function upload(url: string, bytes: number, fill: number) {
  const r = await fetch(`${url}/api/assets?name=blob-${fill}.bin`, {
    method: "POST",
    headers: { "content-type": "application/octet-stream" },
    body: new Uint8Array(bytes).fill(fill),
  });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

t.test("assets store full - past assetsMaxBytes uploads get 507, the rest stays whole and served", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const first = await startGateway({ natsUrl: ns.url, port: 0 });
  await first.stop();
  const gw = await startGateway({ natsUrl: ns.url, port: 0, assetsMaxBytes: 3 * MiB });
  t.teardown(() => gw.stop());
  const nc = await connect({ servers: ns.url });
  t.teardown(() => nc.close());
  const info = await (await jetstreamManager(nc)).streams.info(`OBJ_${OBJ_ASSETS}`);
  t.equal(info.config.max_bytes, 3 * MiB, "the store made without a bound got it");

  const kept = await upload(gw.url, 2 * MiB, 1);
  t.equal(kept.status, 201, `an upload under the bound is stored (${JSON.stringify(kept.body)})`);
  const refused = await upload(gw.url, 2 * MiB, 2);
  t.equal(refused.status, 507, "one past it: 507");
  t.match(refused.body, { code: "GW_ERR_STORE_FULL", message: /asset store is full \(assetsMaxBytes\)/ });
  const back = Buffer.from(await (await fetch(`${gw.url}/api/assets/${String(kept.body.id)}/content`)).arrayBuffer());
  t.ok(back.equals(Buffer.alloc(2 * MiB, 1)), "the stored asset reads back whole");
  t.equal((await fetch(`${gw.url}/health`)).status, 200, "and the gateway serves on");
});
