/**
 * The client's codec at the edge: `/ws` frames in and out, MessagePack or JSON, within the protocol's limits.
 * Its own (not `protocol/codec.ts`) because that one writes into Node's Buffer pool and would not load in a browser.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import type { ClientCommand, ServerMessage } from "../protocol/client.js";
import { msgpackShapeProblem } from "../protocol/msgpack-scan.js";

/** The limits of `protocol/codec.ts` (`CODEC_LIMITS`), for what a gateway sends. */
const LIMITS = {
  maxMessageBytes: 16 * 1024 * 1024,
  maxStrBytes: 8 * 1024 * 1024,
  maxBinBytes: 16 * 1024 * 1024,
  maxArrayLength: 1_000_000,
  maxMapLength: 100_000,
  maxExtBytes: 1024,
} as const;

/** `CODEC_LIMITS.maxDepth`, and a few levels for the message around a value. */
const MAX_DEPTH = 72;
const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

export type WireFormat = "msgpack" | "json";

/** A frame the client could not read: the gateway (or something between) sent bytes that are not a message. */
export class FrameError extends Error {
  override readonly name = "FrameError";
}

function checkedKey(key: unknown): string | number {
  if (typeof key === "number") return key;
  if (typeof key !== "string" || FORBIDDEN_KEYS.has(key)) throw new FrameError(`forbidden map key ${String(key)}`);
  return key;
}

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder({
  maxStrLength: LIMITS.maxStrBytes,
  maxBinLength: LIMITS.maxBinBytes,
  maxArrayLength: LIMITS.maxArrayLength,
  maxMapLength: LIMITS.maxMapLength,
  maxExtLength: LIMITS.maxExtBytes,
  mapKeyConverter: checkedKey,
});

function forbidKeys(key: string, value: unknown): unknown {
  if (FORBIDDEN_KEYS.has(key)) throw new FrameError(`forbidden key ${JSON.stringify(key)}`);
  return value;
}

/** One command as the frame to send in `format`. */
export function encodeCommand(cmd: ClientCommand, format: WireFormat): Uint8Array | string {
  return format === "msgpack" ? encoder.encode(cmd) : JSON.stringify(cmd);
}

/** A received frame (binary: MessagePack, text: JSON) as a server message; throws `FrameError`. */
export function decodeFrame(data: unknown): ServerMessage {
  let v: unknown;
  try {
    if (typeof data === "string") {
      if (data.length > LIMITS.maxMessageBytes) throw new FrameError(`frame of ${data.length} characters`);
      v = JSON.parse(data, forbidKeys);
    } else {
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
      if (!(bytes instanceof Uint8Array)) throw new FrameError("a frame that is neither text nor bytes");
      if (bytes.byteLength > LIMITS.maxMessageBytes) throw new FrameError(`frame of ${bytes.byteLength} bytes`);
      const shape = msgpackShapeProblem(bytes, MAX_DEPTH);
      if (shape !== null)
        throw new FrameError(`a frame ${shape === "depth" ? "nested too deep" : "claiming more items than it holds"}`);
      v = decoder.decode(bytes);
    }
  } catch (err) {
    throw err instanceof FrameError ? err : new FrameError(`undecodable frame: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== "object" || typeof (v as { type?: unknown }).type !== "string")
    throw new FrameError('a server message needs a "type"');
  // A `seq` past 2^53 (or not a count at all) would become the job's high-water mark and hide every later event.
  const seq = (v as { seq?: unknown }).seq;
  if (seq !== undefined && !(Number.isSafeInteger(seq) && (seq as number) >= 0))
    throw new FrameError(`a seq that is not a count: ${typeof seq === "number" ? seq : typeof seq}`);
  return v as ServerMessage;
}
