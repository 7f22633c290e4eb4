/**
 * What an image job may cost the agent: every sharp (libvips) pipeline a node builds stops at its time cap, since
 * nothing else stops native work (a job's timeout, a cancel or a terminated thread leave it running);
 * AdaptiveContrast (CLAHE) on a 36-megapixel image is linear work that ends, and the agent's CPU goes idle once a
 * job over it times out; RenderText refuses text too large to draw before drawing any of it.
 */
import t from "tap";
import sharp from "sharp";
import { readFileSync } from "node:fs";
import type { NodeContext } from "../../agent/engine/types.js";
import { imageOpError, imagePipeline } from "../../agent/nodes/media-util.js";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { dataUri, graphOf, outputBytes, runGraph } from "../helpers/fake-media.js";

/** A 6000 × 6000 black PNG: 36 megapixels (under the 40-megapixel cap) in a few dozen KB. */
const BOMB = new Uint8Array(
  await sharp({ create: { width: 6000, height: 6000, channels: 3, background: "#000" } })
    .png()
    .toBuffer(),
);

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Peak resident memory of a process in MiB (VmHWM). */
function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

/**
 * A poll that is true once `cpuSeconds` grew by less than 0.15 of a core over a window of at least 2 s: the
 * process has stopped computing (a libvips thread left running uses a core, or what a loaded machine leaves it).
 */
function idle(cpuSeconds: () => number): () => boolean {
  let since = { at: Date.now(), cpu: cpuSeconds() };
  return () => {
    const now = { at: Date.now(), cpu: cpuSeconds() };
    if (now.at - since.at < 2000) return false;
    const load = (now.cpu - since.cpu) / ((now.at - since.at) / 1000);
    since = now;
    return load < 0.15;
  };
}

const processCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

const errorOf = (end: Msg) => String((end.error as { message?: string } | undefined)?.message ?? "");

t.test("image limits - a sharp pipeline stops at its time cap, and the CPU goes idle", async (t) => {
  const ctx = { signal: new AbortController().signal } as NodeContext;
  const started = Date.now();
  // libvips' own CLAHE with a 750-pixel window takes minutes on 36 megapixels: the cap of 1 s stops it.
  const img = await imagePipeline(ctx, BOMB, {}, 1);
  const err = await img
    .clahe({ width: 750, height: 750, maxSlope: 2 })
    .png()
    .toBuffer()
    .then(
      () => null,
      (e: unknown) => e,
    );
  t.ok(err, "the pipeline fails");
  t.match(String(imageOpError(err)), /NodeError: the image operation took longer than its time limit/);
  t.ok(Date.now() - started < 15_000, `within its cap, not minutes (${Date.now() - started} ms)`);
  await check(idle(processCpu), 20_000, { name: "this process's CPU idle", intervalMs: 250 });
  t.pass("and no libvips thread goes on computing");

  const stopped = new AbortController();
  stopped.abort(new Error("job cancelled"));
  await t.rejects(
    imagePipeline({ signal: stopped.signal } as NodeContext, BOMB),
    /job cancelled/,
    "a job already stopped starts no pipeline",
  );
});

