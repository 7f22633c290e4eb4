/**
 * Frames on the unix socket between an agent and a `docker` runner (docker.ts, strategy-child.ts):
 * a 4-byte big-endian length, then that many bytes of MessagePack (protocol/codec.ts, with its limits). A thread
 * or a child process has Node's own structured channel; a container has only a socket, and what comes out of
 * it is read like anything else that crosses an edge: a frame too long or not MessagePack is an error, never an
 * allocation of what a length claims.
 */
import {
  ASSETS_DEFAULTS,
  CODEC_LIMITS,
  ErrorCode,
  ProtocolError,
  decodeMsgpack,
  encodeMsgpack,
  msgpackDecoderUpTo,
} from "../../protocol/index.js";

/**
 * The largest frame an agent reads from its own run: a node's output as large as the largest asset (a thread's or
 * a process's output has no such bound; a container's would stop at 16 MiB), with room for its event around it.
 */
export const RUN_FRAME_MAX_BYTES = ASSETS_DEFAULTS.maxUploadBytes + 1024 * 1024;
const decodeRunFrame = msgpackDecoderUpTo(RUN_FRAME_MAX_BYTES);

/** The first byte a runner writes on a connection says what the connection is. */
export const ROLE_CHANNEL = 0x43; // "C": frames both ways
export const ROLE_LIFELINE = 0x4c; // "L": nothing is sent; it closing means the agent is gone

/** `m` as one frame. */
export function frame(m: unknown): Buffer {
  const body = encodeMsgpack(m);
  const out = Buffer.allocUnsafe(4 + body.byteLength);
  out.writeUInt32BE(body.byteLength, 0);
  out.set(body, 4);
  return out;
}

/**
 * Cuts a byte stream into decoded frames. Each byte is copied a bounded number of times, however the stream is cut:
 * a frame trickled in a byte at a time costs what it costs whole, never a copy of what came before per chunk.
 */
export class FrameReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** The length of the frame being read, once its 4 bytes are in; null before. */
  private need: number | null = null;
  private readonly decode: (bytes: Uint8Array) => unknown;

  /** `maxFrameBytes`: the codec's message limit, or `RUN_FRAME_MAX_BYTES` for what a run sends its agent. */
  constructor(private readonly maxFrameBytes: number = CODEC_LIMITS.maxMessageBytes) {
    this.decode = maxFrameBytes > CODEC_LIMITS.maxMessageBytes ? decodeRunFrame : decodeMsgpack;
  }

  /** The frames `chunk` completes, in order. Throws `ProtocolError` on a frame over the limit or not MessagePack. */
  push(chunk: Buffer): unknown[] {
    this.pending.push(chunk);
    this.pendingBytes += chunk.byteLength;
    const out: unknown[] = [];
    for (;;) {
      if (this.need === null) {
        if (this.pendingBytes < 4) break;
        this.need = this.head().readUInt32BE(0);
        if (this.need > this.maxFrameBytes) {
          throw new ProtocolError(
            ErrorCode.PROTO_ERR_TOO_LARGE,
            `runner frame of ${this.need} bytes exceeds ${this.maxFrameBytes}`,
          );
        }
      }
      const len = this.need;
      // Joined only once the whole frame is in.
      if (this.pendingBytes < 4 + len) break;
      const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
      // A copy: decoded bytes values are views of it, and must not pin the rest of the stream.
      out.push(this.decode(Buffer.from(all.subarray(4, 4 + len))));
      const rest = all.subarray(4 + len);
      this.pending = rest.byteLength > 0 ? [rest] : [];
      this.pendingBytes = rest.byteLength;
      this.need = null;
    }
    return out;
  }

  /** At least the first 4 pending bytes in one buffer (only those few are joined when they came apart). */
  private head(): Buffer {
    const first = this.pending[0]!;
    if (first.byteLength >= 4) return first;
    const joined = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [joined];
    return joined;
  }
}
