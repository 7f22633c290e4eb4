/**
 * The codec at the edge: bytes in, typed message out (or `ProtocolError`), and the reverse.
 *
 * MessagePack goes through one shared Encoder and one shared Decoder with explicit limits, so a hostile frame
 * cannot make us allocate gigabytes from a declared length. Keys that could reach an object's prototype
 * (`__proto__`, `constructor`, `prototype`) are refused in both codecs. Domain code never touches bytes.
 */
import { Decoder, Encoder, DecodeError } from "@msgpack/msgpack";
import { ErrorCode, ProtocolError } from "./errors.js";
import { decodeFlatMap, encodeFlatMap, uintSize, writeUint } from "./flat-map.js";
import { msgpackShapeProblem } from "./msgpack-scan.js";
import { CLIENT_COMMANDS, type ClientCommand, type ServerMessage } from "./client.js";
import { JOB_EVENT_TYPES, type JobEvent, type JobEventHead } from "./events.js";
import type { AgentControl, AgentRegistration, JobCancel, JobDispatch } from "./jobs.js";
import { ClientCommandSchemas, checkSchema } from "./schemas.js";

/** Limits applied by every decode. Sized for job events and dispatches; a graph is far below these. */
export const CODEC_LIMITS = {
  /** Whole message, checked before parsing. */
  maxMessageBytes: 16 * 1024 * 1024,
  maxStrBytes: 8 * 1024 * 1024,
  maxBinBytes: 16 * 1024 * 1024,
  /** As an agent's node limits (`nodeListMaxItems`, `nodeDictMaxKeys`): what a node may output, a gateway reads. */
  maxArrayLength: 1_000_000,
  maxMapLength: 100_000,
  maxExtBytes: 1024,
  /** Nesting of what clients send (JSON bodies, `/ws` frames): deeper values cannot be stored or encoded again. */
  maxDepth: 64,
} as const;

const tooDeep = () =>
  new ProtocolError(ErrorCode.PROTO_ERR_SHAPE, `nested deeper than ${CODEC_LIMITS.maxDepth} levels`);

/** Whether JSON text nests deeper than `max`: one pass over the brackets outside strings, before parsing. */
export function jsonTooDeep(text: string, max: number = CODEC_LIMITS.maxDepth): boolean {
  if (text.length <= max * 2) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92)
        i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) {
      if (++depth > max) return true;
    } else if (c === 93 || c === 125) depth--;
  }
  return false;
}

/** Whether a decoded value nests deeper than `max` (client frames are small: the walk is cheap). */
function valueTooDeep(v: unknown, max: number): boolean {
  if (v === null || typeof v !== "object" || v instanceof Uint8Array) return false;
  if (max === 0) return true;
  const items = Array.isArray(v) ? v : Object.values(v);
  for (const x of items) if (valueTooDeep(x, max - 1)) return true;
  return false;
}

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

function checkedKey(key: unknown): string | number {
  if (typeof key === "string") {
    if (FORBIDDEN_KEYS.has(key))
      throw new ProtocolError(ErrorCode.PROTO_ERR_FORBIDDEN_KEY, `forbidden map key ${JSON.stringify(key)}`);
    return key;
  }
  if (typeof key === "number") return key;
  throw new ProtocolError(ErrorCode.PROTO_ERR_SHAPE, "map keys must be strings or numbers");
}

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = decoderWithin(CODEC_LIMITS.maxStrBytes, CODEC_LIMITS.maxBinBytes);

function decoderWithin(maxStrBytes: number, maxBinBytes: number): Decoder {
  return new Decoder({
    maxStrLength: maxStrBytes,
    maxBinLength: maxBinBytes,
    maxArrayLength: CODEC_LIMITS.maxArrayLength,
    maxMapLength: CODEC_LIMITS.maxMapLength,
    maxExtLength: CODEC_LIMITS.maxExtBytes,
    mapKeyConverter: checkedKey,
  });
}

/**
 * MessagePack bytes of `value`. The returned view is a fresh copy (safe to keep). A flat map of scalars (most
 * events) is written by `flat-map.ts`, byte for byte what the library writes; anything else by the library. The copy
 * comes from Node's
 * Buffer pool: `encode()` slices a new ArrayBuffer per message, which cost as much as encoding a token event.
 */
