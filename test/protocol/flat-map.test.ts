/**
 * The decoder's fast path for flat maps (protocol/flat-map.ts) gives exactly what `@msgpack/msgpack` gives, and
 * declines everything else so that the library decodes it or throws its error.
 */
import t from "tap";
import { isDeepStrictEqual } from "node:util";
import { Decoder, Encoder } from "@msgpack/msgpack";
import {
  CODEC_LIMITS,
  ErrorCode,
  ProtocolError,
  asJobEvent,
  decodeEventHead,
  decodeMsgpack,
  encodeMsgpack,
} from "../../protocol/index.js";
import { decodeFlatMap, encodeFlatMap } from "../../protocol/internal.js";
import { SAMPLES } from "./samples.js";

const FORBIDDEN = new Set(["__proto__", "constructor", "prototype"]);
const library = new Decoder();
const libraryEncoder = new Encoder({ ignoreUndefined: true });
const PICK = new Set(["type", "job_id", "seq"]);
const flat = (b: Uint8Array) => decodeFlatMap(b, FORBIDDEN, CODEC_LIMITS.maxMapLength, CODEC_LIMITS.maxBinBytes);

t.test("flat map - random flat maps of scalars decode exactly as the library decodes them (property)", async (t) => {
  const fc = await import("fast-check");
  const key = fc
    .oneof(
      fc.string({ maxLength: 20 }),
      fc.string({ unit: "grapheme", maxLength: 6 }),
      fc.constantFrom("type", "job_id", "seq", "ts", "content"),
    )
    .filter((k) => !FORBIDDEN.has(k));
  const scalar = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: "grapheme", maxLength: 30 }),
    fc.string({ minLength: 200, maxLength: 70_000 }).map((s) => s.slice(0, 300 + (s.length % 70_000))),
    fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 }),
    fc.constantFrom(
      0,
      127,
      128,
      255,
      256,
      65_535,
      65_536,
      -1,
      -32,
      -33,
      -128,
      -129,
      -32_768,
      -32_769,
      2 ** 31 - 1,
      -(2 ** 31),
      2 ** 32 - 1,
    ),
    fc.double(),
    fc.constantFrom(Number.NaN, -0, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY),
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 300 }),
    fc.integer({ min: 0, max: 70_000 }).map((n) => new Uint8Array(n).fill(n & 0xff)),
  );
  let taken = 0;
  fc.assert(
    fc.property(fc.dictionary(key, scalar, { maxKeys: 40 }), (m) => {
      const bytes = encodeMsgpack(m);
      const mine = flat(bytes);
      if (mine !== undefined) taken++;
      const theirs = library.decode(bytes);
      // A 64-bit integer is the one scalar left to the library.
      const has64 = Object.values(m).some(
        (v) => typeof v === "number" && Number.isInteger(v) && (v > 2 ** 32 - 1 || v < -(2 ** 31)),
      );
      if (!has64 && mine === undefined) throw new Error(`declined a flat map: ${JSON.stringify(m).slice(0, 200)}`);
      if (mine !== undefined && !isDeepStrictEqual(mine, theirs))
        throw new Error(`differs for ${JSON.stringify(m).slice(0, 200)}`);
      if (!isDeepStrictEqual(decodeMsgpack(bytes), theirs)) throw new Error("decodeMsgpack differs from the library");
      // Picking keys reads those only, and accepts exactly what the whole decode accepts.
      const picked = decodeFlatMap(bytes, FORBIDDEN, CODEC_LIMITS.maxMapLength, CODEC_LIMITS.maxBinBytes, PICK);
      const expected =
        mine === undefined ? undefined : Object.fromEntries(Object.entries(mine).filter(([k]) => PICK.has(k)));
      if (!isDeepStrictEqual(picked, expected))
        throw new Error(`picked ${JSON.stringify(picked)} for ${JSON.stringify(m).slice(0, 200)}`);
      return true;
    }),
    { numRuns: 500 },
  );
  t.ok(taken > 450, `the fast path decoded ${taken} of 500`);
});

