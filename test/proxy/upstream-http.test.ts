/**
 * The proxy's upstream HTTP/1.1 client (proxy/upstream-http.ts): the response parser over every split of the
 * byte stream and against malformed responses, then the client against scripted upstreams on real sockets
 * (keep-alive reuse and its limits, body framing, backpressure, abort, and each way a connection can fail).
 */
import t from "tap";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { PassThrough } from "node:stream";
import {
  ResponseParser,
  RESPONSE_LIMITS,
  UpstreamClient,
  type ResponseHead,
  type ResponseHandler,
} from "../../proxy/upstream-http.js";
import { UpstreamError } from "../../proxy/errors.js";
import { waitFor } from "../helpers/tls-tools.js";

interface Parsed {
  heads: { status: number; statusText: string; headers: string[]; keepAlive: boolean }[];
  body: string;
  ends: number;
}

function recorder(): { parser: ResponseParser; out: Parsed } {
  const out: Parsed = { heads: [], body: "", ends: 0 };
  const parser = new ResponseParser({
    head: (h: ResponseHead) => {
      out.heads.push({ status: h.status, statusText: h.statusText, headers: h.headers, keepAlive: h.keepAlive });
      return true;
    },
    data: (c) => {
      out.body += c.toString("latin1");
    },
    end: () => {
      out.ends++;
    },
  });
  return { parser, out };
}

/** Feeds `wire` cut at `cuts` (sorted offsets) and returns what came out. */
function parse(wire: string, method = "GET", cuts: number[] = []): Parsed & { trailing: boolean } {
  const { parser, out } = recorder();
  parser.start(method);
  const bytes = Buffer.from(wire, "latin1");
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    parser.feed(Buffer.from(bytes.subarray(at, c)));
    at = c;
  }
  return { ...out, trailing: parser.trailing };
}

