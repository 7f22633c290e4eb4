/**
 * The typed client against gateways that misbehave (a scripted fake on loopback): commands, upgrades and REST calls
 * have deadlines; a silent connection is found dead by the heartbeat and resumed; unreadable frames back off and end
 * in a coded error; answers without what a command needs, bodies cut short or too large, and a `seq` that is not a
 * count are coded errors, never a hang or a TypeError.
 */
import { createServer, type Socket } from "node:net";
import t, { type Test } from "tap";
import { NodewayClient, type ClientOptions, type JobEvent } from "../../client/index.js";
import { check } from "../helpers/check.js";
import { type Command, type FakeConn, FakeGateway, pong } from "./fake-gateway.js";

const fast = { initialMs: 50, maxMs: 400 };

async function gateway(t: Test): Promise<FakeGateway> {
  const g = await FakeGateway.start();
  t.teardown(() => g.stop());
  return g;
}

function client(t: Test, url: string, opts: Partial<ClientOptions> = {}): NodewayClient {
  const c = new NodewayClient({ url, format: "json", reconnect: fast, ...opts });
  t.teardown(() => c.close());
  return c;
}

/** `p`'s outcome, or a failure naming `what` when it has not settled within `ms` (a hang is the bug). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The error `p` rejects with (a resolve is a failure). */
async function rejection(
  p: Promise<unknown>,
  ms: number,
  what: string,
): Promise<Error & { code?: string; status?: number }> {
  const v = await within(
    p.then(
      (ok) => ({ ok }),
      (err: Error) => ({ err }),
    ),
    ms,
    what,
  );
  if ("err" in v) return v.err;
  throw new Error(`${what}: resolved with ${JSON.stringify(v.ok)}`);
}

const update = (seq: number, status = "completed") => ({
  type: "job_update",
  job_id: "j1",
  workflow_id: "w",
  status,
  attempt: 1,
  seq,
});
const log = (seq: number) => ({ type: "log", job_id: "j1", seq, level: "info", message: `line ${seq}` });

/** Answers `reconnect_job` with the header and the events of `history` after its `last_seq`. */
function resumeFrom(history: object[], cmd: Command, c: FakeConn): void {
  const after = Number(cmd.data?.last_seq ?? 0);
  const rest = history.filter((e) => (e as { seq: number }).seq > after);
  c.send({
    type: "job_resumed",
    job_id: "j1",
    workflow_id: "w",
    status: "running",
    last_seq: after,
    replay_count: rest.length,
  });
  for (const e of rest) c.send(e);
}

t.test("client - a command the gateway never answers rejects with CLIENT_ERR_TIMEOUT", async (t) => {
  const g = await gateway(t);
  // Alive (pongs, and answers to other request ids) but never answering the command itself.
  g.onCommand = (cmd, c) => {
    if (cmd.command === "ping") return pong(cmd, c);
    if (cmd.data?.workflow_id === "other-id")
      c.send({ type: "rpc_response", command: "run_job", request_id: "nope", result: { job_id: "j1" } });
  };
  const c = client(t, g.url, { requestTimeoutMs: 300, heartbeatMs: 100 });
  await c.connect();
  for (const workflowId of ["silent", "other-id"]) {
    const t0 = performance.now();
    const err = await rejection(c.run({ workflowId }), 5_000, `run (${workflowId})`);
    t.match(err, { code: "CLIENT_ERR_TIMEOUT", message: /"run_job" was not answered within 300 ms/ }, workflowId);
    t.ok(performance.now() - t0 >= 290, "not before the deadline");
  }
  t.equal(c.state, "open", "the connection stays: it answers pings");
  t.equal(g.conns.length, 1);
});

t.test("client - a command waiting for a socket that does not reopen rejects with CLIENT_ERR_TIMEOUT", async (t) => {
  const g = await gateway(t);
  g.onCommand = (cmd, c) => cmd.command === "ping" && pong(cmd, c);
  const c = client(t, g.url, { requestTimeoutMs: 300 });
  await c.connect();
  await g.stop();
  await check(() => c.state === "connecting", 5_000, { name: "the client notices the drop" });
  const err = await rejection(c.run({ workflowId: "w" }), 5_000, "run while reconnecting");
  t.match(err, { code: "CLIENT_ERR_TIMEOUT", message: /was not sent: the connection did not open within 300 ms/ });
  const stop = await rejection(c.stopChat("th1"), 5_000, "stopChat while reconnecting");
  t.match(stop, { code: "CLIENT_ERR_TIMEOUT", message: /"stop" was not sent/ });
});

