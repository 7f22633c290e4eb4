/**
 * The typed client (`client/`) against a real stack: a run watched through a loopback proxy that is cut mid-stream
 * gets every event once, in order, and every token; `watch(afterSeq)` gets exactly what follows; cancel, the REST
 * listings, the token by subprotocol, and errors with the gateway's codes.
 */
import t from "tap";
import { startGateway } from "../../gateway/index.js";
import { NodewayClient, type JobHandle } from "../../client/index.js";
import type { JobEvent } from "../../protocol/index.js";
import { check } from "../helpers/check.js";
import { tokensWorkflow } from "../helpers/clients.js";
import { History, describeProblems, type ClientLog } from "../helpers/history.js";
import { startStack } from "../helpers/stack.js";
import { CutProxy } from "./cut-proxy.js";

const s = await startStack(t);
const fast = { initialMs: 50, maxMs: 400 };

function client(url: string, opts: Partial<ConstructorParameters<typeof NodewayClient>[0]> = {}): NodewayClient {
  const c = new NodewayClient({ url, reconnect: fast, ...opts });
  t.teardown(() => c.close());
  return c;
}

/** Reads a handle to its end into `log` (and `got`), from the events iterator. */
function collect(h: JobHandle, log: ClientLog, got: JobEvent[] = []): { got: JobEvent[]; read: Promise<void> } {
  const read = (async () => {
    for await (const ev of h.events()) {
      got.push(ev);
      log.record(ev);
    }
  })();
  return { got, read };
}

/** For a failure message: whether a fresh watch after the witness's last seq gets events (a stalled socket) or not. */
async function whyStalled(jobId: string, got: JobEvent[]): Promise<string> {
  const last = got.at(-1)?.seq ?? 0;
  const fresh = client(s.url);
  const more: JobEvent[] = [];
  fresh.watch(jobId, { afterSeq: last }).on((ev) => more.push(ev));
  const record = await fresh.job(jobId);
  await check(() => more.length > 0, 5_000).catch(() => undefined);
  return `witness has ${got.length} events to seq ${last}; job ${record.status}; a fresh watch after it got ${more.length}`;
}

const tokensOf = (evs: JobEvent[]) => evs.flatMap((e) => (e.type === "chunk" && e.content ? [String(e.content)] : []));
const allTokens = (n: number) => Array.from({ length: n }, (_, i) => `tok${i} `).join("");

for (const format of ["msgpack", "json"] as const) {
  t.test(`client - a run through a connection cut twice gets every event once, in order (${format})`, async (t) => {
    const n = 400;
    const proxy = await CutProxy.start(s.url);
    t.teardown(() => proxy.stop());
    const c = client(proxy.url, { format });
    const states: string[] = [];
    c.on("state", (st) => states.push(st));
    await c.connect();
    await c.saveWorkflow(`tok-${format}`, tokensWorkflow(n, 100));
    const h = new History().tokens(`tok-${format}`, n);
    const h1 = await c.run({ workflowId: `tok-${format}` });
    const mine = collect(h1, h.client("through-proxy"));
    // A second client straight to the gateway: proof that events flowed while the first was cut off (unless the job
    // ended first, on a loaded machine).
    const witness = client(s.url);
    const seen = collect(witness.watch(h1.jobId), h.client("witness"));
    const chunks = (evs: JobEvent[]) => evs.filter((e) => e.type === "chunk").length;
    for (const at of [40, 140]) {
      await check(() => chunks(mine.got) >= at, 20_000, { name: `${at} chunks before the cut` });
      await proxy.cut();
      await check(() => c.state === "connecting", 5_000, { name: "the client notices" });
      const before = chunks(mine.got);
      await check(() => chunks(seen.got) >= Math.min(before + 30, n), 20_000, {
        name: "the job goes on meanwhile",
      }).catch(async (err: Error) => {
        throw new Error(`${err.message}; ${await whyStalled(h1.jobId, seen.got)}`);
      });
      await proxy.restore();
      // Reopened before the next cut: a cut while still reconnecting would be no drop at all.
      await check(() => c.state === "open", 10_000, { name: "the client reconnects" });
    }
    const end = await h1.done;
    await mine.read;
    await seen.read;
    t.equal(end.status, "completed");
    t.equal(tokensOf(mine.got).join(""), allTokens(n), "every token once, in order, across both cuts");
    const seqs = mine.got.map((e) => e.seq!);
    t.ok(
      seqs.every((q, i) => i === 0 || q > seqs[i - 1]!),
      "seqs strictly increase",
    );
    t.same(
      states.filter((x, i) => x !== states[i - 1]),
      ["connecting", "open", "connecting", "open", "connecting", "open"],
      "state: connecting → open, twice dropped and reopened",
    );
    const report = await h.check(s.ns.url);
    t.ok(report.ok, describeProblems(report.problems));
    t.equal(h1.lastSeq, seqs.at(-1), "lastSeq is the last event's seq");
  });
}

