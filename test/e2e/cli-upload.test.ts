/**
 * `nodeway run --param k=@file` sends the file streamed from disk, not read into memory first (a 300 MB file took
 * the CLI to 1.3 GB before the 413 came), and a 413 without a `message` (the proxy's) is said in words.
 * Against a stand-in gateway on loopback that records what it gets.
 */
import t, { type Test } from "tap";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exitWithin, runNodeway, type Proc } from "../helpers/procs.js";

const dir = mkdtempSync(join(tmpdir(), "nw-cli-upload-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const workflow = join(dir, "wf.json");
writeFileSync(workflow, JSON.stringify({ nodes: [], edges: [] }));

type Handler = (req: IncomingMessage, res: ServerResponse, cli: Proc) => void;

/** A stand-in gateway: `onUpload` gets `POST /api/assets` (with `Expect: 100-continue` or without), the rest 404. */
async function standIn(
  t: Test,
  onUpload: Handler,
  opts: { continues: boolean },
): Promise<{ url: string; run: (args: string[]) => Proc }> {
  let cli: Proc | null = null;
  const server = createServer((req, res) => {
    if (req.method === "POST" && req.url?.startsWith("/api/assets")) return onUpload(req, res, cli!);
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ code: "GW_ERR_NOT_FOUND", message: `no ${req.method} ${req.url} here` }));
  });
  // A server that does not do `Expect` leaves the client to send the body unasked.
  server.on("checkContinue", (req, res) => {
    if (opts.continues) res.writeContinue();
    server.emit("request", req, res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise((r) => server.close(r)));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    run(args) {
      cli = runNodeway(["run", workflow, "--gateway", url, ...args]);
      t.teardown(() => cli?.kill("SIGKILL"));
      return cli;
    },
  };
}

/** The most memory the process has held so far (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) * 1024;
}

t.test(
  "cli upload - a file the gateway refuses (413) is not read into memory, and the 413 is said in words",
  async (t) => {
    const size = 512 * 1024 * 1024;
    const big = join(dir, "big.bin");
    writeFileSync(big, "");
    truncateSync(big, size); // sparse: no disk used
    let peakAtRequest = 0;
    let declared = "";
    const gw = await standIn(
      t,
      (req, res, cli) => {
        // By now the old CLI had read the whole file; this one has read none of it.
        peakAtRequest = peakRss(cli.proc.pid!);
        declared = req.headers["content-length"] ?? "";
        res.writeHead(413, { "content-type": "application/json", connection: "close" });
        res.end(JSON.stringify({ code: "PROXY_ERR_BODY_TOO_LARGE", status: 413 }));
      },
      { continues: false },
    );
    const cli = gw.run(["--param", `file=@${big}`]);
    t.equal(await cli.exited, 1, "exits 1");
    t.equal(declared, String(size), "the file's length is declared up front");
    t.ok(
      peakAtRequest > 0 && peakAtRequest < 256 * 1024 * 1024,
      `the CLI held ${peakAtRequest} bytes, not the file's ${size}`,
    );
    t.match(
      cli.stderr(),
      `upload of ${big} (${size} bytes) refused: PROXY_ERR_BODY_TOO_LARGE: larger than the gateway, or a proxy in front of it, accepts (HTTP 413)`,
    );
    t.notMatch(cli.stderr(), /\{"code"/, "not the raw body");
  },
);

t.test(
  "cli upload - the file waits for the server's 100 Continue (a 413 comes before any of it), and then arrives whole",
  async (t) => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const path = join(dir, "photo.png");
    writeFileSync(path, bytes);
    for (const continues of [true, false]) {
      let got = "";
      let type = "";
      let expect = "";
      const gw = await standIn(
        t,
        (req, res) => {
          type = req.headers["content-type"] ?? "";
          expect = req.headers.expect ?? "";
          const hash = createHash("sha256");
          req.on("data", (d: Buffer) => hash.update(d));
          req.on("end", () => {
            got = hash.digest("hex");
            res.writeHead(201, { "content-type": "application/json" });
            res.end(JSON.stringify({ id: "a1", uri: "asset://a1" }));
          });
        },
        { continues },
      );
      const cli = gw.run(["--param", `photo=@${path}`]);
      // The stand-in has no workflows: the run ends at saving it, after the upload.
      t.equal(await cli.exited, 1);
      // A server that ignores `Expect` gets the body anyway, after a wait.
      t.match(cli.stderr(), `uploaded ${path} as asset://a1`, `${continues ? "with" : "without"} 100 Continue`);
      t.equal(got, createHash("sha256").update(bytes).digest("hex"), "every byte arrived");
      t.equal(type, "image/png", "with the file's media type");
      t.equal(expect, "100-continue", "asked with Expect: 100-continue");
    }
  },
);

t.test("cli upload - what is no regular file, or is empty, is refused before anything is sent", async (t) => {
  let asked = 0;
  const gw = await standIn(
    t,
    (_req, res) => {
      asked++;
      res.end("{}");
    },
    { continues: true },
  );
  const empty = join(dir, "empty.bin");
  writeFileSync(empty, "");
  for (const [path, why] of [
    [dir, "not a regular file"],
    ["/dev/zero", "not a regular file"],
    [empty, "it is empty"],
  ] as const) {
    const cli = gw.run(["--param", `x=@${path}`]);
    t.equal(await exitWithin(cli, 20_000), 2, `${path}: exits 2`);
    t.match(cli.stderr(), `cannot upload ${path}: ${why}`);
  }
  t.equal(asked, 0, "nothing was sent");
});