t.test("client - a WebSocket upgrade nobody answers fails connect() by the deadline", async (t) => {
  // Takes the TCP connection and never says a word: a stalled proxy, a half-dead path.
  const held = new Set<Socket>();
  const server = createServer((s) => void held.add(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  const c = client(t, `http://127.0.0.1:${(server.address() as { port: number }).port}`, { requestTimeoutMs: 300 });
  const err = await rejection(c.connect(), 5_000, "connect");
  t.match(err, { code: "CLIENT_ERR_UNREACHABLE", message: /no answer within 300 ms/ });
  t.equal(c.state, "closed");
});

t.test(
  "client - a connection gone silent is found dead by the heartbeat; the watch reconnects and resumes",
  async (t) => {
    const g = await gateway(t);
    const history = [log(1), log(2), update(3)];
    /** Connections that went dark: a relay that dropped them without a word (TCP stays open, nothing passes). */
    const dark = new Set<number>();
    g.onCommand = (cmd, c) => {
      if (dark.has(c.n)) return;
      if (cmd.command === "ping") return pong(cmd, c);
      if (cmd.command !== "reconnect_job") return;
      if (c.n > 1) return resumeFrom(history, cmd, c);
      resumeFrom(history.slice(0, 2), cmd, c);
      dark.add(c.n);
    };
    const c = client(t, g.url, { heartbeatMs: 200 });
    const states: string[] = [];
    c.on("state", (s) => states.push(s));
    await c.connect();
    const w = c.watch("j1");
    const seqs: number[] = [];
    w.on((ev: JobEvent) => seqs.push(ev.seq!));
    const end = await within(w.done, 5_000, "the watch's done");
    t.equal(end.status, "completed");
    t.same(seqs, [1, 2, 3], "every event once, in order");
    t.same(
      g.commands("reconnect_job").map((m) => m.data?.last_seq),
      [0, 2],
      "resumed after the last seq it had",
    );
    t.same(states.slice(0, 4), ["connecting", "open", "connecting", "open"], "the drop is said");
  },
);

t.test("client - a quiet connection that answers pings stays open", async (t) => {
  const g = await gateway(t);
  g.onCommand = (cmd, c) => cmd.command === "ping" && pong(cmd, c);
  const c = client(t, g.url, { heartbeatMs: 100 });
  await c.connect();
  await check(() => g.commands("ping").length >= 5, 5_000, { name: "five pings answered" });
  t.equal(g.conns.length, 1, "one connection throughout");
  t.equal(c.state, "open");
});

for (const when of ["on open", "to every command"] as const) {
  t.test(`client - unreadable frames ${when}: backoff, then CLIENT_ERR_PROTOCOL after maxProtocolErrors`, async (t) => {
    const g = await gateway(t);
    const garbage = new Uint8Array([0xc1, 0xc1]);
    if (when === "on open") g.onOpen = (c) => c.send(garbage);
    else g.onCommand = (_cmd, c) => c.send(garbage);
    const c = client(t, g.url, { reconnect: { ...fast, maxProtocolErrors: 4 } });
    const states: string[] = [];
    c.on("state", (s) => states.push(s));
    await c.connect();
    const w = c.watch("j1");
    const err = await rejection(w.done, 10_000, "the watch's done");
    t.match(err, { code: "CLIENT_ERR_PROTOCOL", message: /unreadable frames on 4 connections in a row/ });
    t.equal(c.state, "closed", "no more reconnects");
    t.equal(states.at(-1), "closed");
    t.equal(g.conns.length, 4, "one connection per allowed error");
    // Not reset by each open: the delays grow (ceilings 50, 100, 200 ms, each at least half of it).
    const gaps = g.openedAt.slice(1).map((at, i) => at - g.openedAt[i]!);
    t.ok(gaps[2]! >= 100, `the backoff grows across opens (gaps ${gaps.map(Math.round).join(", ")} ms)`);
  });
}

t.test("client - an answer without what the command needs (result: null) is CLIENT_ERR_PROTOCOL", async (t) => {
  const g = await gateway(t);
  g.onCommand = (cmd, c) => {
    if (cmd.command === "ping") return pong(cmd, c);
    c.send({ type: "rpc_response", command: cmd.command, request_id: cmd.request_id, result: null });
  };
  const c = client(t, g.url);
  const err = await rejection(c.run({ workflowId: "w" }), 5_000, "run");
  t.match(err, { name: "NodewayError", code: "CLIENT_ERR_PROTOCOL", message: /"run_job" without a job_id/ });
  const chat = await rejection(c.chat({ content: "hi", model: "m" }), 5_000, "chat");
  t.match(chat, { name: "NodewayError", code: "CLIENT_ERR_PROTOCOL", message: /"chat_message" without a thread_id/ });
  t.equal(c.state, "open", "the connection is fine");
});

t.test(
  "client - an event whose seq is not a safe integer is a protocol error: resumed from the last good seq",
  async (t) => {
    const g = await gateway(t);
    const history = [log(1), log(2), update(3)];
    g.onCommand = (cmd, c) => {
      if (cmd.command === "ping") return pong(cmd, c);
      if (cmd.command === "reconnect_job") return resumeFrom(history, cmd, c);
      if (cmd.command !== "run_job") return;
      c.send({ type: "rpc_response", command: "run_job", request_id: cmd.request_id, result: { job_id: "j1" } });
      for (const e of [log(1), { ...log(2), seq: 1e308 }, log(2), update(3)]) c.send(e);
    };
    const c = client(t, g.url);
    const run = await c.run({ workflowId: "w" });
    const seqs: number[] = [];
    run.on((ev) => seqs.push(ev.seq!));
    const end = await within(run.done, 5_000, "the run's done");
    t.equal(end.status, "completed");
    t.same(seqs, [1, 2, 3], "the poisoned event is not delivered, and hides nothing after it");
    t.same(
      g.commands("reconnect_job").map((m) => m.data?.last_seq),
      [1],
      "resumed after the last good seq",
    );
  },
);

/** REST answers by path: `silent` never, `cut` cut after 7 bytes, `declared` says 10 MiB, `huge` streams 64 MiB. */
async function restGateway(t: Test): Promise<{ g: FakeGateway; hugeClosedEarly: () => Promise<boolean> }> {
  const g = await gateway(t);
  let hugeClosedEarly: Promise<boolean> = Promise.resolve(false);
  g.onHttp = (req, res) => {
    const path = req.url ?? "";
    if (path.startsWith("/api/jobs/silent")) return;
    if (path.startsWith("/api/jobs/cut")) {
      res.writeHead(200, { "content-type": "application/json", "content-length": 1000 });
      res.write('{"id":"');
      setTimeout(() => res.destroy(), 50);
      return;
    }
    if (path.startsWith("/api/jobs/declared")) {
      res.writeHead(200, { "content-type": "application/json", "content-length": 10 * 1024 * 1024 });
      res.write("[");
      return;
    }
    if (path.startsWith("/api/jobs/huge")) {
      // Chunked (no length said), written as fast as the client reads: a valid JSON array in the end.
      res.writeHead(200, { "content-type": "application/json" });
      hugeClosedEarly = new Promise((resolve) => res.on("close", () => resolve(!res.writableFinished)));
      const chunk = `"${"x".repeat(1024 * 1024)}",`;
      let n = 0;
      const more = () => {
        while (n < 64 && res.write(chunk)) n++;
        if (n < 64) res.once("drain", more);
        else res.end('""]');
      };
      res.write("[");
      more();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: "j1", status: "running" }));
  };
  return { g, hugeClosedEarly: () => hugeClosedEarly };
}

