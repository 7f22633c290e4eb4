/**
 * A node's output is stored as an asset only up to the upload cap (`ASSETS_DEFAULTS.maxUploadBytes` by default):
 * larger ones fail naming the size and the limit, and nothing reaches the store (a SQL `zeroblob(900000000)` once
 * stored 900 MB through a node where a client could upload 256 MiB).
 */
import t from "tap";
import { AssetBudget, AssetStoreError, JobAssets } from "../../agent/assets.js";
import type { JobAssetStore } from "../../agent/asset-io.js";
import { ASSETS_DEFAULTS } from "../../protocol/index.js";

t.test("asset cap - outputs over the asset limit are refused before the store", async (t) => {
  const puts: number[] = [];
  const store: JobAssetStore = {
    put: async (_name, bytes) => (puts.push(bytes.byteLength), bytes.byteLength),
    get: async () => null,
  };
  const assets = new JobAssets(store, 100, 1_000);
  const ok = (await assets.offload({ a: new Uint8Array(1_000) }, "n")) as { a: { size: number } };
  t.equal(ok.a.size, 1_000, "at the limit: stored");
  const refused = await assets.offload({ b: new Uint8Array(1_001).fill(1) }, "big").catch((err: unknown) => err);
  t.ok(refused instanceof AssetStoreError, "over it: refused");
  t.match(
    String((refused as Error).message),
    /1001 bytes of node "big" is over the 1000-byte asset limit/,
    "naming the node and the limit",
  );
  t.same(puts, [1_000], "nothing over the limit reached the store");
  t.equal(
    new JobAssets(store, 100)["maxBytes" as never],
    ASSETS_DEFAULTS.maxUploadBytes,
    "the default is the upload cap",
  );
});

t.test("asset cap - one job's assets together stop at its budget, shared by all its writers", async (t) => {
  const puts: number[] = [];
  let failNext = false;
  const store: JobAssetStore = {
    put: async (_name, bytes) => {
      if (failNext) {
        failNext = false;
        throw new Error("store away");
      }
      puts.push(bytes.byteLength);
      return bytes.byteLength;
    },
    get: async () => null,
  };
  const budget = new AssetBudget(2_500);
  const outputs = new JobAssets(store, 100, 1_000, budget);
  const toChildren = new JobAssets(store, 0, 1_000, budget);
  await outputs.offload(new Uint8Array(1_000).fill(1), "a");
  await toChildren.offload(new Uint8Array(1_000).fill(2), "b");
  await outputs.offload(new Uint8Array(1_000).fill(1), "again");
  t.same(puts, [1_000, 1_000], "the same bytes twice are stored, and counted, once");
  failNext = true;
  await outputs.offload(new Uint8Array(400).fill(3), "lost").catch(() => undefined);
  t.same(puts, [1_000, 1_000], "a write that failed stored nothing");
  await outputs.offload(new Uint8Array(500).fill(4), "fits");
  t.same(puts, [1_000, 1_000, 500], "and its bytes were given back: 2,500 fit exactly");
  const over = await toChildren.offload(new Uint8Array(1).fill(5), "c").catch((err: unknown) => err);
  t.ok(over instanceof AssetStoreError, "one byte more is refused, whichever writer asks");
  t.match(String((over as Error).message), /would take this job's assets over 2500 bytes \(jobAssetMaxBytes\)/);
  t.same(puts, [1_000, 1_000, 500], "and never reaches the store");
  t.equal(new AssetBudget().maxBytes, ASSETS_DEFAULTS.jobMaxBytes, "the default is 4 GiB");
});
