/**
 * Debian's `redis-server` for the BullMQ peer: loopback, an ephemeral port, AOF with `appendfsync everysec` (the
 * durability BullMQ users run with) and no RDB snapshots, its files in a temp dir.
 */
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { start, type Spawned } from "./procs.js";

export interface Redis extends Spawned {
  port: number;
}

/** A port free on 127.0.0.1 now (redis-server has no "pick one and say which"). */
function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export async function startRedis(): Promise<Redis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "nw-bench-redis-"));
  const args = ["--bind", "127.0.0.1", "--port", String(port), "--dir", dir, "--save", ""];
  const aof = ["--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "no", "--daemonize", "no"];
  const p = start("redis-server", "redis-server", [...args, ...aof]);
  await p.waitFor(/Ready to accept connections/);
  return Object.assign(p, { port });
}
