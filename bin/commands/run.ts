/**
 * `nodeway run`: save the workflow, run it, show it live (resuming by itself when the connection drops), and on
 * Ctrl-C ask whether to cancel the job; a second Ctrl-C cancels it.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, extname, join } from "node:path";
import { MEDIA_TYPES, extensionOf } from "../../protocol/index.js";
import type { JobHandle, JobOutcome, NodewayClient } from "../../client/index.js";
import { apiToken, clientOf, errorLine, fail, flag, flagOn, gatewayUrl, parseCommand } from "./common.js";
import { displayFor, type Display } from "./render.js";

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
  const client = clientOf(args);
  const { id, wf } = readWorkflow(file);
  const params = await runParams(args.flags.get("param") ?? [], client, quiet);
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
  await fetchAssets(outputs, { url: gatewayUrl(args), token: apiToken(args) }, flag(args, "save"));
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

/** The workflow in `file` and its id; a bare graph (`nodes`, `edges`) is wrapped as one. */
function readWorkflow(file: string): { id: string; wf: Record<string, unknown> } {
  let wf: Record<string, unknown>;
  try {
    wf = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (err) {
    fail(`cannot read ${file}: ${(err as Error).message}`);
  }
  if (!wf.graph && Array.isArray(wf.nodes))
    wf = { name: basename(file, ".json"), graph: { nodes: wf.nodes, edges: wf.edges ?? [] } };
  const id = (typeof wf.id === "string" && wf.id) || basename(file, ".json").replace(/[^\w-]/g, "-");
  return { id, wf };
}

/** The run's params from `--param k=v`; `k=@file` uploads the file and gives its asset:// reference. */
async function runParams(
  given: readonly string[],
  client: NodewayClient,
  quiet: boolean,
): Promise<Record<string, string>> {
  const params: Record<string, string> = {};
  for (const p of given) {
    const eq = p.indexOf("=");
    if (eq <= 0) fail(`--param needs k=v, got "${p}"`);
    const value = p.slice(eq + 1);
    params[p.slice(0, eq)] = value.startsWith("@") ? await uploadAsset(value.slice(1), client, quiet) : value;
  }
  return params;
}

async function uploadAsset(path: string, client: NodewayClient, quiet: boolean): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    fail(`cannot read ${path}: ${(err as Error).message}`);
  }
  const type = MEDIA_TYPES[extname(path).slice(1).toLowerCase()] ?? "application/octet-stream";
  const a = await client
    .uploadAsset(new Uint8Array(bytes), basename(path), type)
    .catch((err: unknown) => fail(`upload of ${path} refused: ${errorLine(err)}`, 1));
  if (!quiet) process.stderr.write(`uploaded ${path} as ${a.uri}\n`);
  return a.uri;
}

/** Assets among the outputs get the URL to fetch them from; with `--save DIR`, they are fetched into it. */
async function fetchAssets(
  outputs: Record<string, unknown>,
  gw: { url: string; token: string | undefined },
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