const RESPONSES: { name: string; wire: string; method?: string; status: number; body: string; keepAlive: boolean }[] = [
  {
    name: "Content-Length",
    wire: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    status: 200,
    body: "hello world",
    keepAlive: true,
  },
  {
    name: "chunked with extensions and trailers",
    wire: "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1\r\n \r\n5 \r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n",
    status: 201,
    body: "hello world",
    keepAlive: true,
  },
  {
    name: "interim 103 then the final response",
    wire: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    status: 200,
    body: "ok",
    keepAlive: true,
  },
  {
    name: "HEAD with a length",
    wire: "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    method: "HEAD",
    status: 200,
    body: "",
    keepAlive: true,
  },
  { name: "204", wire: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, body: "", keepAlive: true },
  {
    name: "304 with a length",
    wire: "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    status: 304,
    body: "",
    keepAlive: true,
  },
  {
    name: "Connection: close",
    wire: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    status: 200,
    body: "x",
    keepAlive: false,
  },
  { name: "HTTP/1.0", wire: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", keepAlive: false },
  {
    name: "HTTP/1.0 keep-alive",
    wire: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx",
    status: 200,
    body: "x",
    keepAlive: true,
  },
  { name: "no status text", wire: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", status: 200, body: "", keepAlive: true },
];

t.test("upstream parser - every response parses the same however the bytes are split", async (t) => {
  for (const r of RESPONSES) {
    const whole = parse(r.wire, r.method);
    t.equal(whole.heads.length, 1, `${r.name}: one final head`);
    t.equal(whole.heads[0]!.status, r.status, `${r.name}: status`);
    t.equal(whole.body, r.body, `${r.name}: body`);
    t.equal(whole.ends, 1, `${r.name}: ended once`);
    t.equal(whole.heads[0]!.keepAlive, r.keepAlive, `${r.name}: keep-alive`);
    t.equal(whole.trailing, false, `${r.name}: nothing left over`);
    let same = true;
    for (let cut = 1; cut < r.wire.length; cut++) {
      const p = parse(r.wire, r.method, [cut]);
      if (JSON.stringify(p) !== JSON.stringify(whole)) same = false;
    }
    const bytewise = parse(
      r.wire,
      r.method,
      Array.from({ length: r.wire.length - 1 }, (_, i) => i + 1),
    );
    t.ok(same, `${r.name}: every two-piece split`);
    t.same(bytewise, whole, `${r.name}: one byte at a time`);
  }
  const h = parse("HTTP/1.1 200 OK\r\nX-A:  spaced\t \r\nX-Latin: caf\xe9\xa0\r\nContent-Length: 0\r\n\r\n").heads[0]!;
  t.same(
    h.headers,
    ["X-A", "spaced", "X-Latin", "caf\xe9\xa0", "Content-Length", "0"],
    "values trimmed of SP and HTAB only; latin1 kept",
  );
});

t.test("upstream parser - a body delimited by the close ends at EOF, anything else does not", async (t) => {
  const { parser, out } = recorder();
  parser.start("GET");
  parser.feed(Buffer.from("HTTP/1.1 200 OK\r\n\r\nstreamed until "));
  parser.feed(Buffer.from("the close"));
  t.equal(out.heads[0]!.keepAlive, false, "not reusable");
  t.equal(out.ends, 0);
  t.equal(parser.eof(), true);
  t.equal(out.body, "streamed until the close");
  t.equal(out.ends, 1);
  const cut = recorder();
  cut.parser.start("GET");
  cut.parser.feed(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"));
  t.equal(cut.parser.eof(), false, "a declared length cut short is incomplete");
  t.equal(cut.out.ends, 0);
  const te = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx");
  t.equal(te.heads[0]!.keepAlive, false, "a coding other than chunked is read until the close");
  t.equal(te.body, "xx");
});

t.test("upstream parser - bytes after the end of a response are flagged", async (t) => {
  const p = parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n");
  t.equal(p.body, "ok");
  t.equal(p.ends, 1);
  t.equal(p.trailing, true);
});

t.test("upstream parser - malformed responses are refused with PROXY_ERR_UPSTREAM_PROTOCOL", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", /bad status line/],
    ["HTTP/2 status line", "HTTP/2 200\r\n\r\n", /bad status line/],
    ["status out of range", "HTTP/1.1 600 Weird\r\n\r\n", /bad status line/],
    ["obs-fold", "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n", /folding/],
    ["no colon", "HTTP/1.1 200 OK\r\nbroken line\r\n\r\n", /bad field line/],
    ["space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", /bad field line/],
    ["bare LF in the head", "HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 0\r\n\r\n", /control character/],
    ["NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", /control character/],
    [
      "CL and TE",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      /both Content-Length and Transfer-Encoding/,
    ],
    ["conflicting CL", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", /conflicting/],
    ["CL list that disagrees", "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd", /conflicting/],
    ["signed CL", "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", /bad Content-Length/],
    ["chunked not last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", /not the last/],
    ["chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", /not the last/],
    ["bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", /bad chunk-size/],
    [
      "0x chunk size",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
      /bad chunk-size/,
    ],
    [
      "chunk data without CRLF",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
      /not followed by CRLF/,
    ],
    ["bare LF after a chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n", /bare LF/],
    ["unrequested 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", /101/],
    ["head over the limit", `HTTP/1.1 200 OK\r\nX-Big: ${"a".repeat(RESPONSE_LIMITS.headBytes)}\r\n\r\n`, /head over/],
    ["endless head", `HTTP/1.1 200 OK\r\n${"X-A: b\r\n".repeat(RESPONSE_LIMITS.headBytes / 8 + 1)}`, /head over/],
    [
      "chunk-size line over the limit",
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;${"e".repeat(RESPONSE_LIMITS.chunkLineBytes)}`,
      /chunk-size line too long/,
    ],
    [
      "trailers over the limit",
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n${"X-T: v\r\n".repeat(RESPONSE_LIMITS.trailerBytes / 8 + 1)}\r\n`,
      /trailers too long/,
    ],
  ];
  for (const [name, wire, message] of cases) {
    let caught: unknown = null;
    try {
      parse(wire);
    } catch (err) {
      caught = err;
    }
    t.ok(
      caught instanceof UpstreamError && caught.code === "PROXY_ERR_UPSTREAM_PROTOCOL" && !caught.connectionLevel,
      `${name}: refused`,
    );
    t.match((caught as Error | null)?.message ?? "", message, `${name}: says why`);
  }
});

// ---- The client, against scripted upstreams on real sockets. ----

interface Script {
  server: Server;
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  /** Raw bytes received, per connection, in order. */
  received: string[];
  sockets: Socket[];
  close(): Promise<void>;
}

/**
 * An upstream whose behaviour is `onRequest(socket, index, request)` for every complete request head (and body,
 * when `Content-Length` or chunked framing says it is complete).
 */
async function scripted(onRequest: (s: Socket, conn: number, raw: string) => void): Promise<Script> {
  const sockets: Socket[] = [];
  const script: Script = {
    server: createServer((s) => {
      const conn = script.accepted++;
      sockets.push(s);
      script.received[conn] = "";
      let buf = "";
      s.on("data", (d) => {
        script.received[conn] += d.toString("latin1");
        buf += d.toString("latin1");
        for (;;) {
          const end = buf.indexOf("\r\n\r\n");
          if (end < 0) return;
          const head = buf.slice(0, end + 4);
          let total = end + 4;
          const cl = /\r\ncontent-length: (\d+)/i.exec(head);
          if (cl) total += Number(cl[1]);
          else if (/\r\ntransfer-encoding: chunked/i.test(head)) {
            const last = buf.indexOf("\r\n0\r\n\r\n", end);
            if (last < 0) return;
            total = last + 7;
          }
          if (buf.length < total) return;
          const raw = buf.slice(0, total);
          buf = buf.slice(total);
          onRequest(s, conn, raw);
        }
      });
      s.on("error", () => undefined);
    }),
    port: 0,
    accepted: 0,
    received: [],
    sockets,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        script.server.close(() => r());
      }),
  };
  await new Promise<void>((r) => script.server.listen(0, "127.0.0.1", r));
  script.port = (script.server.address() as { port: number }).port;
  return script;
}

