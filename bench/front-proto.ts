/**
 * Diagnostic (not a goal line): what other proxy fronts would give on the throughput goal. Requests per proxy
 * CPU-second (`wrk -t1 -c32` over TLS, as in `proxy.ts`) for our proxy, the prototype fronts of
 * `peers/uws-front.ts` (uWS.js `SSLApp` + undici, no hygiene) and `peers/node-front.ts` (Node's https server +
 * undici with no hygiene, i.e. our request path's floor; and Node's https server answering by itself, the ceiling
 * of any Node front), and nginx, in front of the same upstream, rounds alternating, medians.
 * Usage: node --import ./bench/register.mjs bench/front-proto.ts [rounds]
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNginx, wrkPerCpu } from "./lib/nginx.js";
import { ensureCommands, startTs } from "./lib/procs.js";
import { startOurProxy } from "./lib/proxy.js";
import { median } from "./lib/stats.js";

const rounds = Number(process.argv[2] ?? 5);
const dir = mkdtempSync(join(tmpdir(), "nw-bench-front-"));
process.env.NODEWAY_HOME = dir;
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const missing = ensureCommands({ wrk: "wrk", nginx: "nginx" });
if (missing) throw new Error(missing);

const up = startTs("upstream", "peers/upstream.ts", ["20"], { cpu: "1" });
const upstream = `http://127.0.0.1:${(await up.waitFor(/upstream listening (\d+)/))[1]}`;
execFileSync(
  "openssl",
  [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    join(dir, "key.pem"),
    "-out",
    join(dir, "cert.pem"),
    "-days",
    "2",
    "-subj",
    "/CN=localhost",
  ],
  { stdio: "ignore" },
);
const ours = await startOurProxy(upstream, { cpu: "0" });
const front = startTs("uws-front", "peers/uws-front.ts", [upstream, join(dir, "key.pem"), join(dir, "cert.pem")], {
  cpu: "0",
});
const frontPort = Number((await front.waitFor(/front listening (\d+)/))[1]);
const nginx = await startNginx(dir, Number(new URL(upstream).port));
const nodeFront = (mode: string) =>
  startTs(`node-front-${mode}`, "peers/node-front.ts", [upstream, join(dir, "key.pem"), join(dir, "cert.pem"), mode], {
    cpu: "0",
  });
const nu = nodeFront("undici");
const nuPort = Number((await nu.waitFor(/front listening (\d+)/))[1]);
const nh = nodeFront("hello");
const nhPort = Number((await nh.waitFor(/front listening (\d+)/))[1]);
const tlsFront = (mode: string) =>
  startTs(`tls-front-${mode}`, "peers/tls-front.ts", [upstream, join(dir, "key.pem"), join(dir, "cert.pem"), mode], {
    cpu: "0",
  });
const th = tlsFront("hello");
const thPort = Number((await th.waitFor(/front listening (\d+)/))[1]);
const tp = tlsFront("proxy");
const tpPort = Number((await tp.waitFor(/front listening (\d+)/))[1]);

const arms: { name: string; port: number; pids: () => number[] }[] = [
  { name: "ours", port: ours.httpsPort, pids: () => [ours.pid] },
  { name: "uws_front_proto", port: frontPort, pids: () => [front.pid] },
  { name: "nginx", port: nginx.port, pids: nginx.pids },
  { name: "node_undici", port: nuPort, pids: () => [nu.pid] },
  { name: "node_hello", port: nhPort, pids: () => [nh.pid] },
  { name: "tls_hello", port: thPort, pids: () => [th.pid] },
  { name: "tls_proxy", port: tpPort, pids: () => [tp.pid] },
];
const results = new Map<string, number[]>(arms.map((a) => [a.name, []]));
for (let r = 0; r <= rounds; r++) {
  for (const a of r % 2 ? [...arms].reverse() : arms) {
    const w = wrkPerCpu(`https://127.0.0.1:${a.port}/`, 4, a.pids);
    const perCpuS = w.perCpuS;
    if (w.errors) throw new Error(`${a.name}: ${w.errors}`);
    process.stderr.write(
      `[front-proto] round ${r}${r === 0 ? " (warm-up)" : ""} ${a.name}: ${perCpuS.toFixed(0)} req/CPU-s\n`,
    );
    if (r > 0) results.get(a.name)!.push(perCpuS);
  }
}
const nginxMed = median(results.get("nginx")!);
for (const [name, v] of results)
  process.stdout.write(
    `${name.padEnd(16)} ${median(v).toFixed(0).padStart(7)} req/CPU-s  ${(median(v) / nginxMed).toFixed(2)}× nginx\n`,
  );
process.exit(0);
