/**
 * The hostile inputs, by family. Each suite sends its inputs through `h` (a health probe after each) and asserts,
 * with every failure named `route input → observed`, what the gateway must do: answer every HTTP route and WS
 * command totally (no 5xx; 4xx JSON with a stable code; undecodable path params 400), refuse cross-site requests,
 * and run hostile graphs without stalling anything.
 */
import fc from "fast-check";
import { encode as msgpack, decode as unmsgpack } from "@msgpack/msgpack";
import WebSocket from "ws";
import type { Test } from "tap";
import { check } from "../helpers/check.js";
import {
  Hostile,
  JSON_HEADERS,
  call,
  codeOf,
  judge,
  p99,
  rawExchange,
  responsesIn,
  startUp,
  type Answer,
} from "./lib.js";

const SEED = 20_240_601;
const sample = <T>(arb: fc.Arbitrary<T>, n: number): T[] => fc.sample(arb, { numRuns: n, seed: SEED });

// ---- path parameters -------------------------------------------------------------------------------------------

/** Params that do not percent-decode, or decode to what no id grammar allows: each must answer 400. */
export const BAD_PARAMS = ["%", "%E0%A4%A", "%C0%AF", "%zz", "%FF", "a%", "%%", "%00", "%0A", "%E2%82"];

/** Every route with a path parameter, `{}` where the parameter goes. */
const PARAM_ROUTES: [string, string][] = [
  ["GET", "/api/workflows/{}"],
  ["PUT", "/api/workflows/{}"],
  ["DELETE", "/api/workflows/{}"],
  ["POST", "/api/workflows/{}/run"],
  ["DELETE", "/api/workflows/{}/run"],
  ["GET", "/api/jobs/{}"],
  ["POST", "/api/jobs/{}/cancel"],
  ["GET", "/api/jobs/{}/events"],
  ["POST", "/api/agents/{}/drain"],
  ["GET", "/api/assets/{}"],
  ["DELETE", "/api/assets/{}"],
  ["GET", "/api/assets/{}/content"],
  ["GET", "/v1/models/{}"],
  ["GET", "/api/threads/{}"],
  ["PUT", "/api/threads/{}"],
  ["DELETE", "/api/threads/{}"],
  ["GET", "/api/messages/{}"],
];

const SAFE = [..."abcXYZ019-_.~!$&'()*+,;=:@"];
/** Path segments: pieces of text and of (often broken) percent-escapes, as a client or an attacker may send. */
const segmentArb = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        "%",
        "%E0%A4%A",
        "%C0%AF",
        "%zz",
        "%FF",
        "%00",
        "%2F",
        "%2e%2e",
        "%u0041",
        "%25",
        "%F0%9F%98",
        "..",
        "%0D%0A",
      ),
      fc.string({ unit: fc.constantFrom(...SAFE), minLength: 1, maxLength: 12 }),
      fc.integer({ min: 0, max: 255 }).map((b) => `%${b.toString(16).padStart(2, "0")}`),
    ),
    { minLength: 1, maxLength: 6 },
  )
  .map((parts) => parts.join(""));

const bodyFor = (method: string, route: string): string | undefined => {
  if (method !== "POST" && method !== "PUT") return undefined;
  if (route.startsWith("/api/workflows/{}") && method === "PUT")
    return JSON.stringify({ graph: { nodes: [], edges: [] } });
  if (route.startsWith("/api/threads")) return JSON.stringify({ title: "t" });
  return JSON.stringify({ params: {} });
};

export async function pathParams(t: Test, h: Hostile, runs: number): Promise<void> {
  const failures: string[] = [];
  for (const [method, route] of PARAM_ROUTES) {
    for (const p of BAD_PARAMS) {
      const path = route.replace("{}", p);
      const a = await h.input(`${method} ${path}`, () => h.send(method, path, bodyFor(method, route)));
      const f = judge(`${method} ${path}`, a, 400);
      if (f) failures.push(f);
    }
    for (const p of sample(segmentArb, runs)) {
      const path = route.replace("{}", p);
      const a = await h.input(`${method} ${path}`, () => h.send(method, path, bodyFor(method, route)));
      const f = judge(`${method} ${path}`, a);
      if (f) failures.push(f);
    }
  }
  const long = "a".repeat(20_000);
  for (const path of [
    `/api/jobs/${long}`,
    `/api/workflows/${"%".repeat(5_000)}`,
    `/api/threads/${"%C0%AF".repeat(2_000)}`,
  ]) {
    const a = await h.input(`GET ${path.slice(0, 40)}…`, () => h.get(path));
    const f = judge(`GET ${path.slice(0, 40)}… (${path.length} chars)`, a);
    if (f) failures.push(f);
  }
  t.same(failures, [], "every path parameter is answered totally; undecodable or ungrammatical ones are 400");
}

// ---- JSON bodies -------------------------------------------------------------------------------------------------

/** Routes with a JSON body, a valid body for each, and its fields. */
const BODY_ROUTES: { method: string; path: string; valid: Record<string, unknown> }[] = [
  {
    method: "POST",
    path: "/api/workflows/hello-world/run",
    valid: { params: { name: "x" }, timeout_s: 30, execution_strategy: "inline", requirements: { pool: "cpu" } },
  },
  {
    method: "PUT",
    path: "/api/workflows/hostile-wf",
    valid: { id: "hostile-wf", name: "w", description: "d", graph: { nodes: [], edges: [] } },
  },
  { method: "POST", path: "/api/workflows", valid: { name: "w", graph: { nodes: [], edges: [] } } },
  {
    method: "POST",
    path: "/v1/chat/completions",
    valid: {
      model: "nobody/none",
      messages: [{ role: "user", content: "hi" }],
      stream: false,
      max_tokens: 5,
      temperature: 0.5,
      top_p: 1,
      stop: ["x"],
      n: 1,
      stream_options: { include_usage: true },
    },
  },
  { method: "POST", path: "/api/threads", valid: { title: "t" } },
  { method: "POST", path: "/api/messages", valid: { thread_id: "thread-none", role: "user", content: "hi" } },
];

