/**
 * The reference proxy and the load generator of the proxy benchmarks: nginx (Debian) as a TLS reverse proxy with
 * upstream keep-alive, one worker pinned to core 0, and `wrk -t1 -c32` pinned to core 1.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cpuNs, sleep, start, type Spawned } from "./procs.js";
import { freePort } from "../../test/helpers/nats-server.js";

/** nginx in front of `127.0.0.1:<upstreamPort>`, its files under `dir`; `pids()` = master + worker. */
export async function startNginx(
  dir: string,
  upstreamPort: number,
): Promise<Spawned & { port: number; pids: () => number[] }> {
  const port = await freePort();
  const d = join(dir, `nginx-${port}`);
  mkdirSync(d, { recursive: true });
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      join(d, "key.pem"),
      "-out",
      join(d, "cert.pem"),
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
    ],
    { stdio: "ignore" },
  );
  const conf = `
worker_processes 1;
daemon off;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${d}/body; proxy_temp_path ${d}/proxy; fastcgi_temp_path ${d}/fcgi; uwsgi_temp_path ${d}/uwsgi; scgi_temp_path ${d}/scgi;
  upstream gw { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${d}/cert.pem;
    ssl_certificate_key ${d}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://gw;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_read_timeout 3600s;
    }
  }
}
`;
  writeFileSync(join(d, "nginx.conf"), conf);
  const p = start("nginx", "nginx", ["-p", d, "-c", join(d, "nginx.conf")], { cpu: "0" });
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/`).then(
      () => true,
      () => false,
    ); // any answer: it listens
    if (ok) break;
    await sleep(50);
  }
  const pids = () => {
    const kids = readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
    return [p.pid, ...kids];
  };
  // The master is SIGKILLed on exit (procs.ts), which leaves its worker running, orphaned: kill the worker too.
  const workers = pids().slice(1);
  process.on("exit", () => {
    for (const w of workers) {
      try {
        process.kill(w, "SIGKILL");
      } catch {
        /* gone */
      }
    }
  });
  return Object.assign(p, { port, pids });
}

export function wrk(url: string, seconds: number): { requests: number; rps: number; errors: string | null } {
  const out = execFileSync("taskset", ["-c", "1", "wrk", "-t1", "-c32", `-d${seconds}s`, url], { encoding: "utf8" });
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const sockErr = /Socket errors: (.*)/.exec(out);
  return {
    requests,
    rps,
    errors: non2xx ? `${non2xx[1]} non-2xx responses` : sockErr ? `socket errors: ${sockErr[1]}` : null,
  };
}

/** CPU time (ns) of a set of processes, all threads. */
export const cpuOf = (pids: readonly number[]): number => pids.reduce((sum, p) => sum + cpuNs(p), 0);

/** `wrk` against a proxy, with the proxy's CPU over the run: requests per proxy CPU-second, the throughput metric. */
export function wrkPerCpu(
  url: string,
  seconds: number,
  pids: () => number[],
): ReturnType<typeof wrk> & { cpuS: number; perCpuS: number } {
  const c0 = cpuOf(pids());
  const w = wrk(url, seconds);
  const cpuS = (cpuOf(pids()) - c0) / 1e9;
  return { ...w, cpuS, perCpuS: w.requests / cpuS };
}
