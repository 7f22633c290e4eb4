/**
 * Our event shapes through the wire codec (protocol/codec.ts: `@msgpack/msgpack` with one shared Encoder/Decoder,
 * limits and key checks) against JSON as it would go on the wire (bytes: `Buffer.from(JSON.stringify)` /
 * `JSON.parse(buf.toString())`; binary values as base64 `data:` URIs through our `encodeJson`, read as a WebSocket
 * client reads a text frame — `TextDecoder`, `JSON.parse`, then the URI's base64 turned into bytes by the
 * platform's decoder, `Buffer.from`). Binary goal: decode speed at 4 KB only, where the frame's other fields and
 * the decoders' fixed costs weigh; at 64 KB the race is a byte copy against base64, and sizes are base64
 * arithmetic (4/3), so both are table rows without a goal. For reference (no goal): msgpackr (a dev dependency,
 * bench only) in standard-MessagePack mode (`useRecords: false`, so its bytes are what any decoder reads), which
 * shows what a msgpack codec with string caching and generated readers does on the same shapes. One process; the
 * arms alternate round by round, JSON runs twice (A/A) for the noise band.
 */
import { randomBytes } from "node:crypto";
import { Packr } from "msgpackr";
import { decodeMsgpack, encodeJson, encodeMsgpack } from "../protocol/index.js";
import { alternate, emitGoal, emitRow, invalid, log as mkLog, med, ratioGoal, rowsOf } from "./lib/report.js";
import type { Arm, GoalLine } from "./lib/report.js";

const BENCH = "codec";
const quick = process.argv.includes("--quick");
const log = mkLog(BENCH);
const SLICE_MS = quick ? 60 : 200;
const ROUNDS = quick ? 5 : 7;

const jobId = "01JDQ7ZK3M8X4V5N6P7Q8R9S0T";
const tokens = Array.from({ length: 64 }, (_, i) => ({
  type: "chunk",
  node_id: "tokens",
  content_type: "text",
  content: `tok${i * 37} `,
  done: false,
  job_id: jobId,
  workflow_id: "streaming-tokens",
  attempt: 1,
  ts: 1732563200123.456 + i,
  seq: 1000 + i,
}));
const output = (n: number) => ({
  type: "output_update",
  node_id: "out",
  node_name: "Output",
  output_name: "image",
  output_type: "bytes",
  value: new Uint8Array(randomBytes(n)),
  job_id: jobId,
  workflow_id: "images",
  attempt: 1,
  ts: 1732563200123.456,
  seq: 77,
});
const bin4k = output(4096);
const bin64k = output(65536);

let sink = 0;
/** ns per op of `fn` over `items`, run for about SLICE_MS. */
function nsPerOp<T>(items: readonly T[], fn: (x: T) => number): number {
  let ops = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < SLICE_MS) {
    for (let i = 0; i < 64; i++) sink += fn(items[i % items.length]!);
    ops += 64;
    t = performance.now();
  }
  return ((t - t0) * 1e6) / ops;
}

