/**
 * `nodeway run`: save the workflow, run it, show it live (resuming by itself when the connection drops), and on
 * Ctrl-C ask whether to cancel the job; a second Ctrl-C cancels it.
 */
import { createReadStream, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { basename, extname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { MEDIA_TYPES, extensionOf, withoutBom } from "../../protocol/index.js";
import type { JobHandle, JobOutcome, NodewayClient } from "../../client/index.js";
import { answerLine, apiToken, clientOf, errorLine, fail, flag, flagOn, gatewayUrl, parseCommand } from "./common.js";
import { displayFor, type Display } from "./render.js";
import { jsonKind } from "../settings.js";

export const RUN_USAGE =
  "usage: nodeway run <workflow.json> [--param k=v …] [--param k=@file …] [--save DIR] [--timeout-s N] [--json] " +
  "[--quiet] [--gateway <url>] [--token T]";

const RUN_FLAGS = {
  switches: new Set(["quiet", "json"]),
  values: new Set(["param", "gateway", "timeout-s", "token", "save"]),
  positionals: true,
};

export async function cmdRun(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, RUN_FLAGS);
  const file = args.positional[0];
  if (!file) fail(RUN_USAGE);
  const quiet = flagOn(args, "quiet");
  const json = flagOn(args, "json");
  const { id, wf } = readWorkflow(file);
  const gw = { url: gatewayUrl(args), token: apiToken(args) };
  const client = clientOf(args);
  const params = await runParams(args.flags.get("param") ?? [], gw, quiet);
  await client.saveWorkflow(id, wf).catch((err: unknown) => fail(`workflow rejected: ${errorLine(err)}`, 1));
  const timeout = flag(args, "timeout-s");
  const handle = await client
    .run({ workflowId: id, params, ...(timeout ? { timeoutS: Number(timeout) } : {}) })
    .catch((err: unknown) => fail(`run rejected: ${errorLine(err)}`, 1));
  const display = displayFor({ json, quiet });
  showConnection(client, handle, display);
  const interrupt = askOnInterrupt(handle, display);
  handle.on((ev) => display.event(ev));
  const end = await handle.done.catch((err: unknown) => {
    display.finish();
    return fail(`lost job ${handle.jobId}: ${errorLine(err)}`, 1);
  });
  display.finish();
  const outputs = (end.outputs ?? {}) as Record<string, unknown>;
  await fetchAssets(outputs, gw, flag(args, "save"));
  printResult(end, outputs, json);
  client.close();
  process.exit(end.status === "completed" ? 0 : interrupt.cancelled() ? 130 : 1);
}

function printResult(end: JobOutcome, outputs: Record<string, unknown>, json: boolean): void {
  const result = { status: end.status, job_id: end.job_id, outputs, ...(end.error ? { error: end.error } : {}) };
  process.stdout.write(
    json ? `${JSON.stringify({ type: "result", ...result })}\n` : `${JSON.stringify(result, null, 2)}\n`,
  );
}

/** Says when the connection drops and when the run is resumed (from which seq). */
function showConnection(client: NodewayClient, handle: JobHandle, display: Display): void {
  let lost = false;
  client.on("state", (s) => {
    if (s === "connecting" && !lost) {
      lost = true;
      display.note(`connection to the gateway lost; reconnecting (job ${handle.jobId} keeps running)`);
    } else if (s === "open" && lost) {
      lost = false;
      display.note(`reconnected; resuming job ${handle.jobId} after seq ${handle.lastSeq}`);
    }
  });
}

/**
 * Ctrl-C asks whether to cancel the job (y: cancel, d: leave it running and exit, Enter: keep watching); a second
 * Ctrl-C cancels it, a third exits at once.
 */
function askOnInterrupt(handle: JobHandle, display: Display): { cancelled: () => boolean } {
  let presses = 0;
  let cancelling = false;
  const cancel = () => {
    if (cancelling) return;
    cancelling = true;
    display.prompt(null);
    display.note(`cancelling job ${handle.jobId}…`);
    handle.cancel().catch((err: unknown) => display.note(`cancel failed: ${errorLine(err)}`));
  };
  const answer = (text: string) => {
    const a = text.trim().toLowerCase();
    presses = 0;
    if (a === "y" || a === "yes") return cancel();
    display.prompt(null);
    if (a !== "d") return;
    display.note(`job ${handle.jobId} keeps running; follow it with: nodeway logs ${handle.jobId} --follow`);
    process.exit(130);
  };
  process.on("SIGINT", () => {
    presses++;
    if (presses >= 3 || (cancelling && presses >= 2)) process.exit(130);
    if (presses === 2 || cancelling) return cancel();
    const tty = process.stdin.isTTY === true;
    display.prompt(
      tty
        ? `Cancel job ${handle.jobId}? [y]es / [d]etach / Enter: keep watching (Ctrl-C again cancels) `
        : `Ctrl-C again cancels job ${handle.jobId}`,
    );
    if (tty) readAnswer(answer);
  });
  return { cancelled: () => cancelling };
}

/** One line from the terminal, without keeping the process alive once answered. */
function readAnswer(then: (line: string) => void): void {
  const stdin = process.stdin;
  stdin.setEncoding("utf8");
  stdin.resume();
  stdin.once("data", (d: string) => {
    stdin.pause();
    then(d);
  });
}

/** The workflow in `file` and its id; a bare graph (`nodes`, `edges`) is wrapped as one. Anything else exits 2. */
function readWorkflow(file: string): { id: string; wf: Record<string, unknown> } {
  let value: unknown;
  try {
    value = JSON.parse(withoutBom(readFileSync(file, "utf8")));
  } catch (err) {
    const why = (err as Error).message;
    fail(err instanceof SyntaxError ? `${file}: not valid JSON (${why})` : `cannot read ${file}: ${why}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value))
    fail(`${file}: a workflow is a JSON object, got ${jsonKind(value)}`);
  let wf = value as Record<string, unknown>;
  if (wf.graph === undefined && !Array.isArray(wf.nodes))
    fail(
      `${file}: no workflow in it: give {"graph": {"nodes": […], "edges": […]}}, or the bare graph {"nodes": […], "edges": […]}`,
    );
  if (wf.graph === undefined) wf = { name: basename(file, ".json"), graph: { nodes: wf.nodes, edges: wf.edges ?? [] } };
  const id = (typeof wf.id === "string" && wf.id) || basename(file, ".json").replace(/[^\w-]/g, "-");
  return { id, wf };
}

/** Where the CLI's own requests go (uploads, downloads): the gateway's URL and its token. */
interface GatewayAccess {
  url: string;
  token: string | undefined;
}

/** The run's params from `--param k=v`; `k=@file` uploads the file and gives its asset:// reference. */
async function runParams(given: readonly string[], gw: GatewayAccess, quiet: boolean): Promise<Record<string, string>> {
  const params: Record<string, string> = {};
  for (const p of given) {
    const eq = p.indexOf("=");
    if (eq <= 0) fail(`--param needs k=v, got "${p}"`);
    const value = p.slice(eq + 1);
    params[p.slice(0, eq)] = value.startsWith("@") ? await uploadAsset(value.slice(1), gw, quiet) : value;
  }
  return params;
}

/** The size of the regular file at `path`; anything else (missing, a directory, a device, empty) exits 2. */
function uploadSize(path: string): number {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) fail(`cannot upload ${path}: not a regular file`);
    size = st.size;
  } catch (err) {
    fail(`cannot read ${path}: ${(err as Error).message}`);
  }
  if (size === 0) fail(`cannot upload ${path}: it is empty`);
  return size;
}

async function uploadAsset(path: string, gw: GatewayAccess, quiet: boolean): Promise<string> {
  const size = uploadSize(path);
  const type = MEDIA_TYPES[extname(path).slice(1).toLowerCase()] ?? "application/octet-stream";
  const refused = (why: string) => fail(`upload of ${path} (${size} bytes) refused: ${why}`, 1);
  const answer = await postFile(gw, path, size, type).catch((err: unknown) => {
    const code = (err as { code?: string }).code;
    const how =
      code === "ECONNRESET" || code === "EPIPE"
        ? `the gateway at ${gw.url} closed the connection without an answer`
        : `cannot reach the gateway at ${gw.url}`;
    return fail(`upload of ${path} (${size} bytes) failed: ${how}: ${errorLine(err)}`, 1);
  });
  if (answer.status < 200 || answer.status > 299) return refused(answerLine(answer.status, answer.body));
  let a: { uri?: unknown };
  try {
    a = JSON.parse(answer.body) as { uri?: unknown };
  } catch {
    return refused(`the answer (HTTP ${answer.status}) is not JSON`);
  }
  if (typeof a?.uri !== "string") return refused(`the answer (HTTP ${answer.status}) has no asset uri`);
  if (!quiet) process.stderr.write(`uploaded ${path} as ${a.uri}\n`);
  return a.uri;
}

/** Most of an answer's body kept: enough for any error the gateway or its proxy sends. */
const ANSWER_MAX_BYTES = 64 * 1024;
/** How long the body waits for `100 Continue`; a server that ignores `Expect` gets it then (curl waits 1 s too). */
const CONTINUE_WAIT_MS = 1_000;

/**
 * POSTs the file to the gateway's `/api/assets`, streamed from disk with its length: `fetch` holds a request body
 * in memory whole (a 300 MB file took the CLI past 1.3 GB). The body waits for `100 Continue`, so a refusal of
 * its length (413) comes before any of it is sent; an answer before it is all sent ends the upload.
 */
function postFile(
  gw: GatewayAccess,
  path: string,
  size: number,
  type: string,
): Promise<{ status: number; body: string }> {
  const url = new URL(`${gw.url}/api/assets?${new URLSearchParams({ name: basename(path) })}`);
  const headers = {
    accept: "application/json",
    "content-type": type,
    "content-length": String(size),
    expect: "100-continue",
    ...(gw.token ? { authorization: `Bearer ${gw.token}` } : {}),
  };
  return new Promise((resolve, reject) => {
    const req = (url.protocol === "https:" ? httpsRequest : httpRequest)(url, { method: "POST", headers });
    let answered = false;
    let sending = false;
    const send = () => {
      if (sending || answered) return;
      sending = true;
      // A write cut off by an early answer is no failure (the answer says why); one with no answer rejects below.
      pipeline(createReadStream(path), req).catch((err: unknown) => {
        if (!answered) req.destroy(err as Error);
      });
    };
    const waiting = setTimeout(send, CONTINUE_WAIT_MS);
    req.once("continue", send);
    req.once("response", (res) => {
      answered = true;
      clearTimeout(waiting);
      readBody(res).then((body) => {
        resolve({ status: res.statusCode ?? 0, body });
        req.destroy(); // the rest of the file is not wanted after an early answer
      }, reject);
    });
    req.on("error", (err) => {
      clearTimeout(waiting);
      if (!answered) reject(err);
    });
  });
}

/** The answer's body as text, at most ANSWER_MAX_BYTES of it. */
async function readBody(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let kept = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    if (kept >= ANSWER_MAX_BYTES) continue;
    chunks.push(c);
    kept += c.length;
  }
  return Buffer.concat(chunks).toString("utf8").slice(0, ANSWER_MAX_BYTES);
}

/** Assets among the outputs get the URL to fetch them from; with `--save DIR`, they are fetched into it. */
async function fetchAssets(
  outputs: Record<string, unknown>,
  gw: GatewayAccess,
  saveDir: string | undefined,
): Promise<void> {
  const refs: { asset_id: string; content_type: string; url?: string; saved?: string }[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (typeof o.asset_id === "string" && typeof o.uri === "string" && o.uri.startsWith("asset://"))
        refs.push(o as unknown as (typeof refs)[number]);
      else Object.values(o).forEach(walk);
    }
  };
  walk(outputs);
  for (const r of refs) {
    r.url = `${gw.url}/api/assets/${r.asset_id}/content`;
    if (!saveDir) continue;
    const got = await fetch(r.url, { headers: gw.token ? { authorization: `Bearer ${gw.token}` } : {} }).catch(
      (err: unknown) => fail(`download of ${r.url} failed: ${errorLine(err)}`, 1),
    );
    if (!got.ok) fail(`download of ${r.url} failed: ${got.status} ${await got.text()}`, 1);
    mkdirSync(saveDir, { recursive: true });
    r.saved = join(saveDir, `${r.asset_id}.${extensionOf(r.content_type)}`);
    writeFileSync(r.saved, Buffer.from(await got.arrayBuffer()));
  }
}