const WRONG: unknown[] = [
  "x",
  "",
  0,
  -1,
  1.5,
  1e308,
  -1e308,
  true,
  null,
  [],
  {},
  [1, "a", null],
  { __proto__: 1 },
  "x".repeat(100_000),
  Array.from({ length: 10_000 }, (_, i) => i),
];

const deepArray = (n: number) => "[".repeat(n) + "]".repeat(n);
const deepObject = (n: number) => '{"a":'.repeat(n) + "1" + "}".repeat(n);

export async function jsonBodies(t: Test, h: Hostile, runs: number): Promise<void> {
  const failures: string[] = [];
  const send = async (
    label: string,
    method: string,
    path: string,
    body: string | Buffer,
    headers = JSON_HEADERS,
    expect?: number | number[],
  ) => {
    const a = await h.input(label, () => h.send(method, path, body, headers, 20_000));
    const f = judge(label, a, expect);
    if (f) failures.push(f);
  };
  for (const r of BODY_ROUTES) {
    const at = `${r.method} ${r.path}`;
    // Invalid JSON: 400.
    for (const raw of ["{", "nul", '{"a":}', "\u0000", "[1,]", '{"a" 1}', '"\\ud800"x', "1e99999", "{'a':1}"]) {
      await send(`${at} body ${JSON.stringify(raw)}`, r.method, r.path, raw, JSON_HEADERS, [400, 413, 415, 422]);
    }
    await send(`${at} empty body`, r.method, r.path, "");
    // Deep (at the top and in the route's first field) and huge: total, whatever the answer.
    const first = Object.keys(r.valid)[0]!;
    await send(`${at} 10,000-deep array`, r.method, r.path, deepArray(10_000), JSON_HEADERS, [400, 413, 422]);
    await send(`${at} 10,000-deep object`, r.method, r.path, deepObject(10_000));
    await send(`${at} ${first}=10,000-deep object`, r.method, r.path, `{"${first}":${deepObject(10_000)}}`);
    await send(`${at} ${first}=100,000-deep array`, r.method, r.path, `{"${first}":${deepArray(100_000)}}`);
    await send(
      `${at} 9 MiB body`,
      r.method,
      r.path,
      JSON.stringify({ pad: "x".repeat(9 * 1024 * 1024) }),
      JSON_HEADERS,
      413,
    );
    await send(
      `${at} 7 MiB array of objects`,
      r.method,
      r.path,
      JSON.stringify({ ...r.valid, pad: Array.from({ length: 400_000 }, () => ({ a: 1 })) }),
    );
    // Wrong types in every field, one at a time.
    for (const field of Object.keys(r.valid)) {
      for (const v of WRONG) {
        const body = JSON.stringify({ ...r.valid, [field]: v });
        await send(`${at} ${field}=${JSON.stringify(v)?.slice(0, 40)}`, r.method, r.path, body);
      }
    }
    // Prototype keys, at the top and inside.
    for (const raw of [
      '{"__proto__":{"admin":true,"polluted":1}}',
      '{"constructor":{"prototype":{"polluted":1}}}',
      `{"params":{"__proto__":{"x":1}},"graph":{"__proto__":{"nodes":[]}},"messages":[{"__proto__":{"role":"user"}}]}`,
      '{"params":{"constructor":"x","toString":5,"hasOwnProperty":1,"valueOf":{}}}',
      `{${Object.keys(r.valid)
        .map((k) => `"${k}":{"__proto__":null}`)
        .join(",")}}`,
    ]) {
      await send(`${at} body ${raw.slice(0, 60)}`, r.method, r.path, raw);
    }
    // Generated bodies: arbitrary JSON, and objects over the route's own field names.
    const fields = Object.keys(r.valid);
    const objArb = fc.dictionary(
      fc.oneof(fc.constantFrom(...fields, "__proto__", "constructor", "prototype"), fc.string()),
      fc.jsonValue({ maxDepth: 4 }),
      { maxKeys: 8 },
    );
    for (const v of sample(fc.oneof(fc.jsonValue({ maxDepth: 5 }), objArb), runs)) {
      const raw = JSON.stringify(v) ?? "null";
      await send(`${at} body ${raw.slice(0, 80)}`, r.method, r.path, raw);
    }
  }
  // Cleanup of what a valid-typed body may have made is not needed: the home dir is temporary.
  t.same(failures, [], "every JSON body is answered totally: malformed, deep, huge, wrong-typed, prototype keys");
}

// ---- cross-site requests -----------------------------------------------------------------------------------------

/** Opens a WebSocket to `/ws`; resolves with the socket, or the refusal's status and body. */
export function openWs(
  h: Hostile,
  opts: { protocols?: string[]; headers?: Record<string, string>; origin?: string } = {},
): Promise<{ ws?: WebSocket; status?: number; body?: string; error?: string }> {
  const u = new URL(h.up.front);
  const url = `${u.protocol === "https:" ? "wss" : "ws"}://${u.host}/ws`;
  return new Promise((resolve) => {
    const ws = new WebSocket(url, opts.protocols ?? ["nodeway.json"], {
      rejectUnauthorized: false,
      family: 4,
      headers: opts.headers,
      ...(opts.origin ? { origin: opts.origin } : {}),
      maxPayload: 64 * 1024 * 1024,
    });
    ws.once("open", () => resolve({ ws }));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once("error", (err) => resolve({ error: err.message }));
  });
}

