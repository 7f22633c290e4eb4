/**
 * An upstream that fails a WebSocket upgrade in each way a crashed or broken gateway can: resets the connection,
 * answers garbage, answers 200 instead of 101, answers 101 and closes, or never answers. The client gets an answer
 * or a closed socket, never a proxy that died or a socket left open for good (a silent upstream held each client, and
 * the proxy's stop, forever: now 504 after `wsUpgradeTimeoutMs`), and the proxy serves the next request.
 */
import t from "tap";
import { createServer as createNetServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import WebSocket from "ws";
import { httpsGet, startTestProxy, type Teardowns } from "../helpers/tls-tools.js";

type Fault = "reset" | "garbage" | "ok-200" | "101-close" | "silent";

/** An upstream answering `/health` 200 and failing every other request (the upgrade) as `fault` says. */
async function faultyUpstream(t: Teardowns, fault: Fault): Promise<string> {
  const server = createNetServer((s: Socket) => {
    s.on("error", () => undefined);
    let buf = "";
    s.on("data", (d) => {
      buf += d.toString("latin1");
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const path = buf.slice(0, end).split(" ")[1];
      buf = "";
      if (path === "/health") return void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      if (fault === "reset") s.resetAndDestroy();
      else if (fault === "garbage") s.end("lol what\r\n\r\n");
      else if (fault === "ok-200") s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
      else if (fault === "101-close")
        s.end("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      // "silent": the head is read, nothing is ever sent
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** How a WebSocket through the proxy ends: its HTTP status when refused, else "closed", "error" or "open". */
function upgradeOutcome(port: number, waitMs: number): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, { rejectUnauthorized: false });
    const timer = setTimeout(() => {
      ws.terminate();
      resolve("still waiting");
    }, waitMs);
    const done = (what: string) => {
      clearTimeout(timer);
      ws.terminate();
      resolve(what);
    };
    ws.once("unexpected-response", (_req, res) => done(`status ${res.statusCode}`));
    ws.once("open", () => ws.once("close", () => done("opened, then closed")));
    ws.once("error", (err) => done(`error: ${err.message.slice(0, 60)}`));
    ws.once("close", () => done("closed"));
  });
}

/** What each fault must end in for the client. */
const EXPECTED: Record<Fault, RegExp> = {
  reset: /^status 502$/,
  garbage: /^status 502$/,
  "ok-200": /^status 200$/, // an answer, passed on: the client's WebSocket library refuses it
  "101-close": /^(error: Invalid Sec-WebSocket-Accept header|closed|opened, then closed)$/,
  silent: /^status 504$/,
};

for (const fault of ["reset", "garbage", "ok-200", "101-close", "silent"] as const) {
  t.test(`proxy upgrade faults - an upstream that fails the upgrade: ${fault}`, async (t) => {
    const up = await faultyUpstream(t, fault);
    const { proxy } = await startTestProxy(t, [up], { healthIntervalMs: 60_000, wsUpgradeTimeoutMs: 500 });
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => upgradeOutcome(proxy.httpsPort, 20_000)));
    t.same(
      [...new Set(outcomes)].filter((o) => !EXPECTED[fault].test(o)),
      [],
      `all 20 clients: ${[...new Set(outcomes)].join("; ")}`,
    );
    const res = await httpsGet(proxy.httpsPort, "/health");
    t.equal(res.status, 200, "the proxy still serves");
  });
}

t.test("proxy upgrade faults - a stop with upgrades waiting on a silent upstream ends at once", async (t) => {
  const up = await faultyUpstream(t, "silent");
  const { proxy } = await startTestProxy(t, [up], { healthIntervalMs: 60_000 }); // the default 30 s timeout
  const waiting = Array.from({ length: 5 }, () => upgradeOutcome(proxy.httpsPort, 20_000));
  await new Promise((r) => setTimeout(r, 300)); // the upgrades reach the upstream
  const started = Date.now();
  await proxy.stop();
  t.ok(Date.now() - started < 5_000, `stopped in ${Date.now() - started} ms`);
  const outcomes = await Promise.all(waiting);
  t.notOk(outcomes.includes("still waiting"), `the waiting clients were let go: ${[...new Set(outcomes)].join("; ")}`);
});

t.test("proxy upgrade faults - a stop with HTTP requests waiting on a silent upstream ends at once", async (t) => {
  const up = await faultyUpstream(t, "silent");
  const { proxy } = await startTestProxy(t, [up], { healthIntervalMs: 60_000 });
  const waiting = Array.from({ length: 5 }, () =>
    httpsGet(proxy.httpsPort, "/api/jobs/x?wait=true").then(
      (r) => `status ${r.status}`,
      (e: Error) => `error: ${e.message}`,
    ),
  );
  await new Promise((r) => setTimeout(r, 300)); // the requests reach the upstream
  const started = Date.now();
  await proxy.stop();
  t.ok(Date.now() - started < 5_000, `stopped in ${Date.now() - started} ms`);
  const outcomes = await Promise.race([
    Promise.all(waiting),
    new Promise<string[]>((r) => setTimeout(() => r(["still waiting"]), 10_000)),
  ]);
  t.notOk(outcomes.includes("still waiting"), `the waiting clients were let go: ${[...new Set(outcomes)].join("; ")}`);
});
