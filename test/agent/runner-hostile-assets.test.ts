/**
 * A runner that floods the agent with asset calls: each `asset_get` makes the agent read an asset whole into its
 * memory, each `asset_put` holds its bytes until stored. A runner may have `ASSET_CALLS_AT_ONCE` of them in flight
 * (the agent's own runner queues the rest of its nodes' calls); one that sends more is stopped and its run fails,
 * before the agent holds more than that many assets for it. Without the cap, 200 gets of an 8 MiB asset held
 * 1.6 GB of the agent's memory at once.
 */
import t from "tap";
import { ASSET_CALLS_AT_ONCE, RunnerCrashedError, runOnChannel } from "../../agent/runners/index.js";
import { nodeCatalog } from "../../agent/nodes/index.js";
import { ASSETS_DEFAULTS, assetRef, type AssetRef } from "../../protocol/index.js";
import { check } from "../helpers/check.js";
import { workerChannel } from "../helpers/worker-channel.js";

/** A channel to a thread that answers the run message by sending `n` asset gets at once, then idles. */
function floodingChannel(n: number) {
  return workerChannel(
    `for (let call = 1; call <= ${n}; call++) parentPort.postMessage({ type: "asset_get", call, ref: "asset://a" })`,
  );
}

t.test(
  "runner hostile assets - 200 asset gets at once: the agent reads at most the cap, and stops the runner",
  async (t) => {
    const MIB8 = 8 * 1024 * 1024;
    let reading = 0;
    let most = 0;
    let read = 0;
    const assets = {
      put: async (): Promise<AssetRef> => {
        throw new Error("not in this test");
      },
      get: async () => {
        reading++;
        read++;
        most = Math.max(most, reading);
        const bytes = new Uint8Array(MIB8).fill(1); // what reading an 8 MiB asset holds
        await new Promise((r) => setTimeout(r, 200));
        reading--;
        return bytes;
      },
    };
    const { ch, exitedSoon } = floodingChannel(200);
    let err: unknown = null;
    let settled = false;
    void runOn(ch, assets).then((e) => ((err = e), (settled = true)));
    t.teardown(() => ch.kill());
    // Ended, or (without the cap) every get read while the runner idles.
    await check(() => settled || read === 200 || null, 20_000, { name: "run ended or every get read" });
    t.ok(err instanceof RunnerCrashedError, "the run fails RunnerCrashedError");
    t.match(
      String((err as Error | null)?.message),
      new RegExp(`sent more than ${ASSET_CALLS_AT_ONCE} asset calls at once`),
      "saying why",
    );
    t.ok(
      most <= ASSET_CALLS_AT_ONCE,
      `the agent read ${most} assets at once, ${most * 8} MiB (200, 1,600 MiB, before)`,
    );
    t.ok(read <= ASSET_CALLS_AT_ONCE, `and ${read} in all`);
    await exitedSoon();
  },
);

t.test(
  "runner hostile assets - a graph of 30 nodes saving at once completes: its runner queues past the cap",
  async (t) => {
    const { runWithStrategy } = await import("../../agent/runners/index.js");
    let storing = 0;
    let most = 0;
    let stored = 0;
    const assets = {
      put: async (bytes: Uint8Array): Promise<AssetRef> => {
        storing++;
        most = Math.max(most, storing);
        await new Promise((r) => setTimeout(r, 50));
        storing--;
        stored++;
        return assetRef(`s${stored}`, "text/plain", bytes.byteLength);
      },
      get: async (): Promise<Uint8Array> => {
        throw new Error("not in this test");
      },
    };
    const nodes = Array.from({ length: 30 }, (_, i) => ({
      id: `save${i}`,
      type: "nodetool.text.SaveText",
      data: { text: `text ${i}`, name: `t${i}.txt` },
    }));
    for (const strategy of ["threaded", "subprocess"] as const) {
      most = 0;
      stored = 0;
      const result = await runWithStrategy(
        strategy,
        {
          graph: { nodes, edges: [] },
          params: {},
          library: nodeCatalog(),
          signal: new AbortController().signal,
          emit: () => undefined,
          assets,
        },
        { memoryMb: 0, gpus: [], docker: null, label: "assets", spares: null },
      );
      t.equal(result.status, "completed", `${strategy}: the run completes`);
      t.equal(stored, 30, `${strategy}: every file is stored`);
      t.ok(most <= ASSET_CALLS_AT_ONCE, `${strategy}: ${most} at once, at most ${ASSET_CALLS_AT_ONCE}`);
    }
  },
);

