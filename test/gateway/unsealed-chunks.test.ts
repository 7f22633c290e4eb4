/**
 * Asset chunks that no entry names (an agent published them and never had them sealed) are purged by the gateway's
 * sweep once old enough; chunks of sealed assets, and chunks of an upload still in flight, stay.
 */
import t from "tap";
import { compileGatewayConfig } from "../../gateway/index.js";
import { connectNats } from "../../gateway/nats.js";
import { AgentAssets } from "../../gateway/agent-assets.js";
import { OBJ_ASSETS, newId, subjects } from "../../protocol/index.js";
import { NatsServer } from "../helpers/nats-server.js";
import { check } from "../helpers/check.js";

t.test(
  "unsealed chunks - the sweep purges chunks no entry names, older than its cut-off, and nothing else",
  async (t) => {
    const ns = await NatsServer.start();
    t.teardown(() => ns.stop());
    const n = await connectNats(compileGatewayConfig({ natsUrl: ns.url }), () => undefined);
    t.teardown(() => n.nc.close());
    const stream = subjects.objectStream(OBJ_ASSETS);
    const chunkCount = async (nuid: string) => {
      const subj = subjects.objectChunks(OBJ_ASSETS, nuid);
      return (await n.jsm.streams.info(stream, { subjects_filter: subj })).state.subjects?.[subj] ?? 0;
    };

    // A sealed asset of several chunks (the object store's own upload).
    const bytes = Buffer.alloc(300_000, 7);
    const id = newId();
    const sealed = await n.assets.putBlob({ name: id, options: { max_chunk_size: 128 * 1024 } }, bytes);
    t.equal(await chunkCount(sealed.nuid), 3, "the sealed asset has its chunks");

    // What an agent does: chunks under a nuid of its own, and no seal.
    const publish = async (nuid: string, count: number) => {
      for (let i = 0; i < count; i++)
        await n.js.publish(subjects.objectChunks(OBJ_ASSETS, nuid), Buffer.alloc(1_000, i));
    };
    await publish("abandonedUpload0001", 4);
    // Message times have a finer grain than a Date: the cut-off lies a few milliseconds clear of both uploads.
    const storedMs = Date.now();
    await check(() => Date.now() > storedMs + 5, 1_000, { name: "the clock moved on" });
    const cutOff = new Date();
    await check(() => Date.now() > cutOff.getTime() + 5, 1_000, { name: "the clock moved past the cut-off" });
    await publish("inFlightUpload00001", 2);

    const purged = await new AgentAssets(n).sweepUnsealed(cutOff);
    t.equal(purged, 1, "one upload's chunks purged");
    t.equal(await chunkCount("abandonedUpload0001"), 0, "the abandoned chunks are gone");
    t.equal(await chunkCount("inFlightUpload00001"), 2, "chunks newer than the cut-off stay (an upload in flight)");
    t.equal(await chunkCount(sealed.nuid), 3, "the sealed asset's chunks stay");
    t.same(Buffer.from((await n.assets.getBlob(id))!), bytes, "and it reads back whole");
    t.equal(await new AgentAssets(n).sweepUnsealed(new Date(0)), 0, "a cut-off before everything purges nothing");
  },
);