export async function crossSite(t: Test, h: Hostile): Promise<void> {
  const failures: string[] = [];
  const u = new URL(h.up.front);
  for (const origin of [
    "https://evil.example",
    "http://evil.example",
    "null",
    `http://127.0.0.1.evil.example:${u.port}`,
    "http://localhost.evil.example",
  ]) {
    const r = await h.input(`WS upgrade Origin ${origin}`, () => openWs(h, { origin }));
    if (r.ws) {
      r.ws.terminate();
      failures.push(`WS upgrade Origin: ${origin} → opened (wanted a 403 refusal)`);
    } else if (r.status === undefined || r.status < 400 || r.status >= 500 || !codeOf(r.body ?? "")) {
      failures.push(`WS upgrade Origin: ${origin} → ${r.status ?? r.error} ${JSON.stringify(r.body ?? "")}`);
    }
  }
  for (const origin of [undefined, `${u.protocol}//${u.host}`, `${u.protocol}//localhost:${u.port}`]) {
    const r = await h.input(`WS upgrade Origin ${origin}`, () => openWs(h, origin ? { origin } : {}));
    if (r.ws) r.ws.terminate();
    else
      failures.push(
        `WS upgrade Origin: ${origin ?? "(none)"} → refused ${r.status ?? r.error} (a loopback origin must open)`,
      );
  }
  const simple = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
  ];
  const posts: [string, string, string][] = [
    ["POST", "/api/workflows/hello-world/run", '{"params":{"name":"x"}}'],
    ["PUT", "/api/workflows/hostile-cs", '{"graph":{"nodes":[],"edges":[]}}'],
    ["POST", "/api/workflows", '{"graph":{"nodes":[],"edges":[]}}'],
    ["POST", "/v1/chat/completions", '{"model":"x","messages":[{"role":"user","content":"hi"}]}'],
    ["POST", "/api/threads", '{"title":"x"}'],
    ["PUT", "/api/threads/thread-x", '{"title":"x"}'],
    ["POST", "/api/messages", '{"thread_id":"x","role":"user","content":"hi"}'],
  ];
  for (const [method, path, body] of posts) {
    for (const ct of simple) {
      const label = `${method} ${path} Content-Type: ${ct}`;
      const a = await h.input(label, () => h.send(method, path, body, { "content-type": ct }));
      const f = judge(label, a, 415);
      if (f) failures.push(f);
    }
    const label = `${method} ${path} without Content-Type`;
    const a = await h.input(label, () => h.send(method, path, body, {}));
    const f = judge(label, a, 415);
    if (f) failures.push(f);
  }
  for (const host of [
    "evil.example",
    `evil.example:${u.port}`,
    "127.0.0.1.nip.io",
    "localhost.evil.example",
    "[::ffff:1.2.3.4]",
  ]) {
    for (const path of ["/api/workflows", "/api/jobs", "/v1/models"]) {
      const label = `GET ${path} Host: ${host}`;
      const a = await h.input(label, () => call(h.up.front, "GET", path, { headers: { host } }));
      const f = judge(label, a, [400, 403, 421]);
      if (f) failures.push(f);
    }
  }
  t.same(failures, [], "cross-site requests are refused: foreign Origin on /ws, non-JSON POSTs (415), foreign Host");
}

// ---- WebSocket commands ------------------------------------------------------------------------------------------

interface Exchange {
  frames: Record<string, unknown>[];
  closed?: { code: number; reason: string };
}

/** A socket that records its frames (JSON or MessagePack) and can send one and wait for the answer to a ping after it. */
class Sock {
  frames: Record<string, unknown>[] = [];
  closed: { code: number; reason: string } | null = null;
  private n = 0;
  constructor(
    readonly ws: WebSocket,
    readonly binary: boolean,
  ) {
    ws.on("message", (d: Buffer, isBinary: boolean) => {
      try {
        this.frames.push((isBinary ? unmsgpack(d) : JSON.parse(d.toString())) as Record<string, unknown>);
      } catch {
        this.frames.push({ type: "undecodable" });
      }
    });
    ws.on("close", (code, reason) => (this.closed = { code, reason: reason.toString() }));
    ws.on("error", () => undefined);
  }

  static async open(h: Hostile, binary: boolean): Promise<Sock> {
    const r = await openWs(h, { protocols: [binary ? "nodeway.msgpack" : "nodeway.json"] });
    if (!r.ws) throw new Error(`/ws did not open: ${r.status ?? r.error} ${r.body ?? ""}`);
    return new Sock(r.ws, binary);
  }

  encode(frame: unknown): string | Buffer {
    return this.binary ? Buffer.from(msgpack(frame)) : JSON.stringify(frame);
  }

  /** Sends `raw` as is, then a ping; resolves with the frames before the pong (or the close). */
  async exchange(raw: string | Buffer, timeoutMs = 5_000): Promise<Exchange> {
    const from = this.frames.length;
    const id = `probe-${++this.n}`;
    if (!this.closed) this.ws.send(raw, { binary: typeof raw !== "string" });
    if (!this.closed) this.ws.send(this.encode({ command: "ping", request_id: id }), { binary: this.binary });
    try {
      await check(
        () => this.closed !== null || this.frames.slice(from).some((f) => f.type === "pong" && f.request_id === id),
        timeoutMs,
        { name: "pong", intervalMs: 5 },
      );
    } catch {
      /* no pong: reported by the caller */
    }
    const frames = this.frames.slice(from).filter((f) => !(f.type === "pong" && f.request_id === id));
    return { frames, ...(this.closed ? { closed: this.closed } : {}) };
  }
}

