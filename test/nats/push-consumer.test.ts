/**
 * The event hub's consumer against a real nats-server: every stored message in stream order with its stream
 * sequence (messages removed from the middle leave holes in the stream's sequence, not in the consumer's), flow
 * control answered under a burst, and an end the owner can act on when the server loses the consumer (a restart)
 * or deletes it. Reply subjects in both of the server's forms are read as the library reads them.
 */
import t from "tap";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { PushConsumer } from "../../nats/index.js";
import { ackSequences } from "../../nats/push-consumer.js";
import { check } from "../helpers/check.js";
import { NatsServer } from "../helpers/nats-server.js";

const enc = new TextEncoder();

t.test("push consumer - reply subjects in both forms give stream and consumer seqs; others are refused", async (t) => {
  const out = new Float64Array(2);
  const read = (reply: string) => (ackSequences(enc.encode(reply), out) ? [out[0], out[1]] : null);
  t.same(read("$JS.ACK.NW_EVENTS.c1.1.4711.42.1733390000000000000.7"), [4711, 42], "without a domain");
  t.same(read("$JS.ACK._.ACCHASH.NW_EVENTS.c1.1.4711.42.1733390000000000000.7"), [4711, 42], "with one, no token");
  t.same(read("$JS.ACK.hub.ACCHASH.NW_EVENTS.c1.2.9007199254740991.1.1733390000000000000.0.tok"), [
    Number.MAX_SAFE_INTEGER,
    1,
  ]);
  for (const bad of [
    "",
    "$JS.FC.NW_EVENTS.abc.1",
    "$JS.ACK.NW_EVENTS.c1.1.47x1.42.17.7",
    "$JS.ACK.NW_EVENTS.c1.1..42.17.7",
    "$JS.ACK.NW_EVENTS.c1.1.99999999999999999999.42.17.7",
    "$JS.ACK.NW_EVENTS.c1.1.4711.42",
    "_INBOX.abc.def",
  ])
    t.equal(read(bad), null, `refused: ${JSON.stringify(bad)}`);
});

t.test("push consumer - a real stream: order, seqs, flow control, and an end on restart or delete", async (t) => {
  const ns = await NatsServer.start();
  const nc = await connect({ servers: ns.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  t.teardown(async () => {
    await nc.close();
    await ns.stop();
  });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "PC", subjects: ["pc.>"] });
  const body = new Uint8Array(2_048);
  const total = 20_000;
  for (let i = 0; i < total; i++) nc.publish(`pc.job${i % 7}`, body);
  await nc.flush();
  await check(async () => (await jsm.streams.info("PC")).state.messages === total, 20_000);
  const removed = [5, 6, 7, 1_000, 19_999];
  for (const seq of removed) await jsm.streams.deleteMessage("PC", seq, false);

  const seen: number[] = [];
  const c = await PushConsumer.open(nc, jsm, {
    stream: "PC",
    filter: "pc.>",
    startSeq: 1,
    heartbeatMs: 500,
    onMessage: (m, seq) => {
      if (m.data.byteLength === body.byteLength) seen.push(seq);
    },
  });
  await check(() => seen.length === total - removed.length, 30_000, { name: "every stored message" });
  const want = Array.from({ length: total }, (_, i) => i + 1).filter((s) => !removed.includes(s));
  t.same(seen, want, "every stored message once, in stream order, with its stream seq (40 MB: flow control answered)");

  let ended: Error | undefined;
  void c.closed().then((e) => (ended = e));
  await ns.terminate();
  await ns.launch();
  await check(() => ended !== undefined, 15_000, { name: "an end after the restart" });
  t.match(
    ended,
    { message: /heartbeat|missing|ended/ },
    `a restart that lost the consumer ends it (${ended?.message})`,
  );

  const again = await check(
    () =>
      PushConsumer.open(nc, jsm, { stream: "PC", filter: "pc.>", startSeq: total, heartbeatMs: 500, onMessage() {} }),
    15_000,
  );
  let deleted: Error | undefined;
  void again.closed().then((e) => (deleted = e));
  const names = await (await jsm.consumers.list("PC")).next();
  for (const ci of names) await jsm.consumers.delete("PC", ci.name);
  await check(() => deleted !== undefined, 10_000, { name: "an end after the delete" });
  t.ok(deleted instanceof Error, `a consumer deleted on the server ends (${deleted?.message})`);
  again.stop();
});
