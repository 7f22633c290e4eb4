/**
 * Pebble (Let's Encrypt's test ACME CA) and pebble-challtestsrv (its mock DNS) on ephemeral loopback ports.
 *
 * - challtestsrv answers every A query with 127.0.0.1 (and no AAAA), so any test domain points at the proxy;
 * - Pebble gets its own TLS certificate from a CA made here (`caBundleFile`, give it to the proxy as
 *   `acmeCaBundleFile`), validates HTTP-01 on `httpPort` (the proxy's HTTP port), and runs with
 *   `PEBBLE_VA_NOSLEEP=1` so validation is immediate;
 * - Pebble reads fixed ports from its config file, so free ports are picked first (bind 0, close, reuse).
 *
 * `stop()` and `start()` let a test take the CA down and bring it back on the same ports (with a new root: Pebble
 * makes a fresh CA hierarchy per process, so fetch `root()` again after a restart).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { request } from "node:https";
import { connect } from "node:net";
import { join } from "node:path";
import { createTestCa, freePorts, tempDir, waitFor } from "./tls-tools.js";

export interface PebbleOptions {
  /** Port Pebble's VA connects to for HTTP-01: the proxy's `httpPort`. */
  readonly httpPort: number;
  /** Extra environment, e.g. `{ PEBBLE_WFE_NONCEREJECT: "50" }`. Nonce rejection is 0 unless set here. */
  readonly env?: Record<string, string>;
  /** Lifetime of issued certificates in seconds. @default Pebble's (5 years) */
  readonly certificateValidityPeriodS?: number;
}

export interface Pebble {
  readonly directoryUrl: string;
  /** PEM file with the CA that signed Pebble's own HTTPS certificate. */
  readonly caBundleFile: string;
  /** PEM of Pebble's current root (management API `/roots/0`): trust it to verify issued certificates. */
  root(): Promise<string>;
  /** Kills Pebble (the CA goes down); challtestsrv keeps running. */
  stop(): Promise<void>;
  /** Starts Pebble again on the same ports and waits until its directory answers. */
  start(): Promise<void>;
  /** Stops everything and removes the temp dir. */
  close(): Promise<void>;
}

function httpsGetText(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

function tcpReady(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** Starts challtestsrv and Pebble; resolves once Pebble's directory answers over HTTPS. */
export async function startPebble(opts: PebbleOptions): Promise<Pebble> {
  const tmp = await tempDir("nodeway-pebble-");
  const ca = createTestCa("Nodeway Pebble listener CA");
  const leaf = ca.issue(["localhost", "127.0.0.1"]);
  const caBundleFile = join(tmp.dir, "listener-ca.pem");
  await writeFile(caBundleFile, ca.certPem);
  await writeFile(join(tmp.dir, "cert.pem"), leaf.certPem);
  await writeFile(join(tmp.dir, "key.pem"), leaf.keyPem);

  // Distinct from each other and from the proxy's httpPort (picked by the caller a moment ago).
  const ports = (await freePorts(6)).filter((p) => p !== opts.httpPort);
  const [dnsPort, dnsMgmtPort, acmePort, mgmtPort, tlsPort] = ports as [number, number, number, number, number];
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`,
      managementListenAddress: `127.0.0.1:${mgmtPort}`,
      certificate: join(tmp.dir, "cert.pem"),
      privateKey: join(tmp.dir, "key.pem"),
      httpPort: opts.httpPort,
      tlsPort,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
      ...(opts.certificateValidityPeriodS !== undefined
        ? { certificateValidityPeriod: opts.certificateValidityPeriodS }
        : {}),
    },
  };
  const configFile = join(tmp.dir, "pebble-config.json");
  await writeFile(configFile, JSON.stringify(config, null, 2));

  const output: string[] = [];
  const keep = (child: ChildProcess): void => {
    child.stdout?.on("data", (d: Buffer) => output.push(d.toString()));
    child.stderr?.on("data", (d: Buffer) => output.push(d.toString()));
  };

  const dns = spawn(
    "pebble-challtestsrv",
    [
      "-defaultIPv4",
      "127.0.0.1",
      "-defaultIPv6",
      "",
      "-dns01",
      `127.0.0.1:${dnsPort}`,
      "-http01",
      "",
      "-https01",
      "",
      "-tlsalpn01",
      "",
      "-management",
      `127.0.0.1:${dnsMgmtPort}`,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  keep(dns);

  let pebble: ChildProcess | null = null;
  const caPem = ca.certPem;
  const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;

  async function start(): Promise<void> {
    pebble = spawn("pebble", ["-config", configFile, "-dnsserver", `127.0.0.1:${dnsPort}`], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0", ...opts.env },
    });
    keep(pebble);
    try {
      await waitFor(async () => (await httpsGetText(directoryUrl, caPem)).status === 200, 15_000, "pebble directory");
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- pebble output ---\n${output.join("")}`);
    }
  }

  async function stop(): Promise<void> {
    const p = pebble;
    pebble = null;
    if (p === null) return;
    p.kill("SIGKILL");
    await exited(p);
  }

  try {
    await waitFor(() => tcpReady(dnsMgmtPort), 10_000, "pebble-challtestsrv");
    await start();
  } catch (err) {
    // Leave nothing running behind a failed start: the test gets the error, not a hang.
    await stop();
    dns.kill("SIGKILL");
    await exited(dns);
    await tmp.cleanup();
    throw err;
  }
  return {
    directoryUrl,
    caBundleFile,
    async root() {
      const res = await httpsGetText(`https://127.0.0.1:${mgmtPort}/roots/0`, caPem);
      if (res.status !== 200) throw new Error(`pebble /roots/0 answered ${res.status}`);
      return res.body;
    },
    stop,
    start,
    async close() {
      await stop();
      dns.kill("SIGKILL");
      await exited(dns);
      await tmp.cleanup();
    },
  };
}