export function encodeMsgpack(value: unknown): Uint8Array {
  const flat = encodeFlatMap(value);
  if (flat !== undefined) return flat;
  const ref = encoder.encodeSharedRef(value);
  const out = Buffer.allocUnsafe(ref.byteLength);
  out.set(ref);
  return out;
}

/** `"seq"` as MessagePack: the key `withSeqMsgpack` appends. */
const SEQ_KEY = encodeMsgpack("seq");

/** Where `withSeqMsgpack` writes by default: a fresh buffer (from Node's pool for small ones). */
const freshBytes = (size: number): Buffer => Buffer.allocUnsafe(size);

/**
 * The bytes `encodeMsgpack({...map, seq})` would give, made from `bytes` (an encoded map without a `seq` key)
 * without decoding and re-encoding it: the entry count goes up by one and `seq` is appended, which is where
 * the encoder puts a key added last (key and value as the encoder writes them: the smallest unsigned integer
 * that holds it). The gateway stamps the stream sequence on every event this way; encoding the whole event again
 * cost as much as decoding it. The result is written into `alloc(size)` (the replay cache passes room in its
 * log, so a cached event is written once). Returns null, without calling `alloc`, for anything but a fixmap or
 * map16 (the caller encodes the object instead). `seq` must be a non-negative safe integer.
 */
export function withSeqMsgpack(
  bytes: Uint8Array,
  seq: number,
  alloc: (size: number) => Buffer = freshBytes,
): Uint8Array | null {
  const head = bytes[0];
  if (head === undefined || !Number.isSafeInteger(seq) || seq < 0) return null;
  let count: number;
  let bodyAt: number;
  if (head >= 0x80 && head <= 0x8f) {
    count = head & 0x0f;
    bodyAt = 1;
  } else if (head === 0xde && bytes.length >= 3) {
    count = (bytes[1]! << 8) | bytes[2]!;
    bodyAt = 3;
    if (count === 0xffff) return null;
  } else {
    return null;
  }
  const headBytes = count + 1 <= 15 ? 1 : 3;
  const body = bytes.length - bodyAt;
  const out = alloc(headBytes + body + SEQ_KEY.length + uintSize(seq));
  // The whole map copied so that its body lands at `headBytes` (no view made of the body), then the head written
  // over what came before it: the new head is never shorter than the old.
  out.set(bytes, headBytes - bodyAt);
  if (headBytes === 1) out[0] = 0x80 | (count + 1);
  else {
    out[0] = 0xde;
    out.writeUInt16BE(count + 1, 1);
  }
  out.set(SEQ_KEY, headBytes + body);
  writeUint(out, headBytes + body + SEQ_KEY.length, seq);
  return out;
}

/**
 * Decodes MessagePack within `CODEC_LIMITS`; throws `ProtocolError` for anything else. A flat map of scalars (most
 * events) takes the fast path of `flat-map.ts`; everything else, and every error, is the library's.
 */
export function decodeMsgpack(bytes: Uint8Array | ArrayBuffer): unknown {
  return decodeLimited(decoder, CODEC_LIMITS.maxMessageBytes, CODEC_LIMITS.maxBinBytes, bytes);
}

/**
 * A decoder like `decodeMsgpack` for one trusted-size channel whose messages carry whole files (an agent reading
 * its own runs' frames): messages, strings and bytes up to `maxBytes`; every other limit as `CODEC_LIMITS`.
 */
export function msgpackDecoderUpTo(maxBytes: number): (bytes: Uint8Array | ArrayBuffer) => unknown {
  const large = decoderWithin(maxBytes, maxBytes);
  return (bytes) => decodeLimited(large, maxBytes, maxBytes, bytes);
}