/** The error code in an answer frame: `{type: "error", code}` or `{type: "rpc_response", error: {code}}`. */
const wsCode = (f: Record<string, unknown>): string | null => {
  if (f.type === "error" && typeof f.code === "string") return f.code;
  const e = f.error as { code?: unknown } | undefined;
  if (f.type === "rpc_response" && e && typeof e.code === "string") return e.code;
  return null;
};

export async function wsCommands(t: Test, h: Hostile, runs: number): Promise<void> {
  const failures: string[] = [];
  let json = await Sock.open(h, false);
  let bin = await Sock.open(h, true);
  t.teardown(() => (json.ws.terminate(), bin.ws.terminate()));
  /** A refused frame: an error frame with a code, no internal error, and the socket still open. */
  const refused = async (label: string, s: Sock, raw: string | Buffer) => {
    const ex = await h.input(`WS ${label}`, () => s.exchange(raw));
    const codes = ex.frames.map(wsCode).filter((c): c is string => c !== null);
    if (ex.closed) failures.push(`WS ${label} → socket closed ${ex.closed.code} ${ex.closed.reason}`);
    else if (codes.length === 0)
      failures.push(`WS ${label} → no error frame with a code: ${JSON.stringify(ex.frames).slice(0, 200)}`);
    else if (codes.some((c) => /INTERNAL/.test(c)))
      failures.push(`WS ${label} → internal error ${JSON.stringify(ex.frames).slice(0, 200)}`);
  };
  /** Any answer but an internal error or a closed socket. */
  const total = async (label: string, s: Sock, raw: string | Buffer) => {
    const ex = await h.input(`WS ${label}`, () => s.exchange(raw));
    if (ex.closed) failures.push(`WS ${label} → socket closed ${ex.closed.code} ${ex.closed.reason}`);
    else if (ex.frames.some((f) => /INTERNAL/.test(wsCode(f) ?? "")))
      failures.push(`WS ${label} → internal error ${JSON.stringify(ex.frames).slice(0, 200)}`);
  };

  // Unknown and prototype commands, in both encodings.
  for (const command of [
    "nope",
    "",
    "__proto__",
    "constructor",
    "toString",
    "hasOwnProperty",
    "RUN_JOB",
    "run_job ",
    "x".repeat(10_000),
  ]) {
    await refused(`JSON command ${JSON.stringify(command.slice(0, 20))}`, json, JSON.stringify({ command, data: {} }));
    await refused(`msgpack command ${JSON.stringify(command.slice(0, 20))}`, bin, bin.encode({ command, data: {} }));
  }
  for (const raw of [
    "",
    "{",
    "null",
    "[]",
    "1",
    '"run_job"',
    '{"data":{}}',
    '{"command":5}',
    '{"command":null}',
    '{"command":["ping"]}',
    '{"__proto__":{"command":"ping"}}',
  ]) {
    await refused(`JSON frame ${raw}`, json, raw);
  }
  // Wrong types in every command's data.
  const WRONG_DATA: unknown[] = ["x", 5, null, [], true, { __proto__: { job_id: "x" } }];
  const FIELDS: Record<string, string[]> = {
    run_job: ["workflow_id", "graph", "params", "timeout_s", "execution_strategy", "requirements"],
    reconnect_job: ["job_id", "last_seq"],
    cancel_job: ["job_id"],
    get_status: ["job_id"],
    stop: ["job_id", "thread_id"],
    chat_message: ["thread_id", "content", "model", "provider", "system", "max_tokens", "temperature"],
    set_mode: ["mode"],
  };
  for (const [command, fields] of Object.entries(FIELDS)) {
    for (const d of WRONG_DATA) {
      // No data is a listing for `get_status` and a no-op for `stop`: those need only be total.
      const lenient =
        (command === "get_status" || command === "stop") && (d === null || typeof d === "object") && !Array.isArray(d);
      await (lenient ? total : refused)(
        `${command} data=${JSON.stringify(d)}`,
        json,
        JSON.stringify({ command, data: d }),
      );
    }
    for (const field of fields) {
      for (const v of [5, "", -1, 1e308, [], {}, "%", "%E0%A4%A", "x".repeat(100_000)]) {
        // `get_status` without a job_id is a listing, and `stop` of an unknown job is a no-op: both total only.
        const frame = JSON.stringify({ command, data: { [field]: v } });
        await total(`${command} ${field}=${JSON.stringify(v).slice(0, 30)}`, json, frame);
      }
    }
  }
  // MessagePack garbage and deep nesting, and generated frames.
  for (const bytes of sample(fc.uint8Array({ minLength: 1, maxLength: 512 }), runs)) {
    await total(`msgpack garbage ${Buffer.from(bytes).toString("hex").slice(0, 40)}`, bin, Buffer.from(bytes));
    if (bin.closed) bin = await Sock.open(h, true);
  }
  const deepMsgpack = Buffer.concat([Buffer.alloc(100_000, 0x91), Buffer.from([0xc0])]);
  await refused("msgpack 100,000-deep array", bin, deepMsgpack);
  await refused(
    "msgpack 10,000-deep map",
    bin,
    Buffer.concat([Buffer.from(Array.from({ length: 10_000 }, () => [0x81, 0xa1, 0x61]).flat()), Buffer.from([0xc0])]),
  );
  // Each header claims 100,000 items the frame does not hold: the decoder made every such array before reading one
  // item (2,000 of them: 1.7 GB and 5 s; 100,000 ran the gateway out of memory).
  const claims = (head: number[], levels: number) =>
    Buffer.concat(Array.from({ length: levels }, () => Buffer.from(head)));
  await refused("msgpack 2,000 nested array32 claiming 100,000 items", bin, claims([0xdd, 0, 1, 0x86, 0xa0], 2_000));
  await refused("msgpack 100,000 nested array32 claiming 100,000", bin, claims([0xdd, 0, 1, 0x86, 0xa0], 100_000));
  await refused(
    "msgpack 100,000 nested map16 claiming 9,999 pairs",
    bin,
    claims([0xde, 0x27, 0x0f, 0xa1, 0x61], 100_000),
  );
  await refused("msgpack ext type -1 garbage", bin, Buffer.from([0xd4, 0xff, 0x00]));
  await refused("msgpack 4 GiB str header", bin, Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]));
  await refused("msgpack 4 G-element array header", bin, Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]));
  await refused("JSON 10,000-deep data", json, `{"command":"run_job","data":${deepArray(10_000)}}`);
  const frameArb = fc.record(
    {
      command: fc.constantFrom(...Object.keys(FIELDS), "ping", "nope"),
      data: fc.jsonValue({ maxDepth: 4 }),
      request_id: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
    },
    { requiredKeys: ["command"] },
  );
  for (const f of sample(frameArb, runs)) {
    await total(`generated ${JSON.stringify(f).slice(0, 80)}`, json, JSON.stringify(f));
    if (json.closed) json = await Sock.open(h, false);
  }
  t.same(failures, [], "every WS frame is answered totally: unknown commands, wrong types, garbage, deep");
}