t.test("flat map - every integer and float width, str8/str16 and map16 forms", async (t) => {
  const cases: [string, number[], unknown][] = [
    ["negative fixint", [0xff], -1],
    ["uint8", [0xcc, 0xc8], 200],
    ["uint16", [0xcd, 0xff, 0xfe], 65_534],
    ["uint32", [0xce, 0xff, 0xff, 0xff, 0xff], 2 ** 32 - 1],
    ["int8", [0xd0, 0x80], -128],
    ["int16", [0xd1, 0x80, 0x00], -32_768],
    ["int32", [0xd2, 0x80, 0x00, 0x00, 0x00], -(2 ** 31)],
    ["float32", [0xca, 0x3f, 0xc0, 0x00, 0x00], 1.5],
    ["float64", [0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18], Math.PI],
    ["str8", [0xd9, 0x03, 0x61, 0x62, 0x63], "abc"],
    ["str16", [0xda, 0x00, 0x02, 0xc3, 0xa9], "é"],
    ["bin8", [0xc4, 0x02, 0x01, 0x02], new Uint8Array([1, 2])],
    ["bin16", [0xc5, 0x00, 0x01, 0x07], new Uint8Array([7])],
    ["bin32", [0xc6, 0x00, 0x00, 0x00, 0x01, 0x09], new Uint8Array([9])],
  ];
  for (const [name, value, expected] of cases) {
    const bytes = Uint8Array.from([0x81, 0xa1, 0x76, ...value]);
    t.same(flat(bytes), { v: expected }, name);
    t.same(flat(bytes), library.decode(bytes), `${name}: as the library`);
  }
  const str8Key = Uint8Array.from([0x81, 0xd9, 0x01, 0x6b, 0x01]);
  t.same(flat(str8Key), { k: 1 }, "a str8 key");
  const entries = Array.from({ length: 20 }, (_, i) => [`k${i}`, i] as const);
  const map16 = Uint8Array.from([
    0xde,
    0x00,
    20,
    ...entries.flatMap(([k, v]) => [0xa0 | k.length, ...Buffer.from(k), v]),
  ]);
  t.same(flat(map16), Object.fromEntries(entries), "map16");
  const bad = Uint8Array.from([0x81, 0xa1, 0x76, 0xa2, 0xff, 0xfe]);
  t.same(flat(bad), { v: "\ufffd\ufffd" }, "invalid UTF-8 becomes U+FFFD");
});

t.test(
  "flat map - declines what it does not handle, and decodeMsgpack still gives the library's answer or error",
  async (t) => {
    const declined: [string, Uint8Array][] = [
      ["nested map", encodeMsgpack({ a: { b: 1 } })],
      ["array value", encodeMsgpack({ a: [1] })],
      ["binary over the limit", Uint8Array.from([0x81, 0xa1, 0x61, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00])],
      ["uint64", encodeMsgpack({ a: 2 ** 40 })],
      ["int64", encodeMsgpack({ a: -(2 ** 40) })],
      ["array at the root", encodeMsgpack([1, 2])],
      ["scalar at the root", encodeMsgpack(7)],
      ["integer key", Uint8Array.from([0x81, 0x01, 0x02])],
      ["ext value", Uint8Array.from([0x81, 0xa1, 0x61, 0xd4, 0x01, 0x00])],
      ["map over the entry limit", Uint8Array.from([0xde, 0xff, 0xff])],
    ];
    for (const [name, bytes] of declined) {
      t.equal(flat(bytes), undefined, `${name}: declined`);
      let lib: unknown;
      let libErr = false;
      try {
        lib = library.decode(bytes);
      } catch {
        libErr = true;
      }
      if (libErr) t.throws(() => decodeMsgpack(bytes), ProtocolError, `${name}: still an error`);
      else t.ok(isDeepStrictEqual(decodeMsgpack(bytes), lib), `${name}: the library's result`);
    }
    const proto = Uint8Array.from([0x81, 0xa9, ...Buffer.from("__proto__"), 0x01]);
    t.equal(flat(proto), undefined, "a forbidden key is declined");
    t.throws(() => decodeMsgpack(proto), { code: ErrorCode.PROTO_ERR_FORBIDDEN_KEY });
    const full = encodeMsgpack(SAMPLES["event.chunk"]);
    for (let i = 1; i < full.length; i++) {
      if (flat(full.subarray(0, i)) !== undefined) t.fail(`a ${i}-byte prefix was decoded`);
      if (
        decodeFlatMap(full.subarray(0, i), FORBIDDEN, CODEC_LIMITS.maxMapLength, CODEC_LIMITS.maxBinBytes, PICK) !==
        undefined
      )
        t.fail(`a ${i}-byte prefix was picked from`);
    }
    const trailing = Uint8Array.from([...full, 0xc0]);
    t.equal(flat(trailing), undefined, "trailing bytes are declined");
    t.throws(() => decodeMsgpack(trailing), ProtocolError, "and are an error");
  },
);