t.test("image limits - AdaptiveContrast on 36 megapixels ends, and a stopped job's work stops", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const pid = s.agents[0]!.proc.pid!;
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const params = { img: dataUri(BOMB) };
  const chainOf = (n: number) => {
    const ids = Array.from({ length: n }, (_, i) => `c${i}`);
    return graphOf(
      [
        ["in", "nodetool.input.ImageInput", { name: "img" }],
        ...ids.map((id): [string, string, Record<string, unknown>] => [id, "lib.pillow.enhance.AdaptiveContrast", {}]),
        ["out", "nodetool.output.Output", { name: "result" }],
      ],
      ["in", ...ids, "out"].slice(1).map((id, i, to) => {
        const from = i === 0 ? "in" : to[i - 1]!;
        return `${from}.output>${id}.${id === "out" ? "value" : "image"}`;
      }),
    );
  };

  // Three in a row stopped by a 5 s timeout: libvips' own CLAHE is well under way in the first by then.
  const r = await ws.request("run_job", { graph: chainOf(3), params, timeout_s: 5 });
  const jobId = String((r.result as { job_id: string }).job_id);
  const ended = await ws.waitTerminal(jobId, 60_000);
  await check(
    idle(() => cpuSecondsOf(pid)),
    30_000,
    { name: "agent CPU idle", intervalMs: 250 },
  );
  t.pass(`once the job ends (${String(ended.status)}) the agent stops computing (libvips' CLAHE went on for minutes)`);

  const started = Date.now();
  const full = await runGraph(ws, chainOf(1), params, 120_000);
  t.equal(full.end.status, "completed", errorOf(full.end));
  t.ok(Date.now() - started < 120_000, `without a timeout it completes (${Date.now() - started} ms)`);
  const out = (full.end.result as { result: unknown[] }).result[0];
  const meta = await sharp(await outputBytes(s.url, out)).metadata();
  t.same([meta.width, meta.height], [6000, 6000], "the whole image, equalized");
});

t.test("image limits - RenderText refuses text too large to draw, fast and without the memory", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const pid = s.agents[0]!.proc.pid!;
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const small = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#08f" } })
    .png()
    .toBuffer();
  const text = Array.from({ length: 50 }, () => "W".repeat(60)).join("\n");
  const graph = graphOf(
    [
      ["in", "nodetool.input.ImageInput", { name: "img" }],
      ["txt", "lib.pillow.draw.RenderText", { text, size: 512 }],
      ["out", "nodetool.output.Output", { name: "result" }],
    ],
    ["in.output>txt.image", "txt.output>out.value"],
  );
  const started = Date.now();
  const job = await runGraph(ws, graph, { img: dataUri(small) }, 60_000);
  const tookMs = Date.now() - started;
  t.equal(job.end.status, "failed");
  t.match(
    errorOf(job.end),
    /RenderText: the text would be about 30720×30720 pixels at size 512 \(50 lines, the longest 60 characters\), over the 40000000-pixel image limit/,
    "the error names the size the text would take",
  );
  t.ok(tookMs < 10_000, `at once (${tookMs} ms; drawing it took 22 s of CPU)`);
  const peak = peakRssMb(pid);
  t.ok(peak < 1024, `the agent's peak memory stays modest (${Math.round(peak)} MiB; drawing it took 3.65 GB)`);

  // Tabs are wider than the estimate's 1 em a character: a first small drawing measures them.
  const tabs = Array.from({ length: 20 }, () => `x${"\t".repeat(100)}x`).join("\n");
  const wide = graphOf(
    [
      ["in", "nodetool.input.ImageInput", { name: "img" }],
      ["txt", "lib.pillow.draw.RenderText", { text: tabs, size: 100 }],
      ["out", "nodetool.output.Output", { name: "result" }],
    ],
    ["in.output>txt.image", "txt.output>out.value"],
  );
  const measured = await runGraph(ws, wide, { img: dataUri(small) }, 60_000);
  t.equal(measured.end.status, "failed");
  t.match(errorOf(measured.end), /the text would be about \d+×\d+ pixels at size 100 \(20 lines/);

  const fine = await runGraph(
    ws,
    graphOf(
      [
        ["in", "nodetool.input.ImageInput", { name: "img" }],
        ["txt", "lib.pillow.draw.RenderText", { text: "Hi", size: 512 }],
        ["out", "nodetool.output.Output", { name: "result" }],
      ],
      ["in.output>txt.image", "txt.output>out.value"],
    ),
    { img: dataUri(small) },
  );
  t.equal(fine.end.status, "completed", `short text at size 512 still draws: ${errorOf(fine.end)}`);
});
