/**
 * Frames on the unix socket between an agent and a `docker` runner (docker.ts, strategy-child.ts):
 * a 4-byte big-endian length, then that many bytes of MessagePack (protocol/codec.ts, with its limits). A thread
 * or a child process has Node's own structured channel; a container has only a socket, and what comes out of
 * it is read like anything else that crosses an edge: a frame too long or not MessagePack is an error, never an
 * allocation of what a length claims.
 */
import { CODEC_LIMITS, ErrorCode, ProtocolError, decodeMsgpack, encodeMsgpack } from "../../protocol/index.js";

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

/** Cuts a byte stream into decoded frames. */
export class FrameReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  /** The frames `chunk` completes, in order. Throws `ProtocolError` on a frame over the limit or not MessagePack. */
  push(chunk: Buffer): unknown[] {
    this.pending.push(chunk);
    this.pendingBytes += chunk.byteLength;
    const out: unknown[] = [];
    while (this.pendingBytes >= 4) {
      const head = this.pending.length === 1 ? this.pending[0]! : this.join();
      const len = head.readUInt32BE(0);
      if (len > CODEC_LIMITS.maxMessageBytes) {
        throw new ProtocolError(
          ErrorCode.PROTO_ERR_TOO_LARGE,
          `runner frame of ${len} bytes exceeds ${CODEC_LIMITS.maxMessageBytes}`,
        );
      }
      if (this.pendingBytes < 4 + len) break;
      const all = this.join();
      // A copy: decoded bytes values are views of it, and must not pin the rest of the stream.
      out.push(decodeMsgpack(Buffer.from(all.subarray(4, 4 + len))));
      const rest = all.subarray(4 + len);
      this.pending = rest.byteLength > 0 ? [rest] : [];
      this.pendingBytes = rest.byteLength;
    }
    return out;
  }

  private join(): Buffer {
    if (this.pending.length > 1) this.pending = [Buffer.concat(this.pending, this.pendingBytes)];
    return this.pending[0]!;
  }
}