function decodeLimited(
  d: Decoder,
  maxMessageBytes: number,
  maxBinBytes: number,
  bytes: Uint8Array | ArrayBuffer,
): unknown {
  const len = bytes.byteLength;
  if (len > maxMessageBytes) {
    throw new ProtocolError(ErrorCode.PROTO_ERR_TOO_LARGE, `message of ${len} bytes exceeds ${maxMessageBytes}`);
  }
  if (len === 0) throw new ProtocolError(ErrorCode.PROTO_ERR_DECODE, "empty message");
  const flat = decodeFlatMap(
    bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes),
    FORBIDDEN_KEYS,
    CODEC_LIMITS.maxMapLength,
    maxBinBytes,
  );
  if (flat !== undefined) return flat;
  const shape = msgpackShapeProblem(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), CODEC_LIMITS.maxDepth);
  if (shape === "depth") throw tooDeep();
  if (shape === "claims")
    throw new ProtocolError(ErrorCode.PROTO_ERR_TOO_LARGE, "an array or map claims more items than the message holds");
  try {
    return d.decode(bytes);
  } catch (err) {
    if (err instanceof ProtocolError) throw err;
    const msg = err instanceof Error ? err.message : String(err);
    const code = /max length exceeded|Max length/i.test(msg)
      ? ErrorCode.PROTO_ERR_TOO_LARGE
      : /__proto__/.test(msg)
        ? ErrorCode.PROTO_ERR_FORBIDDEN_KEY
        : ErrorCode.PROTO_ERR_DECODE;
    const what = err instanceof DecodeError || err instanceof RangeError ? msg : `invalid msgpack: ${msg}`;
    throw new ProtocolError(code, what, { cause: err });
  }
}

/** The keys `decodeEventHead` reads; `asJobEvent` checks all of them but `seq`. */
const HEAD_KEYS: ReadonlySet<string> = new Set(["type", "job_id", "attempt", "status", "seq"]);

/**
 * An event's head, checked as `asJobEvent` checks the whole event: for a flat map (a token, a progress update),
 * only those keys are read and the rest is stepped over, its framing still checked, so the same bytes decode
 * whole later; `ev` is null then. Anything else is decoded whole and given as `ev` as well. Throws
 * `ProtocolError` as `asJobEvent(decodeMsgpack(bytes))` does.
 *
 * Why: the gateway decoded every event it fanned out, ~2 µs of the ~15 µs of CPU it spent on a token event
 * (bench/profile.ts fanout, 2026-12-02), though binary clients get the stored bytes with `seq` appended.
 */
export function decodeEventHead(bytes: Uint8Array): { head: JobEventHead; ev: JobEvent | null } {
  const len = bytes.byteLength;
  if (len > 0 && len <= CODEC_LIMITS.maxMessageBytes) {
    const picked = decodeFlatMap(bytes, FORBIDDEN_KEYS, CODEC_LIMITS.maxMapLength, CODEC_LIMITS.maxBinBytes, HEAD_KEYS);
    if (picked !== undefined) return { head: asJobEvent(picked) as JobEventHead, ev: null };
  }
  const ev = decodeJobEvent(bytes);
  return { head: ev, ev };
}

// JSON.parse never pollutes a prototype, but a later spread or merge of `__proto__` can; refuse those keys.
// The scan is a cheap substring test; the reviver only runs for the rare message that mentions one, or that
// escapes an ASCII letter or `_` (`"\u005f_proto__"` is the same key, unseen by the first pattern).
const SUSPICIOUS = /"(?:__proto__|constructor|prototype)"\s*:|\\u00[4-7][0-9a-f]/i;
function forbidKeysReviver(key: string, value: unknown): unknown {
  if (FORBIDDEN_KEYS.has(key))
    throw new ProtocolError(ErrorCode.PROTO_ERR_FORBIDDEN_KEY, `forbidden key ${JSON.stringify(key)}`);
  return value;
}

/**
 * Throws the `ProtocolError` `parseJson` would for this JSON text's shape (too deep, a forbidden key), without parsing
 * text that mentions no such key: what a writer checks before sending a record a reader would refuse.
 */
export function checkJsonShape(text: string): void {
  if (jsonTooDeep(text, CODEC_LIMITS.maxDepth)) throw tooDeep();
  if (SUSPICIOUS.test(text)) JSON.parse(text, forbidKeysReviver);
}

