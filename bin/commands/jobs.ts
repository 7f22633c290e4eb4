/** `nodeway jobs`, `logs`, `agents` and `cancel`: the fleet and its jobs from a terminal, or as JSON for scripts. */
import type { AgentInfo, JobEvent, JobHandle, JobRecord } from "../../client/index.js";
import { clientOf, errorLine, fail, flag, flagOn, parseCommand, printJson } from "./common.js";
import { describe } from "./render.js";

const flags = (switches: string[], values: string[], positionals: boolean) => ({
  switches: new Set(["json", ...switches]),
  values: new Set(["gateway", "token", ...values]),
  positionals,
});

/** A table with columns padded to their widest cell. */
function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return `${[line(head), ...rows.map(line)].join("\n")}\n`;
}

function durationOf(j: JobRecord): string {
  if (!j.started_at) return "";
  const ms = (j.finished_at ? Date.parse(j.finished_at) : Date.now()) - Date.parse(j.started_at);
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 1000)}s`;
}

/** `nodeway jobs [--status S] [--workflow W] [--limit N] [--cursor C] [--json]`: newest first. */
export async function cmdJobs(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, flags([], ["status", "workflow", "limit", "cursor"], false));
  const limit = flag(args, "limit");
  const q = {
    ...(flag(args, "status") ? { status: flag(args, "status") } : {}),
    ...(flag(args, "workflow") ? { workflowId: flag(args, "workflow") } : {}),
    ...(flag(args, "cursor") ? { cursor: flag(args, "cursor") } : {}),
    ...(limit ? { limit: Number(limit) } : {}),
  };
  const page = await clientOf(args)
    .jobs(q)
    .catch((err: unknown) => fail(errorLine(err), 1));
  if (flagOn(args, "json")) return printJson(page);
  const rows = page.jobs.map((j) => [
    j.id,
    j.status,
    j.workflow_id,
    String(j.attempt),
    j.agent_id ?? "",
    j.created_at,
    durationOf(j),
  ]);
  process.stdout.write(table(["JOB", "STATUS", "WORKFLOW", "ATTEMPT", "AGENT", "CREATED", "DURATION"], rows));
  if (page.next) process.stdout.write(`more: nodeway jobs --cursor ${page.next}\n`);
}

/** `nodeway agents [--json]`: the live agents. */
export async function cmdAgents(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, flags([], [], false));
  const agents = await clientOf(args)
    .agents()
    .catch((err: unknown) => fail(errorLine(err), 1));
  if (flagOn(args, "json")) return printJson(agents);
  const rows = agents.map((a: AgentInfo) => [
    a.id,
    a.state,
    a.pools.join(","),
    `${a.running_jobs.length}/${a.capabilities.max_jobs}`,
    String(a.capabilities.gpus.length),
    a.heartbeat_at,
  ]);
  process.stdout.write(table(["AGENT", "STATE", "POOLS", "JOBS", "GPUS", "HEARTBEAT"], rows));
}

/** `nodeway nodes [--json]`: the node types the live agents offer, and how many per namespace. */
export async function cmdNodes(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, flags([], [], false));
  const nodes = await clientOf(args)
    .nodes()
    .catch((err: unknown) => fail(errorLine(err), 1));
  if (flagOn(args, "json")) return printJson(nodes);
  const perNamespace = new Map<string, number>();
  for (const n of nodes) {
    const ns = n.node_type.slice(0, n.node_type.lastIndexOf("."));
    perNamespace.set(ns, (perNamespace.get(ns) ?? 0) + 1);
  }
  process.stdout.write(
    table(
      ["NODE TYPE", "TITLE"],
      nodes.map((n) => [n.node_type, n.title]),
    ),
  );
  process.stdout.write(
    `\n${table(
      ["NAMESPACE", "TYPES"],
      [...perNamespace].map(([ns, k]) => [ns, String(k)]),
    )}`,
  );
  process.stdout.write(`${nodes.length} node types\n`);
}

/** `nodeway cancel <job> [--json]`. */
export async function cmdCancel(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, flags([], [], true));
  const jobId = args.positional[0];
  if (!jobId || args.positional.length > 1) fail("usage: nodeway cancel <job> [--json] [--gateway <url>] [--token T]");
  const r = await clientOf(args)
    .cancel(jobId)
    .catch((err: unknown) => fail(errorLine(err), 1));
  if (flagOn(args, "json")) return printJson(r);
  process.stdout.write(`job ${r.job_id}: ${r.message} (status ${r.status})\n`);
}

/**
 * `nodeway logs <job> [--follow] [--after SEQ] [--json]`: the job's events stored after `SEQ`; with `--follow`,
 * then live ones to the job's end, resuming after every dropped connection.
 */
export async function cmdLogs(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, flags(["follow"], ["after"], true));
  const jobId = args.positional[0];
  if (!jobId || args.positional.length > 1)
    fail("usage: nodeway logs <job> [--follow] [--after SEQ] [--json] [--gateway <url>] [--token T]");
  const after = Number(flag(args, "after") ?? "0");
  if (!Number.isInteger(after) || after < 0)
    fail(`--after must be a seq (an integer ≥ 0), got "${flag(args, "after")}"`);
  const json = flagOn(args, "json");
  const client = clientOf(args);
  const h = client.watch(jobId, { afterSeq: after });
  const print = (ev: JobEvent) => process.stdout.write(json ? `${JSON.stringify(ev)}\n` : `${describe(ev)}\n`);
  if (!flagOn(args, "follow")) await stored(h, print);
  else {
    h.on(print);
    client.on("state", (s) => s === "connecting" && process.stderr.write("connection lost; reconnecting…\n"));
    await h.done.catch((err: unknown) => fail(errorLine(err), 1));
  }
  client.close();
  process.exit(0);
}

/** Prints what the first `job_resumed` header says is stored, then stops. */
function stored(h: JobHandle, print: (ev: JobEvent) => void): Promise<void> {
  return new Promise((resolve) => {
    let left = -1;
    const offResumed = h.onResumed((hd) => {
      offResumed();
      left = hd.replay_count;
      if (left === 0) resolve();
    });
    h.on((ev) => {
      if (left === 0) return;
      print(ev);
      if (--left === 0) resolve();
    });
    // Once resolved, the caller closes the client: the rejection that follows is not a failure.
    h.done.then(
      () => resolve(),
      (err: unknown) => left !== 0 && fail(errorLine(err), 1),
    );
  });
}