/** Oversize frames: refused (an error, or a 1009 close), the gateway and the proxy in front unhurt. */
export async function wsOversize(t: Test, h: Hostile): Promise<void> {
  const failures: string[] = [];
  const json = await Sock.open(h, false);
  const bin = await Sock.open(h, true);
  t.teardown(() => (json.ws.terminate(), bin.ws.terminate()));
  // Oversize frames: refused (an error, or a 1009 close), the gateway unhurt.
  for (const [label, s] of [
    ["JSON", json],
    ["msgpack", bin],
  ] as const) {
    const big = s.binary
      ? Buffer.from(msgpack({ command: "ping", data: { pad: "x".repeat(8 * 1024 * 1024) } }))
      : JSON.stringify({ command: "ping", data: { pad: "x".repeat(8 * 1024 * 1024) } });
    const ex = await h.input(`WS ${label} 8 MiB frame`, () => s.exchange(big, 10_000));
    if (!ex.closed && !ex.frames.some((f) => wsCode(f) !== null))
      failures.push(`WS ${label} 8 MiB frame → neither refused nor closed: ${JSON.stringify(ex.frames).slice(0, 200)}`);
    // 1009 (too big), or 1006 where the server drops the connection mid-frame.
    if (ex.closed && ![1006, 1009].includes(ex.closed.code))
      failures.push(`WS ${label} 8 MiB frame → closed ${ex.closed.code} (wanted 1009)`);
  }
  // Just past the limit (1 MiB by default): a 1009 close that says why, not a dropped connection.
  const near = await Sock.open(h, false);
  t.teardown(() => near.ws.terminate());
  const over = JSON.stringify({ command: "ping", data: { pad: "x".repeat(1024 * 1024 + 512 * 1024) } });
  const nearEx = await h.input("WS JSON 1.5 MiB frame", () => near.exchange(over, 10_000));
  if (nearEx.closed?.code !== 1009 || !/at most \d+ \(wsMaxPayloadBytes\)/.test(nearEx.closed.reason))
    failures.push(
      `WS JSON 1.5 MiB frame → ${JSON.stringify(nearEx.closed ?? nearEx.frames.slice(0, 2))} (wanted 1009)`,
    );
  const after = await openWs(h);
  if (after.ws) after.ws.terminate();
  else failures.push(`WS upgrade after the oversize frames → ${after.status ?? after.error} ${after.body ?? ""}`);
  t.same(failures, [], "oversize WS frames are refused and a new socket opens after them");
}