t.test(
  "client - a run whose answer was lost with its connection is sent again and finds its job, no twin",
  async (t) => {
    const n = 60;
    const proxy = await CutProxy.start(s.url);
    t.teardown(() => proxy.stop());
    const c = client(proxy.url, { format: "msgpack" });
    await c.connect();
    await c.saveWorkflow("tok-resend", tokensWorkflow(n, 100));
    proxy.mute(); // the run_job reaches the gateway; its answer and events never come back
    const running = c.run({ workflowId: "tok-resend" });
    const direct = client(s.url);
    const listed = async () => {
      const { jobs } = await direct.jobs({ workflowId: "tok-resend" });
      return jobs.length > 0 ? jobs : null;
    };
    const made = await check(listed, 20_000, { name: "the first send made a job" });
    await proxy.cut();
    await proxy.restore();
    const h = await running;
    t.equal(h.jobId, made[0]!.id, "run() answers with the job the first send made");
    const got: JobEvent[] = [];
    h.on((ev) => got.push(ev));
    const end = await h.done;
    t.equal(end.status, "completed");
    t.equal(tokensOf(got).join(""), allTokens(n), "every token once, in order, from the first");
    t.equal((await direct.jobs({ workflowId: "tok-resend" })).jobs.length, 1, "one job ran, not two");
  },
);

t.test("client - watch(afterSeq) gets exactly the events after that seq; listeners get what came before", async (t) => {
  const c = client(s.url, { format: "json" });
  await c.saveWorkflow("tok-short", tokensWorkflow(20, 0));
  const run = await c.run({ workflowId: "tok-short" });
  const all: JobEvent[] = [];
  run.on((ev) => all.push(ev));
  await run.done;
  t.ok(all.length > 20, "the listener got the run's events, those before it subscribed too");
  const mid = all[10]!.seq!;
  const later = client(s.url);
  const tail: JobEvent[] = [];
  const w = later.watch(run.jobId, { afterSeq: mid });
  const headers: number[] = [];
  w.onResumed((hd) => headers.push(hd.replay_count));
  for await (const ev of w.events()) tail.push(ev);
  t.same(
    tail.map((e) => e.seq),
    all.slice(11).map((e) => e.seq),
    "the events after the seq, no more",
  );
  t.same(headers, [all.length - 11], "one job_resumed header, counting them");
  t.equal((await w.done).status, "completed");
});

