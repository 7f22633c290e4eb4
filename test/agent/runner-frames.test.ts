/**
 * Frames between an agent and a `docker` runner (agent/runner-frames.ts): any split of the byte stream gives the
 * same messages, bytes values survive, and what is not a frame — a length over the limit, bytes that are not
 * MessagePack — is an error naming it, without allocating what a length claims.
 */
import t from "tap";
import { FrameReader, frame } from "../../agent/runner-frames.js";
import { CODEC_LIMITS, ErrorCode, ProtocolError } from "../../protocol/index.js";

const messages = [
  { type: "event", event: { type: "chunk", node_id: "tok", content: "héllo ", done: false } },
  { type: "event", event: { type: "output_update", node_id: "img", value: new Uint8Array([0, 1, 2, 255]) } },
  { type: "done", result: { status: "completed", outputs: { text: ["héllo "] } } },
];

t.test("runner frames - every split of the stream gives the same messages, bytes as bytes", async (t) => {
  const stream = Buffer.concat(messages.map(frame));
  for (const cut of [1, 3, 4, 5, 7, 64, stream.length]) {
    const r = new FrameReader();
    const got: unknown[] = [];
    for (let i = 0; i < stream.length; i += cut) got.push(...r.push(stream.subarray(i, i + cut)));
    t.same(got, messages, `in pieces of ${cut} bytes`);
    const bytes = (got[1] as { event: { value: unknown } }).event.value;
    t.ok(bytes instanceof Uint8Array && bytes.byteLength === 4, `pieces of ${cut}: a bytes value stays bytes`);
  }
  t.same(new FrameReader().push(stream.subarray(0, 3)), [], "less than a length: nothing yet");
});

t.test("runner frames - a length over the limit or a body that is not MessagePack is refused with a code", async (t) => {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(CODEC_LIMITS.maxMessageBytes + 1, 0);
  const thrown = (fn: () => unknown): unknown => {
    try {
      fn();
    } catch (err) {
      return err;
    }
    return null;
  };
  const big = thrown(() => new FrameReader().push(head));
  t.ok(big instanceof ProtocolError && big.code === ErrorCode.PROTO_ERR_TOO_LARGE, "over the limit: refused at the length, before its body");
  t.match((big as Error).message, /runner frame of \d+ bytes exceeds/);
  const junk = Buffer.from([0, 0, 0, 1, 0xc1]); // 0xc1 is never used in MessagePack
  const bad = thrown(() => new FrameReader().push(junk));
  t.ok(bad instanceof ProtocolError && bad.code === ErrorCode.PROTO_ERR_DECODE, "not MessagePack: a decode error");
});
