/**
 * NodeTool's example gallery on `nodeway up`: saves every workflow file in a folder as it is, runs each with no
 * params (the input nodes' own values) and counts how each ends. The providers the workflows call are local
 * servers speaking OpenAI's, Anthropic's, Ollama's and SerpAPI's documented APIs (test/helpers/fake-*); nothing
 * else is faked, so a node that needs the internet (an HTTP fetch, an RSS feed) fails as it would offline.
 *
 *   node --import ./bench/register.mjs bench/gallery.ts --dir <folder of NodeTool workflow .json files>
 *
 * NodeTool's files are not in this repository (another project's, under another licence): point --dir at
 * `src/nodetool/examples/nodetool-base/` of a nodetool-base checkout. Prints one line per workflow, a tally by
 * outcome and the failures grouped by error, and a JSON line `{"bench":"gallery",...}`.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { FAKE_KEY, FakeLlm } from "../test/helpers/fake-llm.js";
import { FakeMedia, toneWav } from "../test/helpers/fake-media.js";
import { FAKE_SERP_KEY, FakeSerp } from "../test/helpers/fake-search.js";
import { killAll, NODEWAY, start } from "./lib/procs.js";

type Outcome = "completed" | "failed" | "refused" | "timeout";
interface Row {
  file: string;
  outcome: Outcome;
  ms: number;
  error: string;
}

const MEDIA_PATHS = /^\/v1\/(images|audio|videos)\b/;

/** One address for OpenAI's chat and media endpoints, Anthropic's and Ollama's: media to FakeMedia, the rest to FakeLlm. */
async function providerFront(llm: FakeLlm, media: FakeMedia): Promise<Server> {
  const server = createServer((req, res) => {
    const port = MEDIA_PATHS.test(req.url ?? "") ? media.port : llm.port;
    const up = request({ host: "127.0.0.1", port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return server;
}

/** Sample files a user would pick for a media input left empty: an image, a tone, a short video. */
type Samples = Record<"image" | "audio" | "video", string>;

async function uploadSamples(url: string, dir: string): Promise<Samples> {
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#3a7" } })
    .png()
    .toBuffer();
  const mp4 = join(dir, "sample.mp4");
  execFileSync(
    "ffmpeg",
    ["-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=8"].concat([
      "-f",
      "lavfi",
      "-i",
      "sine=frequency=440:duration=1",
      "-shortest",
      "-pix_fmt",
      "yuv420p",
      mp4,
    ]),
  );
  const put = async (bytes: Buffer | Uint8Array, type: string, name: string) => {
    const r = await fetch(`${url}/api/assets?name=${name}`, {
      method: "POST",
      headers: { "content-type": type },
      body: Buffer.from(bytes),
    });
    if (!r.ok) throw new Error(`upload ${name}: HTTP ${r.status} ${await r.text()}`);
    return ((await r.json()) as { uri: string }).uri;
  };
  return {
    image: await put(png, "image/png", "sample.png"),
    audio: await put(toneWav(24_000), "audio/wav", "sample.wav"),
    video: await put(readFileSync(mp4), "video/mp4", "sample.mp4"),
  };
}

const MEDIA_INPUT = /^nodetool\.input\.(Image|Audio|Video)Input$/;

/** Params for media inputs the file leaves empty or points at NodeTool's own storage: the sample of that kind. */
function mediaParams(graph: { nodes: { type: string; data?: Record<string, unknown> }[] }, samples: Samples) {
  const params: Record<string, string> = {};
  for (const n of graph.nodes) {
    const kind = MEDIA_INPUT.exec(n.type)?.[1]?.toLowerCase() as keyof Samples | undefined;
    const name = n.data?.name;
    if (!kind || typeof name !== "string" || name === "") continue;
    const uri = (n.data?.value as { uri?: unknown } | undefined)?.uri;
    if (typeof uri !== "string" || uri === "" || uri.startsWith("/api/storage/")) params[name] = samples[kind];
  }
  return params;
}

async function runOne(url: string, file: string, timeoutS: number, samples: Samples): Promise<Row> {
  const started = Date.now();
  const row = (outcome: Outcome, error = ""): Row => ({ file, outcome, ms: Date.now() - started, error });
  const body = readFileSync(file, "utf8");
  const params = mediaParams((JSON.parse(body) as { graph: Parameters<typeof mediaParams>[0] }).graph, samples);
  const saved = await fetch(`${url}/api/workflows`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  const wf = (await saved.json()) as { id?: string; error?: { message?: string } };
  if (!saved.ok || !wf.id) return row("refused", wf.error?.message ?? `HTTP ${saved.status}`);
  const ran = await fetch(`${url}/api/workflows/${encodeURIComponent(wf.id)}/run?wait=true`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ timeout_s: timeoutS, params }),
    signal: AbortSignal.timeout((timeoutS + 15) * 1000),
  }).catch((err: Error) => err);
  if (ran instanceof Error) return row("timeout", ran.message);
  const job = (await ran.json()) as { status?: string; error?: unknown };
  if (!ran.ok) return row("refused", JSON.stringify(job).slice(0, 300));
  if (job.status === "completed") return row("completed");
  const err = typeof job.error === "string" ? job.error : JSON.stringify(job.error ?? job.status);
  return row(/timed? ?out|JOB_ERR_TIMEOUT/i.test(err) ? "timeout" : "failed", err);
}

/** "node X failed: ..." → the part that names the cause, without ids, so failures group. */
const cause = (error: string) =>
  error
    .replace(/[0-9a-f]{8}-[0-9a-f-]{27,}/g, "<id>")
    .replace(/\b\d+(\.\d+)?\b/g, "N")
    .slice(0, 160);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { dir: { type: "string" }, "timeout-s": { type: "string", default: "60" } },
  });
  if (!values.dir) throw new Error("--dir <folder of NodeTool workflow .json files> is required");
  const files = readdirSync(values.dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => join(values.dir!, f));
  const llm = await FakeLlm.start(1);
  llm.followFormats = true;
  const media = await FakeMedia.start();
  const serp = await FakeSerp.start();
  const front = await providerFront(llm, media);
  const provider = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
  const home = mkdtempSync(join(tmpdir(), "nw-gallery-"));
  const up = start("up", process.execPath, [NODEWAY, "up", "--port", "0"], {
    env: {
      NODEWAY_HOME: home,
      OPENAI_API_KEY: FAKE_KEY,
      OPENAI_BASE_URL: `${provider}/v1`,
      ANTHROPIC_API_KEY: FAKE_KEY,
      ANTHROPIC_BASE_URL: provider,
      OLLAMA_HOST: provider,
      SERPAPI_API_KEY: FAKE_SERP_KEY,
      SERPAPI_BASE_URL: serp.url,
      NODEWAY_DEFAULT_MODEL: "openai:gpt-4o-mini",
      NODEWAY_DEFAULT_IMAGE_MODEL: "openai:gpt-image-1",
      NODEWAY_DEFAULT_SPEECH_MODEL: "openai:tts-1",
      NODEWAY_DEFAULT_TRANSCRIPTION_MODEL: "openai:whisper-1",
      NODEWAY_DEFAULT_VIDEO_MODEL: "openai:sora-2",
    },
  });
  try {
    const url = (await up.waitFor(/nodeway is up: (\S+)/, 60_000))[1]!;
    const samples = await uploadSamples(url, home);
    const rows: Row[] = [];
    for (const file of files) {
      const r = await runOne(url, file, Number(values["timeout-s"]), samples);
      rows.push(r);
      console.log(`${r.outcome.padEnd(9)} ${String(r.ms).padStart(6)} ms  ${basename(file)}  ${r.error.slice(0, 200)}`);
    }
    report(rows);
  } finally {
    await up.stop("SIGINT").catch(() => undefined);
    await Promise.all([llm.stop(), media.stop(), serp.stop()]);
    front.close();
    rmSync(home, { recursive: true, force: true });
  }
}

function report(rows: Row[]): void {
  const by = (o: Outcome) => rows.filter((r) => r.outcome === o).length;
  console.log(
    `\n${rows.length} workflows: ${by("completed")} completed, ${by("failed")} failed, ` +
      `${by("refused")} refused, ${by("timeout")} timed out`,
  );
  const groups = new Map<string, string[]>();
  for (const r of rows.filter((x) => x.outcome !== "completed")) {
    const k = `${r.outcome}: ${cause(r.error)}`;
    groups.set(k, [...(groups.get(k) ?? []), basename(r.file, ".json")]);
  }
  for (const [k, names] of [...groups].sort((a, b) => b[1].length - a[1].length))
    console.log(`  ${names.length} × ${k}\n      ${names.join(", ")}`);
  console.log(
    JSON.stringify({
      bench: "gallery",
      metric: "completed",
      ours: by("completed"),
      of: rows.length,
      goal: "completed >= 40 of 69",
      met: by("completed") >= 40,
    }),
  );
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(err.stack ?? err.message);
    killAll();
    process.exit(1);
  },
);
