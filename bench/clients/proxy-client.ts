/**
 * Proxy latency client (a worker): HTTP requests at a fixed rate over keep-alive connections (latency from the
 * scheduled send time, so a stall is not hidden), and WS streams whose frames carry the upstream's send time.
 * The first `WARM_MS` of requests are sent at the same rate but not recorded: they open the keep-alive
 * connections, and their TLS handshakes (a per-connection cost, ~1 % of a 4 s run) would otherwise be the p99.
 */
import { Agent as HttpAgent, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import WebSocket from "ws";
import { serve, sleep } from "../lib/procs.js";
import { summarize } from "../lib/stats.js";

const now = () => performance.timeOrigin + performance.now();
const WARM_MS = 500;

async function http(url: string, rate: number, durationMs: number, conns: number) {
  const tls = url.startsWith("https:");
  const agent = tls ? new HttpsAgent({ keepAlive: true, maxSockets: conns, rejectUnauthorized: false }) : new HttpAgent({ keepAlive: true, maxSockets: conns });
  const req = tls ? httpsRequest : httpRequest;
  const lat: number[] = [];
  const errors: string[] = [];
  const warm = Math.floor((rate * WARM_MS) / 1000);
  const total = warm + Math.floor((rate * durationMs) / 1000);
  const start = performance.now() + 20;
  const inflight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(wait);
    // Timers fire in whole milliseconds, so a request may leave up to 1 ms before it is due: it is timed from when it
    // left then, and from when it was due when it leaves late (a stalled client must not hide the wait it caused).
    const from = Math.min(due, performance.now());
    inflight.push(
      new Promise<void>((res) => {
        const r = req(url, { agent, method: "GET" }, (resp) => {
          let n = 0;
          resp.on("data", (d: Buffer) => (n += d.length));
          resp.on("end", () => {
            if (resp.statusCode !== 200 || n < 100) errors.push(`status ${resp.statusCode}, ${n} bytes`);
            else if (i >= warm) lat.push(performance.now() - from);
            res();
          });
        });
        r.on("error", (e) => {
          errors.push(e.message);
          res();
        });
        r.end();
      }),
    );
  }
  await Promise.all(inflight);
  agent.destroy();
  return { ...summarize(lat), errors: errors.slice(0, 3), errorCount: errors.length, expected: total - warm };
}

/** `streams` sockets on `/ws` (each at its own phase) or, with `burst`, on `/ws?burst=1` (all in one tick). */
async function ws(url: string, streams: number, durationMs: number, burst: boolean) {
  const lat: number[] = [];
  const errors: string[] = [];
  const socks = await Promise.all(
    Array.from({ length: streams }, () => new Promise<WebSocket>((res, rej) => {
      const s = new WebSocket(`${url}/ws${burst ? "?burst=1" : ""}`, { rejectUnauthorized: false, perMessageDeflate: false });
      s.once("open", () => res(s));
      s.once("error", rej);
    })),
  );
  await sleep(300);
  let measuring = true;
  for (const s of socks) {
    s.on("message", (d: Buffer) => {
      const t = now();
      if (measuring) lat.push(t - (JSON.parse(d.toString()) as { ts: number }).ts);
    });
    s.on("close", () => measuring && errors.push("stream closed"));
  }
  await sleep(durationMs);
  measuring = false;
  for (const s of socks) s.terminate();
  return { ...summarize(lat), errors: errors.slice(0, 3), errorCount: errors.length };
}

serve(async (m) => {
  const a = m as unknown as { url: string; rate: number; durationMs: number; conns: number; streams: number; burst?: boolean };
  if (m.op === "http") return http(a.url, a.rate, a.durationMs, a.conns);
  if (m.op === "ws") return ws(a.url, a.streams, a.durationMs, a.burst === true);
  throw new Error(`unknown op ${m.op}`);
});
process.stdout.write("client ready\n");