/** A scripted upstream and a client to it, both closed when the test ends. */
async function withClient(
  t: { teardown(fn: () => unknown): void },
  onRequest: (s: Socket, conn: number, raw: string) => void,
  opts?: { keepAliveMs?: number },
): Promise<{ up: Script; client: UpstreamClient }> {
  const up = await scripted(onRequest);
  t.teardown(() => up.close());
  const client = new UpstreamClient("127.0.0.1", up.port, opts);
  t.teardown(() => client.close());
  return { up, client };
}

interface Outcome {
  status: number;
  headers: string[];
  body: string;
  error: UpstreamError | null;
  ended: boolean;
}

/** One request through `client`; resolves when it ended or failed. */
function send(
  client: UpstreamClient,
  opts: {
    method?: string;
    path?: string;
    headers?: string[];
    body?: { stream: PassThrough; length: number | null };
  } = {},
): Promise<Outcome> {
  return new Promise((resolve) => {
    const o: Outcome = { status: 0, headers: [], body: "", error: null, ended: false };
    const handler: ResponseHandler = {
      onHead(status, _text, headers) {
        o.status = status;
        o.headers = headers;
        return true;
      },
      onData(c) {
        o.body += c.toString("latin1");
        return true;
      },
      onEnd() {
        o.ended = true;
        resolve(o);
      },
      onError(err) {
        o.error = err;
        resolve(o);
      },
    };
    client.request(
      {
        method: opts.method ?? "GET",
        path: opts.path ?? "/",
        headers: opts.headers ?? ["Host", "gw.test"],
        body: opts.body ?? null,
      },
      handler,
    );
  });
}

const ok = (s: Socket, body = "ok", extra = ""): void => {
  s.write(`HTTP/1.1 200 OK\r\n${extra}Content-Length: ${body.length}\r\n\r\n${body}`);
};

t.test("upstream client - keeps one connection alive across requests and adds Host when missing", async (t) => {
  const { up, client } = await withClient(t, (s, conn, raw) => ok(s, `conn ${conn}: ${raw.split("\r\n")[0]}`));
  for (let i = 0; i < 3; i++) {
    const o = await send(client, { path: `/r${i}` });
    t.equal(o.body, `conn 0: GET /r${i} HTTP/1.1`);
  }
  t.equal(up.accepted, 1, "one connection for three requests");
  t.equal(client.idleConnections, 1);
  await send(client, { headers: [] });
  t.match(
    up.received[0]!,
    new RegExp(`GET / HTTP/1\\.1\\r\\nHost: 127\\.0\\.0\\.1:${up.port}\\r\\n\\r\\n$`),
    "Host from the target when the client sent none",
  );
});