t.test("client - a REST call the gateway never answers rejects with CLIENT_ERR_TIMEOUT", async (t) => {
  const { g } = await restGateway(t);
  const c = client(t, g.url, { requestTimeoutMs: 500 });
  t.equal((await c.job("ok")).id, "j1", "a plain answer is read");
  const t0 = performance.now();
  const err = await rejection(c.job("silent"), 5_000, "job(silent)");
  t.match(err, { code: "CLIENT_ERR_TIMEOUT", message: /GET \/api\/jobs\/silent: no complete answer within 500 ms/ });
  t.ok(performance.now() - t0 >= 490, "not before the deadline");
});

t.test("client - a REST answer cut mid-body rejects with CLIENT_ERR_DISCONNECTED", async (t) => {
  const { g } = await restGateway(t);
  const c = client(t, g.url);
  const err = await rejection(c.job("cut"), 5_000, "job(cut)");
  t.match(err, { name: "NodewayError", code: "CLIENT_ERR_DISCONNECTED", message: /the answer was cut after 7 bytes/ });
  t.equal(err.status, 200);
});

t.test("client - a REST answer over maxResponseBytes rejects with CLIENT_ERR_TOO_LARGE, unread", async (t) => {
  const { g, hugeClosedEarly } = await restGateway(t);
  const c = client(t, g.url, { maxResponseBytes: 1024 * 1024 });
  const huge = await rejection(c.job("huge"), 5_000, "job(huge)");
  t.match(huge, { code: "CLIENT_ERR_TOO_LARGE", message: /up to 1048576 \(maxResponseBytes\)/ });
  const declared = await rejection(c.job("declared"), 5_000, "job(declared)");
  t.match(declared, { code: "CLIENT_ERR_TOO_LARGE", message: /an answer of 10485760 bytes; .* up to 1048576/ });
  t.equal(
    await within(hugeClosedEarly(), 5_000, "the huge answer's close"),
    true,
    "its connection is dropped, not read",
  );
});
