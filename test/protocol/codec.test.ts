import t from "tap";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  ErrorCode,
  ProtocolError,
  asAgentControl,
  asAgentRegistration,
  asClientCommand,
  asJobCancel,
  asJobDispatch,
  asJobEvent,
  asServerMessage,
  decodeClientFrame,
  decodeMsgpack,
  encodeJson,
  encodeMsgpack,
  withSeqMsgpack,
  parseJson,
  subjects,
  checkToken,
  CODEC_LIMITS,
} from "../../protocol/index.js";
import { SAMPLES } from "./samples.js";

const FIX = join(process.cwd(), "test", "fixtures", "protocol");
const validatorFor = (name: string): ((x: unknown) => unknown) => {
  if (name.startsWith("client.")) return asClientCommand;
  if (name.startsWith("event.")) return asJobEvent;
  if (name === "nats.job.dispatch") return asJobDispatch;
  if (name === "nats.job.cancel") return asJobCancel;
  if (name === "nats.agent.drain") return asAgentControl;
  if (name === "nats.agent.registration") return asAgentRegistration;
  return asServerMessage;
};

t.test(
  "protocol - every message family round-trips through msgpack and JSON and matches its golden encoding",
  async (t) => {
    for (const [name, msg] of Object.entries(SAMPLES)) {
      const validate = validatorFor(name);
      const mp = encodeMsgpack(msg);
      t.same(validate(decodeMsgpack(mp)), msg, `${name} msgpack round trip`);
      t.same(validate(parseJson(encodeJson(msg))), msg, `${name} JSON round trip`);
      t.equal(
        Buffer.from(mp).toString("hex"),
        readFileSync(join(FIX, `${name}.msgpack.hex`), "utf8").trim(),
        `${name} msgpack golden`,
      );
      t.equal(encodeJson(msg), readFileSync(join(FIX, `${name}.json`), "utf8").trim(), `${name} JSON golden`);
    }
  },
);

function expectProto(
  t: {
    ok: (v: unknown, m: string) => void;
    equal: (a: unknown, b: unknown, m: string) => void;
    fail: (m: string) => void;
  },
  fn: () => unknown,
  code: string,
  name: string,
): void {
  try {
    fn();
    t.fail(`${name}: expected ProtocolError ${code}`);
  } catch (err) {
    t.ok(err instanceof ProtocolError, `${name}: is a ProtocolError`);
    t.equal((err as ProtocolError).code, code, `${name}: code ${code}`);
  }
}

t.test("protocol - a node's largest list and dict (agent limits) decode as they were encoded", async (t) => {
  const list = Array.from({ length: 150_000 }, (_, i) => `item ${i}`);
  t.same(decodeMsgpack(encodeMsgpack({ type: "x", value: list })), { type: "x", value: list }, "150,000 items");
  const dict = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i]));
  t.same(decodeMsgpack(encodeMsgpack({ type: "x", value: dict })), { type: "x", value: dict }, "20,000 keys");
  const mixed = {
    type: "x",
    v: [1.5, -1, 2 ** 40, -(2 ** 40), null, true, "é", { a: [[[]]] }, "x".repeat(70_000)],
  };
  t.same(decodeMsgpack(encodeMsgpack(mixed)), mixed, "every scalar kind and empty containers");
  const bytes = decodeMsgpack(encodeMsgpack({ type: "x", b: new Uint8Array(70_000).fill(7) })) as { b: Uint8Array };
  t.equal(bytes.b.byteLength, 70_000, "and bytes (bin32)");
});