t.test(
  "upstream client - a connection is not reused after Connection: close, HTTP/1.0, a close-delimited body or a short Keep-Alive",
  async (t) => {
    const answers = [
      (s: Socket) => ok(s, "a", "Connection: close\r\n"),
      (s: Socket) => s.write("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb"),
      (s: Socket) => s.end("HTTP/1.1 200 OK\r\n\r\nc until close"),
      (s: Socket) => ok(s, "d", "Keep-Alive: timeout=1\r\n"),
      (s: Socket) => ok(s, "e"),
    ];
    let n = 0;
    const { up, client } = await withClient(t, (s) => answers[n++]!(s));
    const bodies: string[] = [];
    for (let i = 0; i < answers.length; i++) {
      const o = await send(client);
      t.equal(o.error, null);
      bodies.push(o.body);
    }
    t.same(bodies, ["a", "b", "c until close", "d", "e"]);
    t.equal(up.accepted, 5, "a new connection after each of the four");
  },
);

t.test(
  "upstream client - an idle connection the upstream closes is dropped, and the next request opens a new one",
  async (t) => {
    const { up, client } = await withClient(t, (s) => ok(s));
    await send(client);
    up.sockets[0]!.end();
    await waitFor(() => client.connections === 0, 5_000, "the closed connection to leave the pool");
    const o = await send(client);
    t.equal(o.error, null);
    t.equal(o.body, "ok");
    t.equal(up.accepted, 2);
  },
);

t.test("upstream client - idle connections close after keepAliveMs", async (t) => {
  const { client } = await withClient(t, (s) => ok(s), { keepAliveMs: 300 });
  await send(client);
  t.equal(client.connections, 1);
  await waitFor(() => client.connections === 0, 5_000, "the idle connection to be closed");
  t.pass("closed by the sweep");
});