t.test("client - cancel, listings and assets over REST", async (t) => {
  const c = client(s.url);
  await c.saveWorkflow("tok-slow", tokensWorkflow(2000, 50));
  const run = await c.run({ workflowId: "tok-slow" });
  let chunks = 0;
  run.on((ev) => void (ev.type === "chunk" && chunks++));
  await check(() => chunks >= 3, 20_000, { name: "the job streams" });
  const ans = await run.cancel();
  t.equal(ans.job_id, run.jobId);
  const end = await run.done;
  t.equal(end.status, "cancelled", "the watched job ends cancelled");
  t.equal((await c.job(run.jobId)).status, "cancelled");
  const listed = await c.jobs({ workflowId: "tok-slow" });
  t.ok(
    listed.jobs.some((j) => j.id === run.jobId),
    "jobs() lists it",
  );
  // Listings read the gateway's view of the records, which follows the record a moment after the terminal event.
  const byStatus = await check(
    async () => ((await c.jobs({ status: "cancelled", limit: 1 })).jobs.length === 1 ? true : null),
    5_000,
    { name: "the cancelled job listed by status" },
  );
  t.ok(byStatus, "filters and limits");
  const agents = await c.agents();
  t.equal(agents.length, 1, "one live agent");
  t.equal(agents[0]!.id, s.agents[0]!.id);
  const wfs = await c.workflows();
  t.ok(
    wfs.some((w) => w.id === "tok-slow"),
    "workflows() lists the saved one",
  );
  t.equal((await c.workflow("tok-slow")).id, "tok-slow");
  const bytes = new TextEncoder().encode("hello asset");
  const a = await c.uploadAsset(bytes, "hello.txt", "text/plain");
  t.match(a.uri, /^asset:\/\//);
  const back = await fetch(c.assetUrl(a.id));
  t.equal(await back.text(), "hello asset", "the asset's bytes come back");
});

t.test("client - errors carry the gateway's codes; an unreachable gateway is said at connect", async (t) => {
  const c = client(s.url);
  await t.rejects(c.run({ workflowId: "no-such-workflow" }), { code: "GW_ERR_NOT_FOUND" }, "run of a missing workflow");
  await t.rejects(c.watch("01JNOSUCHJOB0000000000000A").done, { code: "GW_ERR_NOT_FOUND" }, "watch of a missing job");
  await t.rejects(c.job("01JNOSUCHJOB0000000000000A"), { code: "GW_ERR_NOT_FOUND", status: 404 });
  const proxy = await CutProxy.start(s.url);
  await proxy.stop();
  const away = client(proxy.url);
  await t.rejects(away.connect(), { code: "CLIENT_ERR_UNREACHABLE" });
  t.equal(away.state, "closed");
});

t.test("client - the token goes as a subprotocol; without it the gateway refuses", async (t) => {
  const token = "client-test-token-aaaaaaaaaaaaaaaaaaaaaa";
  const gw = await startGateway({ natsUrl: s.ns.url, port: 0, apiTokens: [token] });
  t.teardown(() => gw.stop());
  await t.rejects(client(gw.url).connect(), { code: "CLIENT_ERR_UNREACHABLE" }, "no token: refused");
  await t.rejects(client(gw.url).agents(), { code: "GW_ERR_UNAUTHORIZED", status: 401 });
  const c = client(gw.url, { token });
  await c.connect();
  t.equal(c.state, "open", "with the token: open");
  const run = await c.run({ graph: tokensWorkflow(3, 0).graph });
  t.equal((await run.done).status, "completed", "and runs");
});

t.test(
  "client - a command over the gateway's frame size is refused before it is sent, with a clear error",
  async (t) => {
    const big = { blob: "x".repeat(1_500_000) };
    const c = client(s.url);
    await c.connect();
    await t.rejects(c.run({ workflowId: "no-such-workflow", params: big }), { code: "CLIENT_ERR_TOO_LARGE" });
    t.equal(c.state, "open", "the socket stays open: nothing was sent");
    await t.rejects(c.run({ workflowId: "no-such-workflow" }), { code: "GW_ERR_NOT_FOUND" }, "and serves the next");
    // A client told a larger limit than the gateway's sends it: the gateway closes with 1009 and says why.
    const lax = client(s.url, { maxFrameBytes: 4 * 1024 * 1024 });
    await lax.connect();
    const err = await lax.run({ workflowId: "no-such-workflow", params: big }).catch((e: Error) => e);
    t.match(err, { code: "CLIENT_ERR_DISCONNECTED", message: /1009/ }, "the gateway's close code reaches the caller");
    await t.rejects(lax.run({ workflowId: "no-such-workflow" }), { code: "GW_ERR_NOT_FOUND" }, "it reconnects");
  },
);
