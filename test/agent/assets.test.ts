/**
 * Binary outputs over the agent's inline limit go to `nw_assets` and travel as `asset://` references: the
 * output_update, the terminal update's result and the job record refer to one stored asset (stored once), whose
 * bytes the gateway serves; small ones stay inline; outputs larger than a NATS message now complete. From a
 * subprocess runner the same. An asset store that refuses fails the job with `JOB_ERR_ASSET_FAILED`, naming the
 * node, and the agent runs the next job.
 */
import t from "tap";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runNodeway } from "../helpers/procs.js";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { api, WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { testByte } from "../../agent/nodes/test-nodes.js";

const expected = (size: number, seed: number, png: boolean) => {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = testByte(i, seed);
  if (png) Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b);
  return b;
};

/** Bytes nodes (id → size, seed, png) each into an Output of the same name. */
function bytesGraph(outs: Record<string, { size: number; seed: number; png?: boolean }>) {
  const nodes: unknown[] = [];
  const edges: unknown[] = [];
  for (const [name, o] of Object.entries(outs)) {
    nodes.push({
      id: `b_${name}`,
      type: "nodeway.test.Bytes",
      data: { size: o.size, seed: o.seed, png: o.png ?? false },
    });
    nodes.push({ id: name, type: "nodetool.output.Output", data: { name } });
    edges.push({ id: `e_${name}`, source: `b_${name}`, sourceHandle: "output", target: name, targetHandle: "value" });
  }
  return { nodes, edges };
}

async function run(
  ws: WsClient,
  graph: unknown,
  strategy?: string,
): Promise<{ jobId: string; end: Msg; events: Msg[] }> {
  const r = await ws.request("run_job", { graph, params: {}, ...(strategy ? { execution_strategy: strategy } : {}) });
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });
  return { jobId, end, events: ws.events(jobId) };
}

const outputOf = (events: Msg[], name: string) =>
  events.find((e) => e.type === "output_update" && e.node_id === name)?.value;

t.test(
  "assets - a binary output over the inline limit travels as one asset, served by the gateway; a small one stays inline",
  async (t) => {
    const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "inline,subprocess"] });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());

    for (const strategy of [undefined, "subprocess"]) {
      const label = strategy ?? "inline";
      const job = await run(
        ws,
        bytesGraph({
          image: { size: 600 * 1024, seed: 1, png: true },
          huge: { size: 3 * 1024 * 1024, seed: 2 },
          small: { size: 1000, seed: 3 },
        }),
        strategy,
      );
      t.equal(
        job.end.status,
        "completed",
        `${label}: completed, a 3 MiB output included (more than one NATS message holds)`,
      );
      t.equal(
        job.events.find((e) => e.type === "job_update" && e.status === "running")?.strategy,
        label,
        `ran ${label}`,
      );
      const image = outputOf(job.events, "image") as Record<string, unknown>;
      t.match(
        image,
        { type: "image", content_type: "image/png", size: 600 * 1024, uri: /^asset:\/\/[0-9a-z]{26}$/ },
        `${label}: the image's output_update carries a reference, typed by its bytes`,
      );
      t.equal(image.uri, `asset://${String(image.asset_id)}`);
      const huge = outputOf(job.events, "huge") as Record<string, unknown>;
      t.match(
        huge,
        { type: "asset", content_type: "application/octet-stream", size: 3 * 1024 * 1024 },
        `${label}: unknown bytes: a plain asset`,
      );
      const small = outputOf(job.events, "small");
      t.ok(
        small instanceof Uint8Array && Buffer.from(small).equals(expected(1000, 3, false)),
        `${label}: 1000 bytes stay inline`,
      );

      const result = job.end.result as Record<string, Record<string, unknown>[]>;
      t.equal(result.image![0]!.asset_id, image.asset_id, `${label}: the terminal update refers to the same asset`);
      const rec = await api(s.url, "GET", `/api/jobs/${job.jobId}`);
      const outs = rec.body.outputs as Record<string, Record<string, unknown>[]>;
      t.same(
        [outs.image![0]!.asset_id, outs.huge![0]!.asset_id],
        [image.asset_id, huge.asset_id],
        `${label}: so does the record`,
      );
      t.equal(
        outs.small![0],
        `data:application/octet-stream;base64,${expected(1000, 3, false).toString("base64")}`,
        `${label}: which holds small bytes as a data: URI`,
      );

      const listed = await api(s.url, "GET", `/api/assets?job_id=${job.jobId}`);
      const assets = listed.body.assets as Record<string, unknown>[];
      t.equal(assets.length, 2, `${label}: each stored once, though event and record both refer to it`);
      t.match(
        assets.find((a) => a.id === image.asset_id),
        { job_id: job.jobId, node_id: "image", content_type: "image/png", size: 600 * 1024 },
      );
      for (const [ref, size, seed, png] of [
        [image, 600 * 1024, 1, true],
        [huge, 3 * 1024 * 1024, 2, false],
      ] as const) {
        const got = await fetch(`${s.url}/api/assets/${String(ref.asset_id)}/content`);
        t.equal(got.headers.get("content-type"), ref.content_type);
        t.ok(
          Buffer.from(await got.arrayBuffer()).equals(expected(size, seed, png)),
          `${label}: the gateway serves the bytes the node made (${size} B)`,
        );
      }
    }
  },
);