/** Thousands of follows on one socket: the socket's cap refuses the rest with a code; the gateway stays healthy. */
export async function wsFollows(t: Test, h: Hostile, count: number): Promise<void> {
  const s = await Sock.open(h, false);
  t.teardown(() => s.ws.terminate());
  // Jobs in a pool no agent consumes: they stay queued (followed) and never take the local agent's slots.
  const graph = { nodes: [{ id: "c", type: "nodetool.constant.String", data: { value: "x" } }], edges: [] };
  const from = s.frames.length;
  await h.input(`WS ${count} run_job on one socket`, async () => {
    for (let i = 0; i < count; i++) {
      s.ws.send(
        JSON.stringify({
          command: "run_job",
          request_id: `f${i}`,
          data: { graph, requirements: { pool: "hostile-idle" } },
        }),
      );
    }
    await check(
      () =>
        s.closed !== null ||
        s.frames.slice(from).filter((f) => f.type === "rpc_response" && String(f.request_id).startsWith("f")).length >=
          count,
      120_000,
      { name: "answers to every run_job" },
    );
  });
  const answers = s.frames.slice(from).filter((f) => f.type === "rpc_response" && String(f.request_id).startsWith("f"));
  const limited = answers.filter((f) => wsCode(f) === "GW_ERR_LIMIT").length;
  const internal = answers.filter((f) => /INTERNAL/.test(wsCode(f) ?? "")).length;
  t.equal(s.closed, null, "the socket stays open");
  t.equal(answers.length, count, "every run_job is answered");
  t.ok(limited > 0, `past the per-socket cap run_job is refused GW_ERR_LIMIT (${limited} of ${count})`);
  t.equal(internal, 0, "no internal errors");
  // Reconnects to ids that are not jobs: refused with a code each, however many.
  const from2 = s.frames.length;
  await h.input(`WS ${count} reconnect_job on one socket`, async () => {
    for (let i = 0; i < count; i++)
      s.ws.send(
        JSON.stringify({ command: "reconnect_job", request_id: `r${i}`, data: { job_id: `job-${i}`, last_seq: 0 } }),
      );
    await check(
      () =>
        s.closed !== null || s.frames.slice(from2).filter((f) => String(f.request_id).startsWith("r")).length >= count,
      60_000,
      { name: "answers to every reconnect_job" },
    );
  });
  const rs = s.frames.slice(from2).filter((f) => String(f.request_id).startsWith("r"));
  t.ok(
    rs.length === count && rs.every((f) => wsCode(f) !== null && !/INTERNAL/.test(wsCode(f)!)),
    "every reconnect_job to a non-job is refused with a code",
  );
}

// ---- raw HTTP protocol garbage -----------------------------------------------------------------------------------

export async function rawProtocol(t: Test, h: Hostile): Promise<void> {
  const failures: string[] = [];
  const host = new URL(h.up.front).host;
  const H = `Host: ${host}\r\n`;
  const cases: [string, string | Buffer, "refuse" | "total"][] = [
    [
      "duplicate Content-Length",
      `POST /api/threads HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}`,
      "refuse",
    ],
    [
      "CL + TE smuggling",
      `POST /api/threads HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/jobs/%25 HTTP/1.1\r\n${H}\r\n`,
      "refuse",
    ],
    [
      "TE: chunked, chunked",
      `POST /api/threads HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
      "refuse",
    ],
    [
      "bad chunk size",
      `POST /api/threads HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      "refuse",
    ],
    [
      "negative Content-Length",
      `POST /api/threads HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: -5\r\n\r\n{}`,
      "refuse",
    ],
    [
      "huge Content-Length",
      `POST /api/threads HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n{}`,
      "refuse",
    ],
    [
      "10,000 headers",
      `GET /api/workflows HTTP/1.1\r\n${H}${Array.from({ length: 10_000 }, (_, i) => `X-H${i}: ${i}\r\n`).join("")}\r\n`,
      "refuse",
    ],
    ["one 200 KB header", `GET /api/workflows HTTP/1.1\r\n${H}X-Big: ${"a".repeat(200_000)}\r\n\r\n`, "refuse"],
    ["method FOO", `FOO /api/workflows HTTP/1.1\r\n${H}\r\n`, "total"],
    ["method with NUL", `GE\u0000T /api/workflows HTTP/1.1\r\n${H}\r\n`, "refuse"],
    ["lower-case method", `get /api/workflows HTTP/1.1\r\n${H}\r\n`, "total"],
    ["100 KB method", `${"A".repeat(100_000)} / HTTP/1.1\r\n${H}\r\n`, "refuse"],
    ["HTTP/9.9", `GET /health HTTP/9.9\r\n${H}\r\n`, "total"],
    ["no version", `GET /health\r\n${H}\r\n`, "refuse"],
    ["bare LF", `GET /api/workflows HTTP/1.1\n${H.replace("\r\n", "\n")}\n`, "total"],
    ["header without colon", `GET /api/workflows HTTP/1.1\r\n${H}NoColonHere\r\n\r\n`, "refuse"],
    ["space before colon", `GET /api/workflows HTTP/1.1\r\n${H}Content-Length : 5\r\n\r\n`, "refuse"],
    ["obs-fold header", `GET /api/workflows HTTP/1.1\r\n${H}X-A: 1\r\n  folded\r\n\r\n`, "refuse"],
    ["request-target *", `GET * HTTP/1.1\r\n${H}\r\n`, "total"],
    ["absolute-form evil", `GET http://evil.example/api/workflows HTTP/1.1\r\n${H}\r\n`, "total"],
    ["binary garbage", Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 37 + 11) & 0xff)), "refuse"],
    ["TLS hello on plain", Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]), "refuse"],
    [
      "WS key too short",
      `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n\r\n`,
      "refuse",
    ],
    [
      "WS key not base64",
      `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n\r\n`,
      "refuse",
    ],
    [
      "WS key missing",
      `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      "refuse",
    ],
    [
      "WS key 10 KB",
      `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${"A".repeat(10_000)}\r\n\r\n`,
      "refuse",
    ],
    [
      "WS version 99",
      `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      "refuse",
    ],
    [
      "WS upgrade by POST",
      `POST /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 0\r\n\r\n`,
      "total",
    ],
    [
      "WS 1,000 subprotocols",
      `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: ${Array.from({ length: 1000 }, (_, i) => `p${i}`).join(", ")}\r\n\r\n`,
      "total",
    ],
  ];
  // Independent connections: sent at once, so the quiet periods that end each exchange overlap.
  const answers = await Promise.all(
    cases.map(([label, bytes]) => h.input(`raw ${label}`, () => rawExchange(h.up, bytes))),
  );
  for (const [i, [label, , want]] of cases.entries()) {
    const res = responsesIn(answers[i]!.text);
    const first = res[0];
    if (res.some((x) => x.status >= 500))
      failures.push(
        `raw ${label} → ${res.map((x) => x.status).join(",")} ${JSON.stringify(first?.body.slice(0, 120))}`,
      );
    else if (res.some((x) => x.status >= 400 && !codeOf(x.body))) {
      const bad = res.find((x) => x.status >= 400 && !codeOf(x.body))!;
      failures.push(`raw ${label} → ${bad.status} without a JSON code: ${JSON.stringify(bad.body.slice(0, 120))}`);
    } else if (want === "refuse" && first && first.status < 400)
      failures.push(`raw ${label} → ${first.status} (wanted a 4xx or a closed connection)`);
    else if (want === "refuse" && res.length > 1)
      failures.push(`raw ${label} → ${res.length} responses (a smuggled request was answered)`);
  }
  // Many connections that send half a request and stall: the server must keep answering others.
  const stalls = await h.input("raw 200 half-sent requests", async () => {
    const { connect } = await import("node:net");
    const u = new URL(h.up.front);
    const socks = Array.from({ length: 200 }, () =>
      connect({ host: "127.0.0.1", port: Number(u.port) }, function (this: import("node:net").Socket) {
        this.write(`GET /api/workflows HTTP/1.1\r\n${H}X-Slow: `);
      }),
    );
    for (const s of socks) s.on("error", () => undefined);
    const a = await call(h.up.front, "GET", "/health", { timeoutMs: 1_000 });
    for (const s of socks) s.destroy();
    return a;
  });
  if (stalls.error || stalls.status !== 200)
    failures.push(`raw 200 half-sent requests → /health ${stalls.status} ${stalls.error ?? ""}`);
  t.same(
    failures,
    [],
    "raw-socket HTTP garbage is refused (4xx JSON or a closed connection), never answered 5xx or smuggled",
  );
}

