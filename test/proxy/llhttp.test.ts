/**
 * The contract of Node's internal request parser (proxy/llhttp.ts), which the proxy's front relies on: this file
 * fails on any Node where `_http_common.HTTPParser` is missing or parses differently: callbacks and their
 * arguments, header batches, upgrade offsets, and the refusals the request-smuggling defences depend on, with their
 * error codes. Run it on every Node upgrade; add the version to `CHECKED_NODE_VERSIONS` when it passes.
 */
import t from "tap";
import { CHECKED_NODE_VERSIONS, checkRequestParser, newRequestParser } from "../../proxy/internal.js";

type Ev =
  | { kind: "headers"; fields: number; url: string }
  | {
      kind: "head";
      version: string;
      fields: number | null;
      method: string;
      url: string | null;
      upgrade: boolean;
      keepAlive: boolean;
    }
  | { kind: "body"; text: string }
  | { kind: "done" };

/** Feeds `parts` to a fresh parser: what `execute` returned for each (bytes, or the error's code) and the events. */
function parse(parts: string[], maxHeaderBytes = 1024): { results: (number | string)[]; events: Ev[] } {
  const events: Ev[] = [];
  const p = newRequestParser(maxHeaderBytes, {
    onHeaders: (headers, url) => events.push({ kind: "headers", fields: headers.length / 2, url }),
    onHeadersComplete: (major, minor, headers, method, url, upgrade, keepAlive) => {
      const fields = headers === undefined ? null : headers.length / 2;
      events.push({ kind: "head", version: `${major}.${minor}`, fields, method, url: url ?? null, upgrade, keepAlive });
      return 0;
    },
    onBody: (chunk) => events.push({ kind: "body", text: chunk.toString("latin1") }),
    onMessageComplete: () => events.push({ kind: "done" }),
  });
  const results = parts.map((part) => {
    const r = p.execute(Buffer.from(part, "latin1"));
    return typeof r === "number" ? r : `error ${r.code ?? "(no code)"}`;
  });
  p.close();
  return { results, events };
}

const head = (method: string, url: string, fields: number, keepAlive = true, upgrade = false, version = "1.1"): Ev => ({
  kind: "head",
  version,
  fields,
  method,
  url,
  upgrade,
  keepAlive,
});

t.test("llhttp - the binding is there, with the shape the proxy uses", async (t) => {
  t.doesNotThrow(() => checkRequestParser());
  t.ok(CHECKED_NODE_VERSIONS.length > 0);
  if (!CHECKED_NODE_VERSIONS.includes(process.version)) t.comment(`${process.version} is not yet listed as checked`);
});

t.test("llhttp - requests: head, keep-alive rules, pipelining, methods", async (t) => {
  const get = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
  t.same(parse([get]), { results: [get.length], events: [head("GET", "/x", 1), { kind: "done" }] });
  t.same(parse(["GET / HTTP/1.0\r\n\r\n"]).events, [head("GET", "/", 0, false, false, "1.0"), { kind: "done" }]);
  t.same(
    parse(["GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"]).events[0],
    head("GET", "/", 1, true, false, "1.0"),
  );
  t.same(parse(["GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"]).events[0], head("GET", "/", 2, false));
  const two = parse([`${get}DELETE /y HTTP/1.1\r\nHost: a\r\n\r\n`]);
  t.same(two.events, [head("GET", "/x", 1), { kind: "done" }, head("DELETE", "/y", 1), { kind: "done" }], "pipelined");
  for (const m of ["HEAD", "POST", "PUT", "PATCH", "OPTIONS", "CONNECT"]) {
    const target = m === "CONNECT" ? "a:443" : "/";
    t.equal((parse([`${m} ${target} HTTP/1.1\r\nHost: a\r\n\r\n`]).events[0] as { method: string }).method, m);
  }
});

t.test("llhttp - bodies: declared length across reads, chunked decoded", async (t) => {
  const post = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab";
  t.same(parse([post, "cde"]), {
    results: [post.length, 3],
    events: [head("POST", "/", 2), { kind: "body", text: "ab" }, { kind: "body", text: "cde" }, { kind: "done" }],
  });
  const chunked = parse([
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    "2\r\nde\r\n0\r\n\r\n",
  ]);
  t.same(chunked.events, [
    head("POST", "/", 2),
    { kind: "body", text: "abc" },
    { kind: "body", text: "de" },
    { kind: "done" },
  ]);
});

t.test("llhttp - more than 32 fields come in batches before the head completes", async (t) => {
  const fields = Array.from({ length: 40 }, (_, i) => `X-${i}: v\r\n`).join("");
  const { events } = parse([`GET /m HTTP/1.1\r\n${fields}\r\n`], 16 * 1024);
  const batches = events.filter((e): e is Extract<Ev, { kind: "headers" }> => e.kind === "headers");
  t.ok(batches.length >= 1, "at least one batch");
  t.equal(
    batches.reduce((n, b) => n + b.fields, 0),
    40,
    "every field in the batches",
  );
  t.equal(batches.map((b) => b.url).join(""), "/m", "the URL with the first batch");
  t.same(events.slice(batches.length), [
    { kind: "head", version: "1.1", fields: null, method: "GET", url: null, upgrade: false, keepAlive: true },
    { kind: "done" },
  ]);
});

t.test("llhttp - an upgrade stops parsing at the end of its head", async (t) => {
  const h = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
  t.same(parse([`${h}XYZ`]), { results: [h.length], events: [head("GET", "/", 3, true, true), { kind: "done" }] });
});

t.test("llhttp - refusals (request smuggling and limits) and their codes", async (t) => {
  const cases: [string, string][] = [
    [
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "HPE_INVALID_TRANSFER_ENCODING",
    ],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HPE_UNEXPECTED_CONTENT_LENGTH"],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", "HPE_INVALID_CONTENT_LENGTH"],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "HPE_INVALID_TRANSFER_ENCODING"],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "HPE_INVALID_CHUNK_SIZE"],
    ["GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "HPE_INVALID_HEADER_TOKEN"],
    ["GET / HTTP/1.1\r\nHost: a\r\nFoo Bar: x\r\n\r\n", "HPE_INVALID_HEADER_TOKEN"],
    ["GET / HTTP/1.1\nHost: a\n\n", "HPE_INVALID_VERSION"],
    ["GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", "HPE_CR_EXPECTED"],
    ["GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", "HPE_LF_EXPECTED"],
    [`GET / HTTP/1.1\r\nHost: a\r\nX: ${"a".repeat(2000)}\r\n\r\n`, "HPE_HEADER_OVERFLOW"],
  ];
  for (const [bytes, code] of cases) {
    const { results } = parse([bytes]);
    t.same(results, [`error ${code}`], JSON.stringify(bytes.slice(0, 60)));
  }
});

t.test("llhttp - bytes after a request that closes the connection are refused, its request kept", async (t) => {
  const { results, events } = parse(["GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
  t.same(results, ["error HPE_CLOSED_CONNECTION"]);
  t.same(events, [head("GET", "/", 2, false), { kind: "done" }]);
});
