/**
 * Proxy latency client (a worker): HTTP requests at a fixed rate over keep-alive connections (latency from the
 * scheduled send time, so a stall is not hidden), and WS streams whose frames carry the upstream's send time.
 * Both run on raw sockets (lib/rawhttp.ts, lib/rawws.ts) so that the client's own allocation, GC and JIT stay
 * out of what is measured: with `https.request` and `ws`, the client's pauses were a proxy arm's p99.
 * The first `WARM_MS` of requests are sent at the same rate but not recorded, and WS streams flow for
 * `SETTLE_MS` before frames are recorded: connections are opened before either (their TLS handshakes are a
 * per-connection cost) and what a server allocated for them has been through its young-generation GCs — the
 * measurement is of a stream in flow, which is what a token stream is for nearly all its life.
 */
import { serve, sleep } from "../lib/procs.js";
import { RawHttpConn } from "../lib/rawhttp.js";
import { RawWs } from "../lib/rawws.js";
import { summarize } from "../lib/stats.js";

const now = () => performance.timeOrigin + performance.now();
const WARM_MS = 500;
/** Stream measurements; the burst (table only, what relaying 200 frames back to back takes) keeps 300 ms. */
const SETTLE_MS = 2_000;

async function http(url: string, rate: number, durationMs: number, conns: number) {
  const pool = await Promise.all(Array.from({ length: conns }, () => RawHttpConn.open(url)));
  const idle = [...pool];
  /** Requests due while every connection was busy, oldest first: they leave as connections free up. */
  const waiting: { i: number; due: number }[] = [];
  const lat: number[] = [];
  const errors: string[] = [];
  const warm = Math.floor((rate * WARM_MS) / 1000);
  const total = warm + Math.floor((rate * durationMs) / 1000);
  let finished = 0;
  let allDone: () => void = () => undefined;
  const doneAll = new Promise<void>((r) => (allDone = r));
  const send = (c: RawHttpConn, i: number, from: number): void => {
    void c.get().then((r) => {
      if (r.status !== 200 || r.bodyBytes < 100) errors.push(r.error ?? `status ${r.status}, ${r.bodyBytes} bytes`);
      else if (i >= warm) lat.push(performance.now() - from);
      if (++finished === total) allDone();
      if (c.closed) replace(c);
      else free(c);
    });
  };
  const free = (c: RawHttpConn): void => {
    const next = waiting.shift();
    if (next) send(c, next.i, next.due);
    else idle.push(c);
  };
  // A connection the server closed is replaced, like a keep-alive agent opens a new socket; its handshake then
  // delays whatever waits for it, as it would for any client.
  const replace = (c: RawHttpConn): void => {
    pool.splice(pool.indexOf(c), 1);
    void RawHttpConn.open(url).then(
      (n) => {
        pool.push(n);
        free(n);
      },
      (e: Error) => errors.push(`reconnect: ${e.message}`),
    );
  };
  const start = performance.now() + 20;
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(wait);
    // Timers fire in whole milliseconds, so a request may leave up to 1 ms before it is due: it is timed from when it
    // left then, and from when it was due when it leaves late (a stalled client must not hide the wait it caused).
    const from = Math.min(due, performance.now());
    let c = idle.pop();
    while (c?.closed) {
      replace(c);
      c = idle.pop();
    }
    if (c) send(c, i, from);
    else waiting.push({ i, due: from });
    if (errors.length > 100) break;
  }
  if (errors.length === 0) await Promise.race([doneAll, sleep(10_000)]);
  if (finished < total && errors.length === 0) errors.push(`${total - finished} requests unanswered after 10 s`);
  for (const c of pool) c.close();
  return { ...summarize(lat), errors: errors.slice(0, 3), errorCount: errors.length, expected: total - warm };
}

/** `streams` sockets on `/ws` (each at its own phase) or, with `burst`, on `/ws?burst=1` (all in one tick). */
async function ws(url: string, streams: number, durationMs: number, burst: boolean, settleMs: number) {
  const u = new URL(url);
  const tls = u.protocol === "wss:";
  const port = Number(u.port || (tls ? 443 : 80));
  const lat: number[] = [];
  const errors: string[] = [];
  const socks = await Promise.all(
    Array.from({ length: streams }, () => RawWs.open(port, `/ws${burst ? "?burst=1" : ""}`, undefined, tls)),
  );
  let measuring = false;
  for (const s of socks) {
    s.onFrame = (_op, payload) => {
      const t = now();
      if (measuring) lat.push(t - (JSON.parse(payload.toString("latin1")) as { ts: number }).ts);
    };
  }
  await sleep(settleMs);
  if (socks.some((s) => s.frames === 0))
    errors.push(`${socks.filter((s) => s.frames === 0).length} streams got no frame while settling`);
  measuring = true;
  await sleep(durationMs);
  measuring = false;
  const closed = socks.filter((s) => s.closed).length;
  if (closed) errors.push(`${closed} streams closed`);
  const frames = socks.reduce((n, s) => n + s.frames, 0);
  for (const s of socks) s.destroy();
  // `frames`: every frame received, settling included (what a server's CPU over the whole call relayed).
  return { ...summarize(lat), frames, errors: errors.slice(0, 3), errorCount: errors.length };
}

serve(async (m) => {
  const a = m as unknown as {
    url: string;
    rate: number;
    durationMs: number;
    conns: number;
    streams: number;
    burst?: boolean;
  };
  if (m.op === "http") return http(a.url, a.rate, a.durationMs, a.conns);
  if (m.op === "ws") return ws(a.url, a.streams, a.durationMs, a.burst === true, a.burst === true ? 300 : SETTLE_MS);
  throw new Error(`unknown op ${m.op}`);
});
process.stdout.write("client ready\n");
