/**
 * A runner that trickles a frame: a container may write a large frame a few bytes at a time, and the agent's
 * reader must not copy what it already holds once per piece. When every piece joined the pending bytes again, an
 * 8 MiB frame in 1 KiB pieces held the agent's event loop for 4.5 s of CPU (a 16 MiB one, the limit, four times
 * that); read once whole, 44 ms.
 */
import t from "tap";
import { FrameReader, frame } from "../../agent/runners/index.js";

/** CPU milliseconds `fn` takes in this process. */
function cpuMs(fn: () => void): number {
  const start = process.cpuUsage();
  fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

t.test("runner hostile frames - an 8 MiB frame in 1 KiB pieces costs what it costs whole", async (t) => {
  const value = new Uint8Array(8 * 1024 * 1024).fill(7);
  const stream = frame({ type: "event", event: { type: "output_update", node_id: "n", value } });
  const reader = new FrameReader();
  const got: unknown[] = [];
  const ms = cpuMs(() => {
    for (let i = 0; i < stream.byteLength; i += 1024) got.push(...reader.push(stream.subarray(i, i + 1024)));
  });
  t.equal(got.length, 1, "the frame is read once it is whole");
  const bytes = (got[0] as { event: { value: Uint8Array } }).event.value;
  t.equal(bytes.byteLength, value.byteLength, "with all its bytes");
  t.ok(
    bytes.every((b) => b === 7),
    "intact",
  );
  t.ok(ms < 1_500, `8,192 pieces took ${Math.round(ms)} ms of CPU (a join per piece took ~4,500)`);
});

t.test("runner hostile frames - a length split across pieces, then frames back to back, read in order", async (t) => {
  const stream = Buffer.concat([frame({ a: 1 }), frame({ b: "x".repeat(70_000) }), frame({ c: 3 })]);
  const reader = new FrameReader();
  const got: unknown[] = [];
  let at = 0;
  for (const n of [1, 2, 1, 3, 70_000, 5]) {
    got.push(...reader.push(stream.subarray(at, at + n)));
    at += n;
  }
  got.push(...reader.push(stream.subarray(at)));
  t.same(got, [{ a: 1 }, { b: "x".repeat(70_000) }, { c: 3 }]);
});
