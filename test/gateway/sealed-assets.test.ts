/**
 * An agent stores an asset's chunks itself and asks a gateway to seal them. The gateway measures what is stored
 * before it writes the entry: a seal whose size, chunk lengths or digest are not what the chunks hold, or whose
 * size is over `maxAssetBytes`, is refused, its chunks dropped and no entry written. Before, only the number of
 * chunks was counted: a download then reported a length its bytes did not have, and readers failed on the digest.
 */
import t from "tap";
import { compileGatewayConfig } from "../../gateway/index.js";
import { connectNats } from "../../gateway/nats.js";
import { AgentAssets, AssetRefused } from "../../gateway/agent-assets.js";
import { objectDigest } from "../../nats/index.js";
import { OBJ_ASSETS, newId, subjects, type JobRecord } from "../../protocol/index.js";
import { NatsServer } from "../helpers/nats-server.js";

const CHUNK = 128 * 1024;
const PRINCIPAL = "agent-1";

t.test("sealed assets - a seal is written only when the chunks hold what it says", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const n = await connectNats(compileGatewayConfig({ natsUrl: ns.url }), () => undefined);
  t.teardown(() => n.nc.close());
  const assets = new AgentAssets(n, 1_000_000);
  const rec = { id: newId(), workflow_id: "w", status: "running", holder: PRINCIPAL } as JobRecord;
  const stream = subjects.objectStream(OBJ_ASSETS);
  const chunkCount = async (nuid: string) => {
    const subj = subjects.objectChunks(OBJ_ASSETS, nuid);
    return (await n.jsm.streams.info(stream, { subjects_filter: subj })).state.subjects?.[subj] ?? 0;
  };

  /** Stores `parts` as an agent does, then asks for the seal with what `announce` changes; "sealed" or the refusal. */
  async function sealOf(parts: Buffer[], announce: Record<string, unknown> = {}) {
    const nuid = newId().slice(0, 20);
    for (const p of parts) await n.js.publish(subjects.objectChunks(OBJ_ASSETS, nuid), p);
    const whole = Buffer.concat(parts);
    const name = newId();
    const req = {
      type: "asset.seal" as const,
      v: 1 as const,
      job_id: rec.id,
      proof: "",
      name,
      nuid,
      size: whole.byteLength,
      chunks: parts.length,
      chunk_bytes: CHUNK,
      digest: objectDigest(whole),
      content_type: "application/octet-stream",
      file_name: "out.bin",
      ...announce,
    };
    const outcome = await assets.handle(PRINCIPAL, req, rec, false).then(
      () => "sealed",
      (err: unknown) => (err instanceof AssetRefused ? `${err.code}: ${err.message}` : Promise.reject(err)),
    );
    return { outcome, nuid, name, whole };
  }

  const bytes = (n: number, fill: number) => Buffer.alloc(n, fill);
  const ok = await sealOf([bytes(CHUNK, 1), bytes(CHUNK, 2), bytes(1_000, 3)]);
  t.equal(ok.outcome, "sealed", "chunks that are what the seal says are sealed");
  t.same(Buffer.from((await n.assets.getBlob(ok.name))!), ok.whole, "and read back whole");
  const empty = await sealOf([], { size: 0, chunks: 0 });
  t.equal(empty.outcome, "sealed", "an empty asset is sealed");

  const lies: [string, Buffer[], Record<string, unknown>, RegExp][] = [
    ["a size smaller than the bytes", [bytes(CHUNK, 1), bytes(5_000, 2)], { size: CHUNK + 10 }, /bytes/],
    ["a size larger than the bytes", [bytes(CHUNK, 1), bytes(5_000, 2)], { size: 2 * CHUNK }, /bytes stored/],
    ["a middle chunk over chunk_bytes", [bytes(CHUNK, 1), bytes(CHUNK + 9, 2), bytes(10, 3)], {}, /chunk 2 holds/],
    ["a short middle chunk", [bytes(10, 1), bytes(CHUNK, 2)], { size: CHUNK + 10 }, /chunk 1 holds 10 bytes/],
    ["a digest of other bytes", [bytes(CHUNK, 1), bytes(10, 2)], { digest: objectDigest(bytes(5, 0)) }, /digest/],
    ["a size over maxAssetBytes", [...Array.from({ length: 8 }, (_, i) => bytes(CHUNK, i))], {}, /over 1000000/],
  ];
  for (const [what, parts, announce, why] of lies) {
    const lie = await sealOf(parts, announce);
    t.match(lie.outcome, /^GW_ERR_BAD_REQUEST: asset\.seal: /, `${what}: refused`);
    t.match(lie.outcome, why, `${what}: says why (${lie.outcome})`);
    t.equal(await n.assets.info(lie.name), null, `${what}: no entry is written`);
    t.equal(await chunkCount(lie.nuid), 0, `${what}: its chunks are dropped`);
  }
});
