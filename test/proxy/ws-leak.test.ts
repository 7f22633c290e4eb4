/**
 * Resource hygiene under WebSocket churn: 10,000 connect/abort cycles through the proxy leave no file descriptors,
 * no in-flight counters and no heap growth behind. Half the clients abort after the 101 (an open tunnel torn down
 * from the client side), half before it (the upstream hand-off in progress). A second test kills clients while
 * their tunnels stream, which is how token streams usually end when a browser tab closes.
 */
import { readdirSync } from "node:fs";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import t from "tap";
import { compileProxyConfig, startProxy } from "../../proxy/index.js";
import { startUpstream, tempDir, waitFor } from "../helpers/tls-tools.js";

const CYCLES = 10_000;
const CONCURRENCY = 32;

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

/** `global.gc` without needing --expose-gc on the command line. */
function collect(): void {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  gc();
  gc();
}

const UPGRADE =
  "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: bearer.token\r\n\r\n";

function cycle(port: number, abortEarly: boolean, session: { value: Buffer | undefined }): Promise<void> {
  return new Promise((resolve) => {
    const s: TLSSocket = tlsConnect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      rejectUnauthorized: false,
      session: session.value,
    });
    const finish = (): void => {
      s.destroy();
      resolve();
    };
    s.on("session", (sess: Buffer) => (session.value = sess)); // resume TLS sessions: the test is about sockets, not RSA
    s.on("error", finish);
    s.on("close", finish);
    s.once("secureConnect", () => {
      s.write(UPGRADE);
      if (abortEarly) setImmediate(finish);
    });
    s.on("data", (d: Buffer) => {
      if (d.toString("latin1").startsWith("HTTP/1.1 101")) finish();
    });
  });
}

async function run(port: number, n: number): Promise<void> {
  const session = { value: undefined as Buffer | undefined };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      await cycle(port, i % 2 === 1, session);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

t.test(
  "proxy ws churn - no fd, counter or heap growth after 10,000 WebSocket connect/abort cycles",
  { timeout: 120_000 },
  async (t) => {
    const up = await startUpstream("gw");
    t.teardown(() => up.close());
    const store = await tempDir("nodeway-proxy-leak-");
    t.teardown(store.cleanup);
    let lines = 0;
    const proxy = await startProxy(
      compileProxyConfig({
        upstream: [up.url],
        tls: "self-signed",
        host: "127.0.0.1",
        httpsPort: 0,
        httpPort: 0,
        certDir: store.dir,
        healthIntervalMs: 60_000,
      }),
      { onEvent: () => undefined, accessLog: () => void lines++ },
    );
    t.teardown(() => proxy.stop());

    await run(proxy.httpsPort, 500); // warm-up: lazily created pools, caches and JIT settle first
    await waitFor(() => proxy.upstreams()[0]!.active === 0, 10_000, "warm-up tunnels closed");
    up.seen.splice(0); // the test upstream records every request; that is the test's memory, not the proxy's
    collect();
    const fdsBefore = openFds();
    const heapBefore = process.memoryUsage().heapUsed;

    const started = Date.now();
    await run(proxy.httpsPort, CYCLES);
    t.comment(`${CYCLES} cycles in ${Date.now() - started} ms`);

    await waitFor(() => proxy.upstreams()[0]!.active === 0, 15_000, "every tunnel accounted for");
    await waitFor(() => up.wss.clients.size === 0, 15_000, "upstream sockets closed");
    const fdsAfter = await waitFor(
      () => {
        const n = openFds();
        return n <= fdsBefore + 4 ? n : null;
      },
      15_000,
      `fds back to ${fdsBefore}`,
    );
    up.seen.splice(0);
    collect();
    const heapAfter = process.memoryUsage().heapUsed;
    t.ok(fdsAfter <= fdsBefore + 4, `fds ${fdsBefore} → ${fdsAfter}`);
    t.ok(
      heapAfter - heapBefore < 8 * 1024 * 1024,
      `heap ${(heapBefore / 1e6).toFixed(1)} MB → ${(heapAfter / 1e6).toFixed(1)} MB`,
    );
    t.ok(lines >= CYCLES, "every cycle was logged");
    t.ok(proxy.upstreams()[0]!.healthy, "client aborts never ejected the upstream");
  },
);

/** Opens a streaming tunnel, waits for a few relayed frames, then kills the client (no close frame, no FIN wait). */
function streamAndKill(port: number, session: { value: Buffer | undefined }): Promise<void> {
  return new Promise((resolve) => {
    const s: TLSSocket = tlsConnect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      rejectUnauthorized: false,
      session: session.value,
    });
    let bytes = 0;
    const finish = (): void => {
      s.destroy();
      resolve();
    };
    s.on("session", (sess: Buffer) => (session.value = sess));
    s.on("error", finish);
    s.on("close", finish);
    s.once("secureConnect", () => s.write(UPGRADE.replace("GET /ws ", "GET /ws/stream ")));
    s.on("data", (d: Buffer) => {
      bytes += d.length;
      if (bytes > 400) finish(); // the 101 and a dozen frames: the upstream is mid-stream
    });
  });
}

t.test(
  "proxy ws churn - clients killed mid-stream leave no tunnel half-open behind",
  { timeout: 60_000 },
  async (t) => {
    const up = await startUpstream("gw");
    t.teardown(() => up.close());
    const store = await tempDir("nodeway-proxy-leak-");
    t.teardown(store.cleanup);
    const proxy = await startProxy(
      compileProxyConfig({
        upstream: [up.url],
        tls: "self-signed",
        host: "127.0.0.1",
        httpsPort: 0,
        httpPort: 0,
        certDir: store.dir,
        healthIntervalMs: 60_000,
      }),
      { onEvent: () => undefined, accessLog: () => undefined },
    );
    t.teardown(() => proxy.stop());
    const session = { value: undefined as Buffer | undefined };
    await streamAndKill(proxy.httpsPort, session); // warm-up: the TLS session and lazily created state
    await waitFor(() => up.wss.clients.size === 0, 10_000, "warm-up tunnel closed");
    const fdsBefore = openFds();

    const n = 300;
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next++ < n) await streamAndKill(proxy.httpsPort, session);
      }),
    );
    await waitFor(() => proxy.upstreams()[0]!.active === 0, 15_000, "every tunnel accounted for");
    await waitFor(() => up.wss.clients.size === 0, 15_000, "upstream sockets closed");
    // The upstream-side socket of a tunnel whose client died while a frame was being relayed used to stay open,
    // paused, forever: the descriptor count is what shows it (the upstream itself sees a FIN and moves on).
    const fdsAfter = await waitFor(
      () => {
        const fds = openFds();
        return fds <= fdsBefore + 4 ? fds : null;
      },
      15_000,
      `fds back to ${fdsBefore}`,
    ).catch(() => openFds());
    t.ok(
      fdsAfter <= fdsBefore + 4,
      `fds ${fdsBefore} → ${fdsAfter} after ${n} streaming tunnels were cut by their clients`,
    );
  },
);