t.test("flat map - the fast path decodes the flat event families", async (t) => {
  let flatSamples = 0;
  for (const [name, sample] of Object.entries(SAMPLES)) {
    const bytes = encodeMsgpack(sample);
    const isFlat = Object.values(sample as Record<string, unknown>).every(
      (v) =>
        v === null ||
        ["string", "boolean"].includes(typeof v) ||
        (typeof v === "number" && (!Number.isInteger(v) || Math.abs(v) < 2 ** 31)),
    );
    if (!isFlat) continue;
    flatSamples++;
    t.ok(isDeepStrictEqual(flat(bytes), library.decode(bytes)), `${name}: decoded by the fast path, as the library`);
  }
  t.ok(
    SAMPLES["event.chunk"] !== undefined && flat(encodeMsgpack(SAMPLES["event.chunk"])) !== undefined,
    "a token chunk takes the fast path",
  );
  t.ok(flatSamples >= 3, `${flatSamples} flat samples`);
});

t.test(
  "flat map - encoding gives the library's bytes for random flat maps (property), and declines the rest",
  async (t) => {
    const fc = await import("fast-check");
    const key = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.string({ unit: "grapheme", maxLength: 6 }),
      fc.constantFrom("type", "job_id", "seq", "12", "0"),
    );
    const scalar = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.string({ unit: "grapheme", maxLength: 60 }),
      fc.string({ unit: "binary", maxLength: 20 }),
      fc.string({ minLength: 250, maxLength: 70_000 }),
      fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 }),
      fc.constantFrom(
        0,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32_768,
        -32_769,
        2 ** 31 - 1,
        -(2 ** 31),
        2 ** 32 - 1,
        2 ** 32,
        2 ** 53,
      ),
      fc.double(),
      fc.constantFrom(Number.NaN, -0, Number.POSITIVE_INFINITY),
      fc.boolean(),
      fc.constant(null),
      fc.constant(undefined),
    );
    let taken = 0;
    fc.assert(
      fc.property(fc.dictionary(key, scalar, { maxKeys: 40 }), (m) => {
        const mine = encodeFlatMap(m);
        const theirs = libraryEncoder.encode(m);
        // What the fast path must take: no surrogates, no integer beyond 32 bits, under its 64 KiB scratch buffer.
        const values = Object.values(m);
        const eligible =
          theirs.length < 60_000 &&
          ![...Object.keys(m), ...values].some(
            (v) =>
              (typeof v === "string" && /[\ud800-\udfff]/.test(v)) ||
              (typeof v === "number" && Number.isInteger(v) && (v > 2 ** 32 - 1 || v < -(2 ** 31))),
          );
        if (eligible && mine === undefined) throw new Error(`declined ${JSON.stringify(m).slice(0, 200)}`);
        if (mine !== undefined) {
          taken++;
          if (Buffer.compare(Buffer.from(mine), Buffer.from(theirs)) !== 0)
            throw new Error(`bytes differ for ${JSON.stringify(m).slice(0, 200)}`);
        }
        if (Buffer.compare(Buffer.from(encodeMsgpack(m)), Buffer.from(theirs)) !== 0)
          throw new Error("encodeMsgpack differs from the library");
        return true;
      }),
      { numRuns: 500 },
    );
    t.ok(taken > 100, `the fast path encoded ${taken} of 500, every one it must`);
    for (const [name, sample] of Object.entries(SAMPLES)) {
      const bytes = encodeMsgpack(sample);
      t.equal(
        Buffer.compare(Buffer.from(bytes), Buffer.from(libraryEncoder.encode(sample))),
        0,
        `${name}: the library's bytes`,
      );
    }
    t.ok(encodeFlatMap(SAMPLES["event.chunk"]) !== undefined, "a token chunk takes the fast path");
    const declined: [string, unknown][] = [
      ["nested", { a: { b: 1 } }],
      ["array value", { a: [1] }],
      ["binary value", { a: new Uint8Array(2) }],
      ["a Date", { a: new Date(0) }],
      ["uint64", { a: 2 ** 40 }],
      ["int64", { a: -(2 ** 40) }],
      ["a lone surrogate", { a: "x\ud800" }],
      ["an array", [1, 2]],
      [
        "a class instance",
        new (class P {
          x = 1;
        })(),
      ],
      ["a string over the scratch buffer", { a: "z".repeat(70_000) }],
    ];
    for (const [name, v] of declined) {
      t.equal(encodeFlatMap(v), undefined, `${name}: declined`);
      t.equal(
        Buffer.compare(Buffer.from(encodeMsgpack(v)), Buffer.from(libraryEncoder.encode(v))),
        0,
        `${name}: encodeMsgpack gives the library's bytes`,
      );
    }
    const first = encodeMsgpack({ brand_new_key_1: "a", brand_new_key_2: 1.5, brand_new_key_3: "b" });
    t.same(
      decodeMsgpack(first),
      { brand_new_key_1: "a", brand_new_key_2: 1.5, brand_new_key_3: "b" },
      "keys first seen mid-message do not clobber it",
    );
  },
);

