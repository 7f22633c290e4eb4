/**
 * A PROTOTYPE, for `bench/front-proto.ts` only: Node's https server in front, upstream through undici's
 * `Pool.dispatch` (mode "undici") or no upstream at all (mode "hello": the ceiling of a Node https front).
 * Usage: node … node-front.ts <upstream origin> <key.pem> <cert.pem> <undici|hello>
 */
import { createServer } from "node:https";
import { readFileSync } from "node:fs";
import { Pool } from "undici";

const [origin, keyFile, certFile, mode] = process.argv.slice(2) as [string, string, string, string];
const pool = new Pool(origin, { connections: 64 });
const DROP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "proxy-connection",
  "date",
]);
const server = createServer({ key: readFileSync(keyFile), cert: readFileSync(certFile), noDelay: true }, (req, res) => {
  if (mode === "hello") {
    res.writeHead(200, ["Content-Type", "text/plain", "Content-Length", "2"]);
    res.end("ok");
    return;
  }
  const raw = req.rawHeaders;
  const headers: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (!DROP.has(raw[i]!.toLowerCase())) headers.push(raw[i]!, raw[i + 1]!);
  headers.push("x-forwarded-proto", "https");
  pool.dispatch({ origin, method: req.method as "GET", path: req.url!, headers }, {
    onConnect() {},
    onHeaders(status: number, rawH: Buffer[]) {
      const out: string[] = [];
      for (let i = 0; i < rawH.length; i += 2) {
        const k = rawH[i]!.toString("latin1");
        if (!DROP.has(k.toLowerCase())) out.push(k, rawH[i + 1]!.toString("latin1"));
      }
      res.writeHead(status, out);
      return true;
    },
    onData(chunk: Buffer) {
      res.write(chunk);
      return true;
    },
    onComplete() {
      res.end();
    },
    onError(err: Error) {
      if (!res.headersSent) res.writeHead(502);
      res.end(err.message);
    },
  } as never);
});
server.listen(0, "127.0.0.1", () =>
  process.stdout.write(`front listening ${(server.address() as { port: number }).port}\n`),
);