/** `text` without a leading byte order mark, which editors on Windows write and JSON.parse refuses (RFC 8259 §8.1). */
export function withoutBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Parses JSON text within `maxBytes` (a leading byte order mark is ignored); throws `ProtocolError`. */
export function parseJson(raw: string, maxBytes: number = CODEC_LIMITS.maxMessageBytes): unknown {
  const text = withoutBom(raw);
  if (text.length > maxBytes) {
    throw new ProtocolError(ErrorCode.PROTO_ERR_TOO_LARGE, `message of ${text.length} characters exceeds ${maxBytes}`);
  }
  if (jsonTooDeep(text, CODEC_LIMITS.maxDepth)) throw tooDeep();
  try {
    return SUSPICIOUS.test(text) ? JSON.parse(text, forbidKeysReviver) : JSON.parse(text);
  } catch (err) {
    if (err instanceof ProtocolError) throw err;
    throw new ProtocolError(ErrorCode.PROTO_ERR_DECODE, `invalid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Binary values become base64 `data:` URIs in JSON (NodeTool's text mode), at any depth (JSON.stringify calls the
 * replacer for every value it writes). The holder's own value is what is tested: `JSON.stringify` calls a `Buffer`'s
 * `toJSON` before the replacer, which would otherwise write `{"type":"Buffer","data":[…]}` (what a decoder of
 * bytes held in a Buffer, the gateway's MessagePack one, gives for every `bin`).
 */
function binaryReplacer(this: unknown, key: string, value: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key];
  const bytes = raw instanceof Uint8Array ? raw : value instanceof Uint8Array ? value : null;
  if (!bytes) return value;
  const b64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  return `data:application/octet-stream;base64,${b64}`;
}

/** JSON text of a message. Token chunks (the hot path) skip the replacer. */
export function encodeJson(value: unknown): string {
  const v = value as { type?: string; content?: unknown };
  if (v !== null && typeof v === "object" && v.type === "chunk" && typeof v.content === "string")
    return JSON.stringify(value);
  return JSON.stringify(value, binaryReplacer);
}

const decodeText = new TextDecoder("utf-8", { fatal: true });
/** UTF-8 text of a binary frame, as a `ProtocolError` when it is not valid UTF-8. */
export function utf8(bytes: Uint8Array | ArrayBuffer): string {
  try {
    return decodeText.decode(bytes);
  } catch (err) {
    throw new ProtocolError(ErrorCode.PROTO_ERR_DECODE, "frame is not valid UTF-8", { cause: err });
  }
}

// ---- shape checks -------------------------------------------------------------------------------------------

function shape(msg: string): ProtocolError {
  return new ProtocolError(ErrorCode.PROTO_ERR_SHAPE, msg);
}
function isObj(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === "object" && !Array.isArray(x) && !(x instanceof Uint8Array);
}
function str(o: Record<string, unknown>, k: string, what: string): string {
  const v = o[k];
  if (typeof v !== "string" || v.length === 0) throw shape(`${what}: "${k}" must be a non-empty string`);
  return v;
}

/** A client `/ws` frame as a typed command, or `ProtocolError` naming what is wrong. */
export function asClientCommand(x: unknown): ClientCommand {
  if (!isObj(x)) throw shape("frame must be an object {command, data}");
  const command = x.command;
  if (typeof command !== "string") throw shape('frame has no "command"');
  if (x.request_id !== undefined && typeof x.request_id !== "string" && typeof x.request_id !== "number") {
    throw shape('"request_id" must be a string');
  }
  const name = command as ClientCommand["command"];
  // From here a refusal is answered as the command it was, with its request_id: the client waits on that id.
  try {
    if (!CLIENT_COMMANDS.has(name)) {
      throw new ProtocolError(ErrorCode.PROTO_ERR_UNKNOWN_TYPE, `unknown command "${command.slice(0, 100)}"`);
    }
    const data = x.data ?? {};
    if (!isObj(data)) throw shape(`${command}: "data" must be an object`);
    checkSchema(ClientCommandSchemas[name], { ...x, data }, command);
    if (name === "run_job" && data.workflow_id === undefined && data.graph === undefined) {
      throw shape('run_job: needs "workflow_id" or "graph"');
    }
  } catch (err) {
    // An unknown command without a request_id is garbage to this protocol: an error frame, not an answer.
    if (err instanceof ProtocolError && (CLIENT_COMMANDS.has(name) || x.request_id !== undefined)) {
      const requestId = x.request_id !== undefined ? { request_id: String(x.request_id).slice(0, 200) } : {};
      err.command = { command: command.slice(0, 100), ...requestId };
    }
    throw err;
  }
  const out = { command, data: x.data ?? {} } as ClientCommand;
  if (x.request_id !== undefined) out.request_id = String(x.request_id);
  return out;
}

/** A job event from NATS or a client's view of one. */
export function asJobEvent(x: unknown): JobEvent {
  if (!isObj(x)) throw shape("event must be an object");
  if (typeof x.type !== "string" || !JOB_EVENT_TYPES.has(x.type as JobEvent["type"])) {
    throw new ProtocolError(ErrorCode.PROTO_ERR_UNKNOWN_TYPE, `unknown event type ${JSON.stringify(x.type)}`);
  }
  str(x, "job_id", x.type);
  if (typeof x.attempt !== "number") throw shape(`${x.type}: "attempt" must be a number`);
  if (x.type === "job_update") str(x, "status", "job_update");
  return x as unknown as JobEvent;
}

export function asJobDispatch(x: unknown): JobDispatch {
  if (!isObj(x) || x.type !== "job.dispatch") throw shape('expected a "job.dispatch" message');
  str(x, "job_id", "job.dispatch");
  str(x, "workflow_id", "job.dispatch");
  if (!isObj(x.graph) || !Array.isArray(x.graph.nodes) || !Array.isArray(x.graph.edges)) {
    throw shape('job.dispatch: "graph" must be {nodes: [], edges: []}');
  }
  if (!isObj(x.params)) throw shape('job.dispatch: "params" must be an object');
  if (x.record !== undefined) {
    const r = x.record;
    if (
      !isObj(r) ||
      !isObj(r.rec) ||
      r.rec.id !== x.job_id ||
      typeof r.revision !== "number" ||
      !Number.isInteger(r.revision) ||
      r.revision < 1
    ) {
      throw shape('job.dispatch: "record" must be {rec: <the job\'s record>, revision: <positive integer>}');
    }
  }
  return x as unknown as JobDispatch;
}

export function asJobCancel(x: unknown): JobCancel {
  if (!isObj(x) || x.type !== "job.cancel") throw shape('expected a "job.cancel" message');
  str(x, "job_id", "job.cancel");
  return x as unknown as JobCancel;
}

export function asAgentControl(x: unknown): AgentControl {
  if (!isObj(x) || (x.type !== "agent.drain" && x.type !== "agent.resume" && x.type !== "agent.ping")) {
    throw shape('expected "agent.drain", "agent.resume" or "agent.ping"');
  }
  return x as unknown as AgentControl;
}

export function asAgentRegistration(x: unknown): AgentRegistration {
  if (!isObj(x) || x.type !== "agent.registration") throw shape('expected an "agent.registration" message');
  str(x, "id", "agent.registration");
  str(x, "name", "agent.registration");
  if (!Array.isArray(x.pools)) throw shape('agent.registration: "pools" must be an array');
  return x as unknown as AgentRegistration;
}

export function asServerMessage(x: unknown): ServerMessage {
  if (!isObj(x) || typeof x.type !== "string") throw shape('server message needs a "type"');
  return x as unknown as ServerMessage;
}

/** Decodes a client `/ws` frame: binary frames are msgpack, text frames JSON. */
export function decodeClientFrame(
  frame: ArrayBuffer | Uint8Array | string,
  isBinary: boolean,
  maxBytes?: number,
): ClientCommand {
  if (typeof frame === "string") return asClientCommand(parseJson(frame, maxBytes));
  if (!isBinary) return asClientCommand(parseJson(utf8(frame), maxBytes));
  return asClientCommand(decodeWithin(frame instanceof Uint8Array ? frame : new Uint8Array(frame)));
}

/**
 * Typed decoders for the NATS families. A value nested past the codec's depth is refused here, as from a client:
 * a later JSON encode of it (a JSON client's event, a record) would overflow the stack.
 */
function decodeWithin(b: Uint8Array): unknown {
  const v = decodeMsgpack(b);
  if (valueTooDeep(v, CODEC_LIMITS.maxDepth)) throw tooDeep();
  return v;
}
export function decodeJobEvent(b: Uint8Array): JobEvent {
  return asJobEvent(decodeWithin(b));
}
export const decodeJobDispatch = (b: Uint8Array): JobDispatch => asJobDispatch(decodeWithin(b));
export const decodeJobCancel = (b: Uint8Array): JobCancel => asJobCancel(decodeWithin(b));
export const decodeAgentControl = (b: Uint8Array): AgentControl => asAgentControl(decodeWithin(b));
export const decodeAgentRegistration = (b: Uint8Array): AgentRegistration => asAgentRegistration(decodeWithin(b));
