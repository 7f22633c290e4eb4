/**
 * The gateway's live view of a KV bucket against a real nats-server. `ready` gates every listing the gateway
 * serves (agents, counts): it must come once the view holds what the bucket held, and it must come even when the
 * values counted at the start never arrive, as when an operator purges the bucket's stream while the view reads.
 */
import t from "tap";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { KvView } from "../../gateway/kv-view.js";
import { check } from "../helpers/check.js";
import { NatsServer } from "../helpers/nats-server.js";

const KEYS = 20_000;

const ns = await NatsServer.start();
const nc = await connect({ servers: ns.url });
t.teardown(async () => {
  await nc.close();
  await ns.stop();
});
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);

/** A bucket holding `KEYS` keys, written as core publishes (the stream stores them as KV values). */
async function filledBucket(name: string): Promise<void> {
  await new Kvm(nc).create(name, { history: 1 });
  for (let i = 0; i < KEYS; i++) nc.publish(`$KV.${name}.k${i}`, `v${i}`);
  await nc.flush();
  await check(async () => (await jsm.streams.info(`KV_${name}`)).state.messages === KEYS, 10_000);
}

/** A sink that takes a little time per value, as a real one parsing records does. */
function slowSink(onPut: () => void = () => undefined) {
  const held = new Map<string, string>();
  const dec = new TextDecoder();
  return {
    held,
    put(key: string, value: Uint8Array) {
      const until = performance.now() + 0.05;
      while (performance.now() < until);
      held.set(key, dec.decode(value));
      onPut();
    },
    delete(key: string) {
      held.delete(key);
    },
  };
}

t.test("kv view - ready once it holds every key the bucket held, then follows writes", async (t) => {
  await filledBucket("view_full");
  const sink = slowSink();
  const view = new KvView(js, "view_full", ">", sink, () => undefined);
  t.teardown(() => view.stop());
  await view.start();
  await view.ready;
  t.equal(sink.held.size, KEYS, "every key is held when ready resolves");
  t.equal(sink.held.get("k19999"), "v19999");
  nc.publish("$KV.view_full.k5", "changed");
  await check(() => sink.held.get("k5") === "changed", 5_000);
  t.pass("a later write reaches the view");
});

t.test("kv view - ready even when the stream is purged while the view reads what it counted", async (t) => {
  await filledBucket("view_purged");
  let purge: Promise<unknown> | null = null;
  const sink = slowSink(() => {
    purge ??= jsm.streams.purge("KV_view_purged");
  });
  const view = new KvView(js, "view_purged", ">", sink, () => undefined);
  t.teardown(() => view.stop());
  await view.start();
  let ready = false;
  void view.ready.then(() => (ready = true));
  await check(() => ready, 10_000).catch(() => undefined);
  t.ok(purge, "the purge was sent while the view read");
  t.ok(sink.held.size < KEYS, `the purge cut the read short (${sink.held.size} of ${KEYS} read)`);
  t.ok(ready, "ready resolved within 10 s although the counted values never came");
  nc.publish("$KV.view_purged.after", "1");
  await check(() => sink.held.get("after") === "1", 5_000);
  t.pass("and the view follows writes after the purge");
});