// Wire forms.
const jsonBytes = (v: unknown) => Buffer.from(encodeJson(v));
const jsonDecode = (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>;
const b64Prefix = "data:application/octet-stream;base64,";
const textFrame = new TextDecoder();
/** A JSON client's ordinary path from a text frame to the output's bytes. */
const jsonDecodeBinary = (b: Buffer) => {
  const v = JSON.parse(textFrame.decode(b)) as { value: string };
  const bytes = Buffer.from(v.value.slice(v.value.indexOf(",") + 1), "base64");
  return bytes.length;
};
const packed = { tok: tokens.map((t) => encodeMsgpack(t)), b4: [encodeMsgpack(bin4k)], b64: [encodeMsgpack(bin64k)] };
const json = { tok: tokens.map(jsonBytes), b4: [jsonBytes(bin4k)], b64: [jsonBytes(bin64k)] };

// Validate once: both codecs give back what went in.
function validate(): string | null {
  for (const t of tokens) {
    const a = decodeMsgpack(encodeMsgpack(t)) as Record<string, unknown>;
    if (JSON.stringify(a) !== JSON.stringify(t)) return "msgpack token round trip differs";
    if (JSON.stringify(jsonDecode(jsonBytes(t))) !== JSON.stringify(t)) return "JSON token round trip differs";
  }
  for (const b of [bin4k, bin64k]) {
    const a = decodeMsgpack(encodeMsgpack(b)) as { value: Uint8Array };
    if (!(a.value instanceof Uint8Array) || Buffer.compare(Buffer.from(a.value), Buffer.from(b.value)) !== 0)
      return "msgpack binary round trip differs";
    const j = jsonDecode(jsonBytes(b));
    if (Buffer.compare(Buffer.from((j.value as string).slice(b64Prefix.length), "base64"), Buffer.from(b.value)) !== 0)
      return "JSON+base64 round trip differs";
  }
  return null;
}

const msgpackArm: Arm = {
  name: "ours_msgpack",
  async run() {
    return {
      token_encode_ns: nsPerOp(tokens, (t) => encodeMsgpack(t).length),
      token_decode_ns: nsPerOp(packed.tok, (b) => (decodeMsgpack(b) as { seq: number }).seq),
      token_roundtrip_ns: nsPerOp(tokens, (t) => (decodeMsgpack(encodeMsgpack(t)) as { seq: number }).seq),
      bin4k_decode_ns: nsPerOp(packed.b4, (b) => (decodeMsgpack(b) as { value: Uint8Array }).value.length),
      bin64k_decode_ns: nsPerOp(packed.b64, (b) => (decodeMsgpack(b) as { value: Uint8Array }).value.length),
      bin4k_encode_ns: nsPerOp([bin4k], (t) => encodeMsgpack(t).length),
      token_bytes: packed.tok[0]!.length,
      bin4k_bytes: packed.b4[0]!.length,
      bin64k_bytes: packed.b64[0]!.length,
    };
  },
};
const packr = new Packr({ useRecords: false });
const packrBytes = { tok: tokens.map((t) => packr.pack(t)), b4: [packr.pack(bin4k)], b64: [packr.pack(bin64k)] };
const msgpackrArm: Arm = {
  name: "msgpackr_ref",
  async run() {
    return {
      token_encode_ns: nsPerOp(tokens, (t) => packr.pack(t).length),
      token_decode_ns: nsPerOp(packrBytes.tok, (b) => (packr.unpack(b) as { seq: number }).seq),
      token_roundtrip_ns: nsPerOp(tokens, (t) => (packr.unpack(packr.pack(t)) as { seq: number }).seq),
      bin4k_decode_ns: nsPerOp(packrBytes.b4, (b) => (packr.unpack(b) as { value: Uint8Array }).value.length),
      bin64k_decode_ns: nsPerOp(packrBytes.b64, (b) => (packr.unpack(b) as { value: Uint8Array }).value.length),
      bin4k_encode_ns: nsPerOp([bin4k], (t) => packr.pack(t).length),
      token_bytes: packrBytes.tok[0]!.length,
      bin4k_bytes: packrBytes.b4[0]!.length,
      bin64k_bytes: packrBytes.b64[0]!.length,
    };
  },
};
const jsonArm = (name: string): Arm => ({
  name,
  async run() {
    return {
      token_encode_ns: nsPerOp(tokens, (t) => jsonBytes(t).length),
      token_decode_ns: nsPerOp(json.tok, (b) => jsonDecode(b).seq as number),
      token_roundtrip_ns: nsPerOp(tokens, (t) => jsonDecode(jsonBytes(t)).seq as number),
      bin4k_decode_ns: nsPerOp(json.b4, jsonDecodeBinary),
      bin64k_decode_ns: nsPerOp(json.b64, jsonDecodeBinary),
      bin4k_encode_ns: nsPerOp([bin4k], (t) => jsonBytes(t).length),
      token_bytes: json.tok[0]!.length,
      bin4k_bytes: json.b4[0]!.length,
      bin64k_bytes: json.b64[0]!.length,
    };
  },
});

const problem = validate();
const lines: GoalLine[] = [];
const goals = ["token_roundtrip_speed", "token_encode_speed", "token_decode_speed", "bin4k_decode_speed"];
if (problem) {
  for (const g of goals) lines.push(invalid(BENCH, g, "-", problem));
} else {
  const res = await alternate([msgpackArm, jsonArm("json"), jsonArm("json_aa"), msgpackrArm], ROUNDS, log);
  rowsOf(BENCH, res, {
    token_encode_ns: "ns/op",
    token_decode_ns: "ns/op",
    token_roundtrip_ns: "ns/op",
    bin4k_decode_ns: "ns/op",
    bin64k_decode_ns: "ns/op",
    bin4k_encode_ns: "ns/op",
    token_bytes: "B",
    bin4k_bytes: "B",
    bin64k_bytes: "B",
  });
  // Speeds as ops/s (higher is better); noise = relative A/A spread of the JSON arm.
  const speed = (arm: string, m: string) => 1e9 / med(res, arm, m);
  const relNoise = (m: string) => Math.abs(med(res, "json", m) - med(res, "json_aa", m)) / med(res, "json", m);
  for (const [name, m, target] of [
    ["token_roundtrip_speed", "token_roundtrip_ns", 0.8],
    ["token_encode_speed", "token_encode_ns", 0.8],
    ["token_decode_speed", "token_decode_ns", 0.8],
  ] as const) {
    lines.push(
      ratioGoal(BENCH, name, speed("ours_msgpack", m), speed("json", m), ">=", target, relNoise(m), "ops/s ratio"),
    );
  }
  const bin4k = "bin4k_decode_ns";
  const [ours4k, json4k] = [speed("ours_msgpack", bin4k), speed("json", bin4k)];
  lines.push(ratioGoal(BENCH, "bin4k_decode_speed", ours4k, json4k, ">=", 2, relNoise(bin4k), "ops/s ratio"));
  for (const n of ["bin4k", "bin64k"] as const) {
    const ratio = med(res, "ours_msgpack", `${n}_bytes`) / med(res, "json", `${n}_bytes`);
    emitRow({ bench: BENCH, metric: `${n}_size_vs_json`, arm: "ours_msgpack", value: ratio, unit: "ratio" });
  }
  const speedup = speed("ours_msgpack", "bin64k_decode_ns") / speed("json", "bin64k_decode_ns");
  emitRow({ bench: BENCH, metric: "bin64k_decode_speed_vs_json", arm: "ours_msgpack", value: speedup, unit: "ratio" });
}
for (const g of lines) emitGoal(g);
if (sink === 42) process.stderr.write("");