t.test(
  "assets - an asset store that refuses fails the job, naming the node; the agent runs the next job",
  async (t) => {
    const s = await startStack(t, { agents: 1, agentArgs: ["--asset-inline-max-bytes", "4096"] });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const okJob = await run(ws, bytesGraph({ pic: { size: 5000, seed: 4 } }));
    t.equal(
      (outputOf(okJob.events, "pic") as Record<string, unknown>).type,
      "asset",
      "--asset-inline-max-bytes 4096: 5000 bytes go to the store",
    );

    // The bucket's stream goes away: nothing answers the chunk publishes.
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    await (await jetstreamManager(nc)).streams.delete("OBJ_nw_assets");
    const failed = await run(ws, bytesGraph({ pic: { size: 5000, seed: 4 } }));
    t.equal(failed.end.status, "failed");
    t.match(failed.end.error, {
      code: "JOB_ERR_ASSET_FAILED",
      message: /could not store 5000 bytes of node "pic" as an asset/,
    });
    t.notOk(
      failed.events.some((e) => e.type === "output_update"),
      "no output went out in place of the bytes",
    );
    const rec = await api(s.url, "GET", `/api/jobs/${failed.jobId}`);
    t.same(
      [rec.body.status, (rec.body.error as { code: string }).code, rec.body.attempt],
      ["failed", "JOB_ERR_ASSET_FAILED", 1],
      "the record says so, on the first attempt",
    );
    const next = await run(ws, bytesGraph({ little: { size: 100, seed: 5 } }));
    t.equal(next.end.status, "completed", "a job with inline bytes runs next");
  },
);

