/**
 * A runner that floods the agent with asset calls: each `asset_get` makes the agent read an asset whole into its
 * memory, each `asset_put` holds its bytes until stored. A runner may have `ASSET_CALLS_AT_ONCE` of them in flight
 * (the agent's own runner queues the rest of its nodes' calls); one that sends more is stopped and its run fails,
 * before the agent holds more than that many assets for it. Without the cap, 200 gets of an 8 MiB asset held
 * 1.6 GB of the agent's memory at once.
 */
import t from "tap";
import { Worker } from "node:worker_threads";
import { ASSET_CALLS_AT_ONCE, RunnerCrashedError, runOnChannel } from "../../agent/runners/index.js";
import { nodeCatalog } from "../../agent/nodes/index.js";
import { assetRef, type AssetRef } from "../../protocol/index.js";
import { check } from "../helpers/check.js";

/** A channel to a thread that answers the run message by sending `n` asset gets at once, then idles. */
function floodingChannel(n: number) {
  const w = new Worker(
    `const { parentPort } = require("node:worker_threads");
     parentPort.once("message", () => {
       for (let call = 1; call <= ${n}; call++) parentPort.postMessage({ type: "asset_get", call, ref: "asset://a" });
       setInterval(() => {}, 1000);
     });`,
    { eval: true },
  );
  let exited = false;
  w.once("exit", () => (exited = true));
  return {
    ch: {
      what: "worker thread",
      alive: () => !exited,
      hold: () => undefined,
      send: (m: unknown) => w.postMessage(m),
      onMessage: (fn: (m: never) => void) => void w.on("message", (m) => fn(m as never)),
      onGone: (fn: (how: string) => void) => void w.once("exit", (code) => fn(`exit code ${code}`)),
      kill: () => void w.terminate(),
    },
    exitedSoon: () => check(() => (exited ? true : null), 5_000, { name: "runner thread stopped" }),
  };
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
    void runOnChannel(
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
    ).then(
      () => (settled = true),
      (e: unknown) => ((err = e), (settled = true)),
    );
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