t.test("upstream client - bytes on an idle connection close it", async (t) => {
  const { up, client } = await withClient(t, (s) => {
    ok(s);
    setTimeout(() => s.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"), 50);
  });
  await send(client);
  await waitFor(() => client.connections === 0, 5_000, "the connection with stray bytes to be closed");
  const o = await send(client);
  t.equal(o.body, "ok", "the next request is not answered by the stray response");
  t.equal(up.accepted, 2);
});

t.test("upstream client - closed before answering: retryable only on a reused connection", async (t) => {
  let n = 0;
  const { client } = await withClient(t, (s) => (n++ === 0 ? ok(s) : s.destroy()));
  await send(client);
  const reused = await send(client);
  t.ok(reused.error instanceof UpstreamError);
  t.equal(reused.error?.code, "PROXY_ERR_UPSTREAM_CLOSED");
  t.equal(reused.error?.retryable, true, "a reused connection closed before any answer");
  t.equal(reused.error?.connectionLevel, true);
  const fresh = await send(client);
  t.equal(fresh.error?.code, "PROXY_ERR_UPSTREAM_CLOSED");
  t.equal(fresh.error?.retryable, false, "a fresh connection is no keep-alive race");
});

t.test("upstream client - closed mid-response is an error, not a short body", async (t) => {
  const { client } = await withClient(t, (s) => s.end("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"));
  const o = await send(client);
  t.equal(o.status, 200);
  t.equal(o.ended, false);
  t.equal(o.error?.code, "PROXY_ERR_UPSTREAM_CLOSED");
  t.equal(o.error?.retryable, false);
  t.match(o.error?.message ?? "", /mid-response/);
});

t.test("upstream client - a refused connection is PROXY_ERR_UPSTREAM_CONNECT with its errno", async (t) => {
  const up = await scripted(() => undefined);
  const port = up.port;
  await up.close();
  const client = new UpstreamClient("127.0.0.1", port);
  t.teardown(() => client.close());
  const o = await send(client);
  t.equal(o.error?.code, "PROXY_ERR_UPSTREAM_CONNECT");
  t.equal(o.error?.errno, "ECONNREFUSED");
  t.equal(o.error?.connectionLevel, true);
  t.equal(client.connections, 0);
  client.close();
  const closed = await send(client);
  t.equal(closed.error?.code, "PROXY_ERR_UPSTREAM_CONNECT", "a closed client fails requests at once");
});

t.test(
  "upstream client - a connect that hangs fails after connectTimeoutMs as PROXY_ERR_UPSTREAM_CONNECT (ETIMEDOUT)",
  async (t) => {
    // A hang on loopback: a listener in a stopped process with a backlog of one. The kernel completes handshakes
    // into its accept queue until it is full, then drops every SYN, so a connect neither succeeds nor is refused.
    const child = spawn(
      process.execPath,
      [
        "-e",
        "const s = require('net').createServer(); s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => { process.stdout.write(s.address().port + '\\n'); process.kill(process.pid, 'SIGSTOP'); });",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    t.teardown(() => child.kill("SIGKILL"));
    const port = Number(
      await new Promise<string>((resolve) => child.stdout!.once("data", (d: Buffer) => resolve(d.toString().trim()))),
    );
    await waitFor(
      async () => /^T/m.test(readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1] ?? ""),
      5_000,
      "listener stopped",
    );
    const fillers: Socket[] = [];
    t.teardown(() => {
      for (const f of fillers) f.destroy();
    });
    let hung = false;
    while (!hung && fillers.length < 64) {
      const f = connect(port, "127.0.0.1");
      fillers.push(f);
      hung = !(await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 300);
        f.once("connect", () => (clearTimeout(timer), resolve(true)));
        f.once("error", () => (clearTimeout(timer), resolve(true)));
      }));
    }
    t.ok(hung, `the accept queue filled after ${fillers.length - 1} connections, and the next connect hangs`);

    const client = new UpstreamClient("127.0.0.1", port, { connectTimeoutMs: 400 });
    t.teardown(() => client.close());
    const startedMs = Date.now();
    const o = await send(client);
    const tookMs = Date.now() - startedMs;
    t.equal(o.error?.code, "PROXY_ERR_UPSTREAM_CONNECT", "the exchange fails as a connect failure");
    t.equal(o.error?.errno, "ETIMEDOUT");
    t.match(o.error?.message ?? "", /ETIMEDOUT \(no answer in 400 ms\)/, "saying after how long");
    t.equal(o.error?.connectionLevel, true, "which ejects the upstream");
    t.ok(tookMs >= 390 && tookMs < 5_000, `after the timeout, not before it and not at the kernel's (${tookMs} ms)`);
    t.equal(client.connections, 0, "and the hung socket is gone");
  },
);

t.test("upstream client - a malformed response fails its exchange and closes its connection", async (t) => {
  const { up, client } = await withClient(t, (s) =>
    s.write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
  );
  const o = await send(client);
  t.equal(o.error?.code, "PROXY_ERR_UPSTREAM_PROTOCOL");
  t.equal(o.error?.connectionLevel, false, "one bad response is no evidence the upstream is gone");
  await waitFor(() => up.sockets[0]!.readableEnded || up.sockets[0]!.destroyed, 5_000, "the upstream to see the close");
  t.equal(client.connections, 0);
});

t.test("upstream client - request bodies go out with the client's framing", async (t) => {
  const { up, client } = await withClient(t, (s) => ok(s));
  const declared = new PassThrough();
  const p1 = send(client, { method: "PUT", path: "/d", body: { stream: declared, length: 11 } });
  declared.write("hello ");
  declared.end("world");
  t.equal((await p1).error, null);
  const chunked = new PassThrough();
  const p2 = send(client, { method: "POST", path: "/c", body: { stream: chunked, length: null } });
  chunked.write("hello ");
  chunked.write(Buffer.alloc(0));
  setTimeout(() => chunked.end("world"), 20);
  t.equal((await p2).error, null);
  await send(client, { method: "POST", path: "/e" });
  const raw = up.received[0]!;
  t.match(raw, /PUT \/d HTTP\/1\.1\r\nHost: gw\.test\r\nContent-Length: 11\r\n\r\nhello world/);
  t.match(
    raw,
    /POST \/c HTTP\/1\.1\r\nHost: gw\.test\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n/,
    "each piece a chunk; no empty chunk before the end",
  );
  t.match(raw, /POST \/e HTTP\/1\.1\r\nHost: gw\.test\r\nContent-Length: 0\r\n\r\n$/, "a POST with no body says so");
  t.equal(up.accepted, 1, "all three on one connection");
});