t.test("protocol - hostile msgpack is rejected with ProtocolError and the process stays alive", async (t) => {
  // str32 declaring 4 GiB with 3 bytes of payload
  expectProto(
    t,
    () => decodeMsgpack(Uint8Array.from([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61, 0x62, 0x63])),
    ErrorCode.PROTO_ERR_TOO_LARGE,
    "huge str32",
  );
  // array32 declaring 2^32-1 elements
  expectProto(
    t,
    () => decodeMsgpack(Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01])),
    ErrorCode.PROTO_ERR_TOO_LARGE,
    "huge array32",
  );
  // Nested headers each claiming 100,000 items the message does not hold: refused before any array is made.
  const claims = Buffer.concat(Array.from({ length: 200_000 }, () => Buffer.from([0xdd, 0, 1, 0x86, 0xa0])));
  const rssBefore = process.memoryUsage().rss;
  expectProto(t, () => decodeMsgpack(claims), ErrorCode.PROTO_ERR_TOO_LARGE, "nested array32 claims (1 MB)");
  const grewMb = (process.memoryUsage().rss - rssBefore) / 1e6;
  t.ok(grewMb < 50, `and nothing was allocated for them (rss grew ${grewMb.toFixed(1)} MB)`);
  const nested = (levels: number) => Buffer.concat([Buffer.alloc(levels, 0x91), Buffer.from([0xc0])]);
  t.same(decodeMsgpack(nested(64)), JSON.parse(`${"[".repeat(64)}null${"]".repeat(64)}`), "64 nested arrays decode");
  expectProto(t, () => decodeMsgpack(nested(65)), ErrorCode.PROTO_ERR_SHAPE, "65 nested arrays: too deep");
  // map32 declaring 2^32-1 entries
  expectProto(
    t,
    () => decodeMsgpack(Uint8Array.from([0xdf, 0xff, 0xff, 0xff, 0xff])),
    ErrorCode.PROTO_ERR_TOO_LARGE,
    "huge map32",
  );
  // bin32 declaring 1 GiB
  expectProto(
    t,
    () => decodeMsgpack(Uint8Array.from([0xc6, 0x40, 0x00, 0x00, 0x00, 0x00])),
    ErrorCode.PROTO_ERR_TOO_LARGE,
    "huge bin32",
  );
  // {"__proto__": {"polluted": true}} and {"constructor": 1}
  const proto = Uint8Array.from([
    0x81,
    0xa9,
    ...Buffer.from("__proto__"),
    0x81,
    0xa8,
    ...Buffer.from("polluted"),
    0xc3,
  ]);
  expectProto(t, () => decodeMsgpack(proto), ErrorCode.PROTO_ERR_FORBIDDEN_KEY, "__proto__ key");
  const ctor = Uint8Array.from([0x81, 0xab, ...Buffer.from("constructor"), 0x01]);
  expectProto(t, () => decodeMsgpack(ctor), ErrorCode.PROTO_ERR_FORBIDDEN_KEY, "constructor key");
  t.equal(({} as Record<string, unknown>).polluted, undefined, "Object.prototype untouched");
  // truncated frames: every strict prefix of a valid encoding
  const full = encodeMsgpack(SAMPLES["event.chunk"]);
  let rejected = 0;
  for (let i = 1; i < full.length; i++) {
    try {
      decodeMsgpack(full.subarray(0, i));
    } catch (err) {
      if (err instanceof ProtocolError) rejected++;
    }
  }
  t.equal(rejected, full.length - 1, "every truncated prefix is a ProtocolError");
  expectProto(t, () => decodeMsgpack(new Uint8Array(0)), ErrorCode.PROTO_ERR_DECODE, "empty");
  expectProto(
    t,
    () => decodeMsgpack(new Uint8Array(CODEC_LIMITS.maxMessageBytes + 1)),
    ErrorCode.PROTO_ERR_TOO_LARGE,
    "oversized message",
  );
});

t.test("protocol - hostile JSON is rejected with ProtocolError", async (t) => {
  expectProto(
    t,
    () => parseJson('{"__proto__": {"polluted": true}}'),
    ErrorCode.PROTO_ERR_FORBIDDEN_KEY,
    "__proto__ JSON",
  );
  expectProto(
    t,
    () => parseJson('{"a": {"constructor": {"prototype": 1}}}'),
    ErrorCode.PROTO_ERR_FORBIDDEN_KEY,
    "nested constructor JSON",
  );
  expectProto(t, () => parseJson("{not json"), ErrorCode.PROTO_ERR_DECODE, "malformed JSON");
  expectProto(t, () => parseJson("x".repeat(100), 50), ErrorCode.PROTO_ERR_TOO_LARGE, "oversized JSON");
  t.same(parseJson('{"text": "the word constructor is fine in a value"}'), {
    text: "the word constructor is fine in a value",
  });
});

t.test(
  "protocol - JSON from an editor that writes a byte order mark is read; one inside the text is not",
  async (t) => {
    t.same(parseJson('\ufeff{"params": {"name": "Ada"}}'), { params: { name: "Ada" } }, "a leading BOM is ignored");
    t.same(
      decodeClientFrame(Buffer.from('\ufeff{"command": "get_status", "data": {}}'), false, 1024),
      { command: "get_status", data: {} },
      "a /ws text frame too",
    );
    expectProto(t, () => parseJson('{"a": 1}\ufeff'), ErrorCode.PROTO_ERR_DECODE, "a BOM after the value");
    expectProto(t, () => parseJson('\ufeff\ufeff{"a": 1}'), ErrorCode.PROTO_ERR_DECODE, "two BOMs");
    t.same(parseJson('{"a": "\ufeff"}'), { a: "\ufeff" }, "a BOM inside a string stays");
  },
);

t.test("protocol - client frames are validated with errors that name the problem", async (t) => {
  expectProto(t, () => decodeClientFrame('{"data": {}}', false), ErrorCode.PROTO_ERR_SHAPE, "no command");
  expectProto(
    t,
    () => decodeClientFrame('{"command": "fly", "data": {}}', false),
    ErrorCode.PROTO_ERR_UNKNOWN_TYPE,
    "unknown command",
  );
  expectProto(
    t,
    () => decodeClientFrame('{"command": "cancel_job", "data": {}}', false),
    ErrorCode.PROTO_ERR_SHAPE,
    "cancel without job_id",
  );
  expectProto(
    t,
    () => decodeClientFrame('{"command": "run_job", "data": {"params": {}}}', false),
    ErrorCode.PROTO_ERR_SHAPE,
    "run without workflow",
  );
  expectProto(t, () => decodeClientFrame("[1,2]", false), ErrorCode.PROTO_ERR_SHAPE, "array frame");
  expectProto(
    t,
    () => decodeClientFrame(Uint8Array.from([0xff, 0xfe]), false),
    ErrorCode.PROTO_ERR_DECODE,
    "invalid UTF-8 text",
  );
  const bin = encodeMsgpack({ command: "ping", data: {} });
  t.same(decodeClientFrame(bin, true), { command: "ping", data: {} }, "msgpack frame decodes");
});

