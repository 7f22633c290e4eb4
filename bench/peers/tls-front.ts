/**
 * A PROTOTYPE, for `bench/front-proto.ts` only: a front on Node's `tls` server with no HTTP server — the request
 * head found in the socket's bytes by hand (GET without a body only, no hygiene) — either answering by itself
 * (mode "hello": the ceiling of a Node TLS front without `node:http`) or relaying through the proxy's own
 * upstream client (mode "proxy").
 * Usage: node … tls-front.ts <upstream origin> <key.pem> <cert.pem> <hello|proxy>
 */
import { readFileSync } from "node:fs";
import { createServer, type TLSSocket } from "node:tls";
import { UpstreamClient } from "../../proxy/upstream-http.js";

const [origin, keyFile, certFile, mode] = process.argv.slice(2) as [string, string, string, string];
const u = new URL(origin);
const client = new UpstreamClient(u.hostname, Number(u.port));
const DROP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "proxy-connection",
  "date",
  "content-length",
]);
const HELLO = Buffer.from("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", "latin1");

function serve(socket: TLSSocket): void {
  socket.setNoDelay(true);
  socket.on("error", () => undefined);
  let pending = "";
  let busy = false;
  const next = (): void => {
    const end = pending.indexOf("\r\n\r\n");
    if (end < 0 || busy) return;
    const headText = pending.slice(0, end);
    pending = pending.slice(end + 4);
    if (mode === "hello") {
      socket.write(HELLO);
      next();
      return;
    }
    const lines = headText.split("\r\n");
    const [method, path] = lines[0]!.split(" ") as [string, string];
    const headers: string[] = [];
    for (let i = 1; i < lines.length; i++) {
      const l = lines[i]!;
      const c = l.indexOf(":");
      const name = l.slice(0, c);
      if (!DROP.has(name.toLowerCase())) headers.push(name, l.slice(c + 1).trim());
    }
    headers.push("x-forwarded-proto", "https");
    busy = true;
    let out = "";
    client.request(
      { method, path, headers, body: null },
      {
        onHead(status, statusText, h) {
          out = `HTTP/1.1 ${status} ${statusText}\r\n`;
          let len = -1;
          for (let i = 0; i < h.length; i += 2) {
            const k = h[i]!.toLowerCase();
            if (k === "content-length") len = Number(h[i + 1]);
            else if (!DROP.has(k)) out += `${h[i]!}: ${h[i + 1]!}\r\n`;
          }
          out += len >= 0 ? `Content-Length: ${len}\r\n\r\n` : "Transfer-Encoding: chunked\r\n\r\n";
          return true;
        },
        onData(chunk) {
          if (out) {
            socket.write(Buffer.concat([Buffer.from(out, "latin1"), chunk]));
            out = "";
          } else socket.write(chunk);
          return true;
        },
        onEnd() {
          if (out) socket.write(out, "latin1");
          out = "";
          busy = false;
          next();
        },
        onError() {
          socket.destroy();
        },
      },
    );
  };
  socket.on("data", (b: Buffer) => {
    pending += b.toString("latin1");
    next();
  });
}

const server = createServer(
  { key: readFileSync(keyFile), cert: readFileSync(certFile), ALPNProtocols: ["http/1.1"] },
  serve,
);
server.listen(0, "127.0.0.1", () =>
  process.stdout.write(`front listening ${(server.address() as { port: number }).port}\n`),
);