/** Runs the one-node graph on `channel` with `assets`; the run's error (null when it ended without one). */
async function runOn(ch: Parameters<typeof runOnChannel>[1], assets: RunAssets): Promise<Error | null> {
  const run = runOnChannel(
    {
      graph: { nodes: [{ id: "n", type: "nodetool.text.ToUppercase", data: {} }], edges: [] },
      params: {},
      library: nodeCatalog(),
      signal: new AbortController().signal,
      emit: () => undefined,
      assets,
    },
    ch,
    0,
  );
  return run.then(
    () => null,
    (e: unknown) => e as Error,
  );
}
type RunAssets = { put(bytes: Uint8Array): Promise<AssetRef>; get(ref: string): Promise<Uint8Array> };

t.test("runner hostile assets - pieces the runner has no right to send stop it, and say why", async (t) => {
  const stored: number[] = [];
  const assets: RunAssets = {
    put: async (bytes) => (stored.push(bytes.byteLength), assetRef("s", "text/plain", bytes.byteLength)),
    get: async () => new Uint8Array(20 * 1024 * 1024).fill(7),
  };
  const cases: [string, string, RegExp][] = [
    [
      "a piece over 8 MiB",
      'parentPort.postMessage({ type: "asset_piece", call: 1, bytes: new Uint8Array(8 * 1024 * 1024 + 1) })',
      /an asset_piece without its number, or of more than 8388608 bytes/,
    ],
    [
      "asset_more for a call never made",
      'parentPort.postMessage({ type: "asset_more", call: 99 })',
      /asked for more of asset call 99, which has no more/,
    ],
    [
      "asset_more past a get's last piece",
      // A get of 20 MiB is three pieces: the answer and two asset_mores; the fourth asks past its end.
      `parentPort.postMessage({ type: "asset_get", call: 5, ref: "asset://a" });
       let n = 0;
       parentPort.on("message", (m) => { if (m.call === 5 && n++ < 3) parentPort.postMessage({ type: "asset_more", call: 5 }); })`,
      /asked for more of asset call 5, which has no more/,
    ],
    [
      "a piece of a call that is a get",
      `parentPort.postMessage({ type: "asset_get", call: 3, ref: "asset://a" });
       parentPort.on("message", (m) => { if (m.call === 3) parentPort.postMessage({ type: "asset_piece", call: 3, bytes: new Uint8Array(1) }); })`,
      /sent a piece of asset call 3, which is a get/,
    ],
  ];
  for (const [what, script, why] of cases) {
    const channel = workerChannel(script);
    t.teardown(() => channel.ch.kill());
    const err = await runOn(channel.ch, assets);
    t.ok(err instanceof RunnerCrashedError, `${what}: the run fails RunnerCrashedError`);
    t.match(String(err?.message), why, `${what}: saying why`);
    await channel.exitedSoon();
  }
  t.same(stored, [], "nothing was stored");
});

t.test(
  "runner hostile assets - a put past the largest asset is answered with the limit, and nothing is stored",
  async (t) => {
    const PIECE = 8 * 1024 * 1024;
    const pieces = ASSETS_DEFAULTS.maxUploadBytes / PIECE + 2; // 272 MiB, 16 past the limit
    // The runner sends the pieces, then its put; it reports the answer it gets as its run's failure.
    const channel = workerChannel(
      `const piece = new Uint8Array(${PIECE});
       for (let i = 0; i < ${pieces}; i++) parentPort.postMessage({ type: "asset_piece", call: 1, bytes: piece });
       parentPort.postMessage({ type: "asset_put", call: 1, bytes: new Uint8Array(1) });
       parentPort.on("message", (m) => {
         if (m.type === "asset_result") parentPort.postMessage({ type: "thrown", unknownNode: null, message: "put answered: " + (m.ok ? "ok" : m.message) });
       })`,
    );
    t.teardown(() => channel.ch.kill());
    let stored = 0;
    const err = await runOn(channel.ch, {
      put: async (bytes) => ((stored += bytes.byteLength), assetRef("s", "text/plain", bytes.byteLength)),
      get: async () => new Uint8Array(0),
    });
    t.match(
      String(err?.message),
      new RegExp(
        `put answered: an asset of ${pieces * PIECE + 1} bytes is over the ${ASSETS_DEFAULTS.maxUploadBytes}-byte asset limit`,
      ),
      "the put's answer names its size and the limit",
    );
    t.equal(stored, 0, "nothing reached the store");
  },
);
