/**
 * A PROTOTYPE, for `bench/front-proto.ts` only: the request path a native proxy front would have — uWebSockets.js
 * `SSLApp` terminating TLS and parsing HTTP, undici's `Pool.dispatch` to the upstream with keep-alive, the answer
 * streamed back corked. It has none of the proxy's hygiene, limits, health checks, certificates or WebSockets; it
 * shows the ceiling of that design on this machine, not a proxy to ship.
 * Usage: node … uws-front.ts <upstream origin> <key.pem> <cert.pem>; prints `front listening <port>`.
 */
import { Pool } from "undici";
import { uws } from "./uws.js";

const [origin, keyFile, certFile] = process.argv.slice(2) as [string, string, string];
const pool = new Pool(origin, { connections: 64 });
/** Hop-by-hop (both ways) and what uWS writes itself (length, framing, date). */
const DROP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "proxy-connection",
  "content-length",
  "date",
]);

const app = uws.SSLApp({ key_file_name: keyFile, cert_file_name: certFile });
app.any("/*", (res, req) => {
  let aborted = false;
  res.onAborted(() => (aborted = true));
  const query = req.getQuery();
  const headers: string[] = [];
  req.forEach((k, v) => {
    if (!DROP.has(k)) headers.push(k, v);
  });
  headers.push("x-forwarded-proto", "https");
  pool.dispatch(
    {
      origin,
      method: req.getMethod().toUpperCase() as "GET",
      path: query ? `${req.getUrl()}?${query}` : req.getUrl(),
      headers,
    },
    {
      onConnect() {},
      onHeaders(status: number, raw: Buffer[], _resume: () => void, text: string) {
        if (aborted) return false;
        res.cork(() => {
          res.writeStatus(`${status} ${text}`);
          for (let i = 0; i < raw.length; i += 2) {
            const k = raw[i]!.toString("latin1").toLowerCase();
            if (!DROP.has(k)) res.writeHeader(k, raw[i + 1]!.toString("latin1"));
          }
        });
        return true;
      },
      onData(chunk: Buffer) {
        if (!aborted) res.cork(() => res.write(chunk));
        return true;
      },
      onComplete() {
        if (!aborted) res.cork(() => res.end());
      },
      onError(err: Error) {
        if (!aborted) res.cork(() => res.writeStatus("502 Bad Gateway").end(err.message));
      },
    } as never,
  );
});
app.listen("127.0.0.1", 0, (s) => {
  if (!s) throw new Error("cannot listen");
  process.stdout.write(`front listening ${uws.us_socket_local_port(s)}\n`);
});