// ---- hostile graphs -----------------------------------------------------------------------------------------------

const edge = (id: string, source: string, target: string, targetHandle: string, sourceHandle = "output") => ({
  id,
  source,
  sourceHandle,
  target,
  targetHandle,
});

/** Saves `graph` as a workflow and submits it; the job id. */
export async function submit(
  h: Hostile,
  id: string,
  nodes: unknown[],
  edges: unknown[],
  timeoutS = 60,
): Promise<string> {
  const put = await h.send("PUT", `/api/workflows/${id}`, JSON.stringify({ graph: { nodes, edges } }));
  if (put.status !== 200) throw new Error(`workflow ${id} refused: ${put.status} ${put.body}`);
  const run = await h.send("POST", `/api/workflows/${id}/run`, JSON.stringify({ params: {}, timeout_s: timeoutS }));
  if (run.status !== 202) throw new Error(`run of ${id} refused: ${run.status} ${run.body}`);
  return (JSON.parse(run.body) as { job_id: string }).job_id;
}

export async function jobStatus(
  h: Hostile,
  jobId: string,
): Promise<{ status: string; error?: unknown; outputs?: Record<string, unknown> }> {
  const a = await h.get(`/api/jobs/${jobId}`);
  return JSON.parse(a.body) as { status: string; error?: unknown };
}

const TERMINAL = ["completed", "failed", "cancelled", "timed_out"];