t.test("upstream client - an answer before the body was sent closes the connection after it", async (t) => {
  const { up, client } = await withClient(t, () => undefined);
  up.server.removeAllListeners("connection");
  up.server.on("connection", (s: Socket) => {
    up.accepted++;
    s.once("data", () => s.write("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"));
    s.on("error", () => undefined);
  });
  const body = new PassThrough();
  const p = send(client, { method: "POST", body: { stream: body, length: 1_000_000 } });
  body.write("x".repeat(100));
  const o = await p;
  t.equal(o.status, 413);
  t.equal(o.ended, true);
  await waitFor(() => client.connections === 0, 5_000, "the half-sent connection to close");
  t.equal(body.listenerCount("data"), 0, "the body is no longer read by the exchange");
});

t.test("upstream client - onData returning false pauses the upstream until resume()", async (t) => {
  const size = 8 * 1024 * 1024;
  // The upstream writes the body in pieces as its socket takes them, counting what it handed to the kernel.
  let sent = 0;
  const piece = "z".repeat(64 * 1024);
  const { client } = await withClient(t, (s) => {
    s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
    const more = () => {
      while (sent < size) {
        sent += piece.length;
        if (!s.write(piece)) return void s.once("drain", more);
      }
    };
    more();
  });
  let got = 0;
  let paused = false;
  let pausedOnce = false;
  let resumeFn: () => void = () => undefined;
  const done = new Promise<void>((resolve, reject) => {
    const ex = client.request(
      { method: "GET", path: "/", headers: ["Host", "x"], body: null },
      {
        onHead: () => true,
        onData(c) {
          got += c.length;
          if (got < size / 2 || pausedOnce) return true;
          paused = pausedOnce = true;
          return false;
        },
        onEnd: () => resolve(),
        onError: reject,
      },
    );
    resumeFn = () => ex.resume();
  });
  await waitFor(() => paused, 10_000, "the handler to pause");
  const atPause = got;
  // Past the pause the upstream keeps sending until the kernel's buffers are full: once 1 MiB more than the client
  // had is readable on its socket, a client still reading would take it at its next I/O poll (a few loop turns).
  await waitFor(() => sent - atPause >= 1024 * 1024, 10_000, "1 MiB more sent after the pause");
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  // What was already read in the piece being parsed may still arrive; no new socket read may.
  t.ok(got - atPause <= 256 * 1024, `at most the rest of one read after pausing (${got - atPause} bytes)`);
  paused = false;
  resumeFn();
  await done;
  t.equal(got, size, "every byte after resume");
});

t.test("upstream client - abort() closes the connection and no callback follows", async (t) => {
  const { up, client } = await withClient(t, (s) => s.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart"));
  const calls: string[] = [];
  const ex = client.request(
    { method: "GET", path: "/", headers: ["Host", "x"], body: null },
    {
      onHead: () => (calls.push("head"), true),
      onData: () => (calls.push("data"), true),
      onEnd: () => calls.push("end"),
      onError: () => calls.push("error"),
    },
  );
  await waitFor(() => calls.includes("data"), 5_000, "the first piece");
  ex.abort();
  const seen = calls.length;
  // The upstream sees the close in a loop turn after the one whose close phase ended the client's socket: every
  // callback that closing could cause has had its turn by then.
  await waitFor(() => up.sockets[0]!.readableEnded || up.sockets[0]!.destroyed, 5_000, "the upstream to see the close");
  await new Promise((r) => setImmediate(r));
  t.equal(calls.length, seen, "nothing after abort");
  t.equal(client.connections, 0);
});