t.test("protocol - subject builders reject tokens that would widen a subscription", async (t) => {
  t.equal(subjects.jobEvents("abc"), "nw.events.abc.gw");
  t.equal(subjects.jobEvents("abc", "agent-1"), "nw.events.abc.agent-1");
  for (const bad of ["a.b", "*", ">", "a b", "", "x\ty"]) {
    t.throws(() => subjects.jobEvents(bad), { code: ErrorCode.PROTO_ERR_BAD_TOKEN }, `rejects ${JSON.stringify(bad)}`);
  }
  t.throws(() => checkToken("pool.x", "pool"));
});

t.test("protocol - any JSON-shaped value survives a msgpack round trip (property)", async (t) => {
  const fc = await import("fast-check");
  const safeKey = fc.string({ maxLength: 12 }).filter((k) => !["__proto__", "constructor", "prototype"].includes(k));
  const value = fc.letrec((tie) => ({
    v: fc.oneof(
      { depthSize: "small" },
      fc.string({ maxLength: 40 }),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie("v"), { maxLength: 5 }),
      fc.dictionary(safeKey, tie("v"), { maxKeys: 5 }),
    ),
  })).v;
  fc.assert(
    fc.property(value, (v) => {
      t.same(decodeMsgpack(encodeMsgpack(v)), v);
      return true;
    }),
    { numRuns: 300 },
  );
  t.pass("300 random values round-tripped");
});

t.test(
  "protocol - withSeqMsgpack gives the bytes of encoding the map with seq added (property, all int widths, map16)",
  async (t) => {
    const fc = await import("fast-check");
    const safeKey = fc
      .string({ maxLength: 8 })
      .filter((k) => !["__proto__", "constructor", "prototype", "seq"].includes(k));
    const leaf = fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.boolean(),
      fc.constant(null),
    );
    // Up to 40 keys: fixmaps on both sides of the 15-entry boundary (15 + seq needs a map16 header) and map16s.
    const map = fc.dictionary(safeKey, leaf, { maxKeys: 40 });
    const edges = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 0xffff_ffff, 0x1_0000_0000, Number.MAX_SAFE_INTEGER];
    const seq = fc.oneof(fc.constantFrom(...edges), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
    let sawBoundary = false;
    // fast-check reports the smallest map and seq whose bytes differ, if any.
    fc.assert(
      fc.property(map, seq, (m, s) => {
        if (Object.keys(m).length === 15) sawBoundary = true;
        const spliced = withSeqMsgpack(encodeMsgpack(m), s);
        return spliced !== null && Buffer.from(spliced).equals(Buffer.from(encodeMsgpack({ ...m, seq: s })));
      }),
      { numRuns: 400 },
    );
    t.pass("400 random maps: spliced bytes equal the encoder's");
    // The 15-key case by hand in any case: the header grows from one byte to three.
    const fifteen = Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`k${i}`, i]));
    t.same(
      Buffer.from(withSeqMsgpack(encodeMsgpack(fifteen), 300)!),
      Buffer.from(encodeMsgpack({ ...fifteen, seq: 300 })),
      `15 keys → map16${sawBoundary ? " (also seen at random)" : ""}`,
    );
    t.same(decodeMsgpack(withSeqMsgpack(encodeMsgpack({ type: "chunk", content: "hi" }), 42)!), {
      type: "chunk",
      content: "hi",
      seq: 42,
    });
  },
);

t.test(
  "protocol - withSeqMsgpack refuses what it cannot extend (arrays, scalars, empty bytes, map32, bad seq)",
  async (t) => {
    t.equal(withSeqMsgpack(encodeMsgpack([1, 2]), 1), null, "array");
    t.equal(withSeqMsgpack(encodeMsgpack("x"), 1), null, "string");
    t.equal(withSeqMsgpack(new Uint8Array(0), 1), null, "empty");
    t.equal(withSeqMsgpack(Uint8Array.of(0xdf, 0, 0, 0, 0), 1), null, "map32");
    t.equal(withSeqMsgpack(Uint8Array.of(0xde, 0xff, 0xff), 1), null, "full map16");
    t.equal(withSeqMsgpack(Uint8Array.of(0xde, 0x00), 1), null, "truncated map16 header");
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53])
      t.equal(withSeqMsgpack(encodeMsgpack({ a: 1 }), bad), null, `seq ${bad}`);
  },
);