export async function hostileGraphs(t: Test, h: Hostile): Promise<void> {
  const failures: string[] = [];
  const cases: { name: string; nodes: unknown[]; edges: unknown[]; within: number; want: string[] }[] = [
    {
      name: "catastrophic regex ^(a+)+$ on a×34+!",
      nodes: [
        { id: "r", type: "nodetool.text.RegexMatch", data: { text: `${"a".repeat(34)}!`, pattern: "^(a+)+$" } },
        { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
      ],
      edges: [edge("e", "r", "o", "value")],
      within: 10_000,
      want: ["completed"],
    },
    {
      name: "catastrophic regex validate (x+x+)+y on x×40",
      nodes: [
        { id: "r", type: "nodetool.text.RegexValidate", data: { text: "x".repeat(40), pattern: "(x+x+)+y" } },
        { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
      ],
      edges: [edge("e", "r", "o", "value")],
      within: 10_000,
      want: ["completed"],
    },
    {
      name: "catastrophic regex replace on 1 MB",
      nodes: [
        {
          id: "r",
          type: "nodetool.text.RegexReplace",
          data: { text: "a".repeat(1_000_000), pattern: "(a|aa)+$b", replacement: "x" },
        },
        { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
      ],
      edges: [edge("e", "r", "o", "value")],
      within: 10_000,
      want: ["completed", "failed"],
    },
    {
      name: "sequence of 1e9",
      nodes: [
        { id: "g", type: "nodetool.list.GenerateSequence", data: { start: 0, stop: 1_000_000_000, step: 1 } },
        { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
      ],
      edges: [edge("e", "g", "o", "value")],
      within: 10_000,
      want: ["failed"],
    },
    {
      name: "sequence of 1e15 with step 1",
      nodes: [
        { id: "g", type: "nodetool.list.GenerateSequence", data: { start: -1e15, stop: 1e15, step: 1 } },
        { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
      ],
      edges: [edge("e", "g", "o", "value")],
      within: 10_000,
      want: ["failed"],
    },
  ];
  for (const c of cases) {
    const started = Date.now();
    let jobId = "";
    try {
      jobId = await h.input(`graph ${c.name}`, () =>
        submit(h, `hostile-${c.name.replace(/[^a-z0-9]+/gi, "-").slice(0, 40)}`, c.nodes, c.edges),
      );
    } catch (err) {
      failures.push(`graph ${c.name} → ${(err as Error).message.slice(0, 200)}`);
      continue;
    }
    let rec: { status: string; error?: unknown } = { status: "?" };
    // Health is probed all the while: the job must not stall the gateway.
    while (Date.now() - started < c.within + 5_000) {
      rec = await jobStatus(h, jobId).catch(() => rec);
      if (TERMINAL.includes(rec.status)) break;
      await h.probe(`graph ${c.name} running`);
    }
    const took = Date.now() - started;
    if (!c.want.includes(rec.status))
      failures.push(
        `graph ${c.name} → ${rec.status} after ${took} ms (wanted ${c.want.join("/")}) ${JSON.stringify(rec.error ?? "").slice(0, 160)}`,
      );
    else if (took > c.within)
      failures.push(`graph ${c.name} → ${rec.status} only after ${took} ms (wanted within ${c.within} ms)`);
  }
  t.same(failures, [], "hostile graphs end quickly (linear-time regexes, capped lists) and stall nothing");
}

// ---- a CPU-bound job ----------------------------------------------------------------------------------------------

const spinGraph = (seconds: number) => [[{ id: "s", type: "nodeway.test.Spin", data: { seconds } }], []] as const;

async function waitRunning(h: Hostile, jobId: string): Promise<void> {
  await check(async () => (await jobStatus(h, jobId)).status === "running", 20_000, { name: `job ${jobId} running` });
}

/** `/health`'s p99 while a job spins its thread for 4 s. */
export async function healthWhileSpinning(t: Test, h: Hostile): Promise<number> {
  const [nodes, edges] = spinGraph(4);
  const jobId = await h.input("graph nodeway.test.Spin 4 s", () => submit(h, "hostile-spin", [...nodes], [...edges]));
  await waitRunning(h, jobId);
  const ms: number[] = [];
  const until = Date.now() + 3_000;
  while (Date.now() < until) {
    ms.push(await h.probe("a CPU-bound job"));
    await new Promise((r) => setTimeout(r, 10));
  }
  const p = p99(ms);
  t.ok(p < 1_000, `/health p99 while a CPU-bound job runs: ${p.toFixed(1)} ms`);
  await check(async () => TERMINAL.includes((await jobStatus(h, jobId)).status), 30_000, { name: "spin ends" });
  return p;
}

/** Cancel of a job that spins without looking at its signal ends it within 2 s. */
export async function cancelSpin(t: Test, h: Hostile): Promise<void> {
  const [nodes, edges] = spinGraph(20);
  const jobId = await h.input("graph nodeway.test.Spin 20 s", () =>
    submit(h, "hostile-spin-cancel", [...nodes], [...edges]),
  );
  await waitRunning(h, jobId);
  const started = Date.now();
  const c = await h.input(`cancel ${jobId}`, () => h.send("POST", `/api/jobs/${jobId}/cancel`, "{}"));
  t.equal(c.status, 200, `cancel answers 200: ${c.body}`);
  let status = "?";
  try {
    await check(async () => TERMINAL.includes((status = (await jobStatus(h, jobId)).status)), 2_000, {
      name: "cancelled",
    });
  } catch {
    /* asserted below */
  }
  const took = Date.now() - started;
  t.equal(status, "cancelled", `a cancelled CPU-bound job ends cancelled within 2 s (was ${status} after ${took} ms)`);
}

/** The normal job at the end: hello-world completes. */
export async function finalJob(t: Test, h: Hostile): Promise<void> {
  const a = await h.send(
    "POST",
    "/api/workflows/hello-world/run?wait=true",
    JSON.stringify({ params: { name: "Ada" } }),
    JSON_HEADERS,
    60_000,
  );
  t.equal(a.status, 200, `hello-world answers: ${a.body.slice(0, 200)}`);
  t.match(
    a.status === 200 ? JSON.parse(a.body) : {},
    { status: "completed", outputs: { greeting: ["Hello, Ada!"] } },
    "a normal job completes after all that",
  );
}

/**
 * One hostile file: `nodeway up` (with `--tls`, the inputs through the proxy), the given suites, the CPU-bound
 * job, the final normal job, and the summary line with its assertions.
 */
export function hostileFile(
  tap: Test,
  opts: { tls: boolean; name: string },
  suites: ((t: Test, h: Hostile) => Promise<void>)[],
): void {
  tap.test(`hostile ${opts.name}`, async (t) => {
    const up = await startUp(t, { tls: opts.tls });
    const h = new Hostile(up);
    for (const s of suites) {
      await t.test(s.name || "suite", async (st) => s(st, h));
    }
    let p = NaN;
    await t.test("health while a CPU-bound job runs", async (st) => {
      p = await healthWhileSpinning(st, h);
    });
    await t.test("cancel of a CPU-bound job", async (st) => cancelSpin(st, h));
    await t.test("a normal job completes at the end", async (st) => finalJob(st, h));
    const line = `hostile inputs tried ${h.tried}, process exits ${h.exits()}, health misses ${h.misses}, /health p99 while a CPU-bound job runs ${Number.isNaN(p) ? "n/a" : p.toFixed(1)} ms`;
    process.stderr.write(`${line}\n`);
    t.comment(line);
    t.equal(h.exits(), 0, "the process never exited (nor did its agent)");
    t.equal(h.misses, 0, `/health never missed its 1 s: ${h.missed.join("; ")}`);
  });
}

export type { Answer };