t.test(
  "assets - an uploaded file as an image param: the job gets its reference; an unknown asset or a non-reference is refused before anything is queued",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const up = await fetch(`${s.url}/api/assets?name=me.png`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: new Uint8Array(expected(2000, 6, true)),
    });
    const id = String(((await up.json()) as { id: string }).id);
    const graph = {
      nodes: [
        { id: "in", type: "nodetool.input.ImageInput", data: { name: "photo" } },
        { id: "out", type: "nodetool.output.Output", data: { name: "photo" } },
      ],
      edges: [{ id: "e", source: "in", sourceHandle: "output", target: "out", targetHandle: "value" }],
    };
    const withParam = async (photo: unknown) => {
      const r = await ws.request("run_job", { graph, params: { photo } });
      if (r.error) return { error: r.error as Record<string, unknown> };
      const jobId = String((r.result as { job_id: string }).job_id);
      const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: `job ${jobId} ended` });
      return { end, value: outputOf(ws.events(jobId), "out") };
    };
    for (const given of [
      `asset://${id}`,
      { type: "image", uri: `asset://${id}`, asset_id: id, data: null },
      { asset_id: id },
    ]) {
      const r = await withParam(given);
      t.equal(r.end?.status, "completed", `given ${JSON.stringify(given)}`);
      t.same(
        r.value,
        { type: "image", uri: `asset://${id}`, asset_id: id },
        "the node passes the asset's reference on",
      );
    }
    const url = await withParam("https://example.com/cat.png");
    t.same(url.value, { type: "image", uri: "https://example.com/cat.png" }, "a URL is a reference too");

    const jobsBefore = ((await api(s.url, "GET", "/api/jobs")).body.jobs as unknown[]).length;
    const missing = await withParam("asset://01m8t9vvrm4fp8kmj0fkgnar4h");
    t.match(missing.error, {
      code: "GW_ERR_BAD_REQUEST",
      message: /param "photo" refers to asset 01m8t9vvrm4fp8kmj0fkgnar4h, which does not exist/,
    });
    for (const bad of [
      42,
      "cat.png",
      { uri: `asset://${id}`, asset_id: "01m8t9vvrm4fp8kmj0fkgnar4h" },
      "asset://NOT-AN-ID",
    ]) {
      const r = await withParam(bad);
      t.match(
        r.error,
        { code: "GRAPH_ERR_PARAM_TYPE", message: /param "photo" must be an image reference/ },
        `refused: ${JSON.stringify(bad)}`,
      );
    }
    t.equal(
      ((await api(s.url, "GET", "/api/jobs")).body.jobs as unknown[]).length,
      jobsBefore,
      "none of the refused runs was queued",
    );
  },
);

t.test(
  "assets - `nodeway run --param k=@file --save DIR`: the file goes up as an asset param, output assets come down",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    const dir = mkdtempSync(join(tmpdir(), "nw-cli-assets-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const photo = expected(3000, 8, true);
    writeFileSync(join(dir, "me.png"), photo);
    const wfFile = join(dir, "wf.json");
    writeFileSync(
      wfFile,
      JSON.stringify({
        id: "cli-assets",
        name: "cli assets",
        graph: {
          nodes: [
            { id: "in", type: "nodetool.input.ImageInput", data: { name: "photo" } },
            { id: "photo", type: "nodetool.output.Output", data: { name: "photo" } },
            { id: "b", type: "nodeway.test.Bytes", data: { size: 400_000, seed: 9, png: true } },
            { id: "big", type: "nodetool.output.Output", data: { name: "big" } },
          ],
          edges: [
            { id: "e1", source: "in", sourceHandle: "output", target: "photo", targetHandle: "value" },
            { id: "e2", source: "b", sourceHandle: "output", target: "big", targetHandle: "value" },
          ],
        },
      }),
    );
    const p = runNodeway([
      "run",
      wfFile,
      "--param",
      `photo=@${join(dir, "me.png")}`,
      "--save",
      join(dir, "out"),
      "--gateway",
      s.url,
    ]);
    t.equal(await p.exited, 0, p.stderr());
    t.match(p.stderr(), /uploaded .*me\.png as asset:\/\/[0-9a-z]{26}/);
    const printed = JSON.parse(p.stdout().slice(p.stdout().indexOf("{"))) as {
      status: string;
      outputs: Record<string, Record<string, string>[]>;
    };
    t.equal(printed.status, "completed");
    const given = printed.outputs.photo![0]!;
    t.match(
      given,
      { type: "image", uri: /^asset:\/\//, url: `${s.url}/api/assets/${given.asset_id}/content` },
      "the param arrived as the uploaded asset's reference, with where to fetch it",
    );
    t.ok(Buffer.from(await (await fetch(given.url!)).arrayBuffer()).equals(photo), "whose bytes are the file's");
    const big = printed.outputs.big![0]!;
    t.equal(big.saved, join(dir, "out", `${big.asset_id}.png`), "--save wrote the output asset");
    t.ok(readFileSync(big.saved!).equals(expected(400_000, 9, true)), "with the node's bytes");
  },
);