t.test(
  "event head - reads type, job, attempt, status and seq of a flat event, checks the rest, and errs as the whole decode",
  async (t) => {
    let heads = 0;
    for (const [name, sample] of Object.entries(SAMPLES)) {
      if (!name.startsWith("event.")) continue;
      const bytes = encodeMsgpack(sample);
      const whole = asJobEvent(decodeMsgpack(bytes));
      const { head, ev } = decodeEventHead(bytes);
      if (ev === null) heads++;
      else t.same(ev, whole, `${name}: not flat, so decoded whole`);
      const want = Object.fromEntries(
        Object.entries(whole).filter(([k]) => ["type", "job_id", "attempt", "status", "seq"].includes(k)),
      );
      t.same(
        ev === null ? head : Object.fromEntries(Object.entries(head).filter(([k]) => k in want)),
        want,
        `${name}: head`,
      );
    }
    t.ok(heads >= 3, `${heads} samples read by their head only`);
    t.equal(decodeEventHead(encodeMsgpack(SAMPLES["event.chunk"])).ev, null, "a token chunk is read by its head");

    const errorOf = (bytes: Uint8Array) => {
      try {
        asJobEvent(decodeMsgpack(bytes));
        return "none";
      } catch (err) {
        return (err as ProtocolError).code;
      }
    };
    const chunk = SAMPLES["event.chunk"] as Record<string, unknown>;
    const bad: [string, Uint8Array][] = [
      ["unknown type", encodeMsgpack({ ...chunk, type: "nope" })],
      ["no job_id", encodeMsgpack({ ...chunk, job_id: undefined })],
      ["attempt not a number", encodeMsgpack({ ...chunk, attempt: "1" })],
      ["job_update without status", encodeMsgpack({ type: "job_update", job_id: "j", workflow_id: "w", attempt: 0 })],
      ["truncated", encodeMsgpack(chunk).subarray(0, 20)],
      ["trailing byte", Uint8Array.from([...encodeMsgpack(chunk), 0xc0])],
      ["forbidden key", Uint8Array.from([0x81, 0xa9, ...Buffer.from("__proto__"), 0x01])],
      ["not a map", encodeMsgpack([1, 2])],
      ["empty", new Uint8Array(0)],
    ];
    for (const [name, bytes] of bad) {
      const code = errorOf(bytes);
      t.not(code, "none", `${name}: the whole decode refuses it`);
      t.throws(() => decodeEventHead(bytes), { code }, `${name}: so does the head, with ${code}`);
    }
  },
);

t.test("event head - job ids of one length that differ in one byte are each read as sent, in any order", async (t) => {
  const ids = ["01JDQ7ZK3M8X4V5N6P7Q8R9S0T", "01JDQ7ZK3M8X4V5N6P7Q8R9S0U", "01JDQ7ZK3M8X4V5N6P7Q8R9S0é"];
  const long = ["x".repeat(40), `${"x".repeat(39)}y`, "y".repeat(200)];
  const order = [0, 0, 1, 0, 2, 2, 1, 0];
  for (const set of [ids, long]) {
    for (const i of order) {
      const ev = { type: "chunk", job_id: set[i]!, attempt: 1, content: "tok", done: false };
      t.equal(decodeEventHead(encodeMsgpack(ev)).head.job_id, set[i], `${set[i]!.slice(-3)} read back`);
    }
  }
});
