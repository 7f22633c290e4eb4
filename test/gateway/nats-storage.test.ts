/**
 * A NATS with less JetStream storage than the streams' byte limits reserve (a small disk: nats-server takes 75% of
 * what was free when it started) refuses them. Start-up then fails naming the byte setting to lower, not the
 * replica count (it said "set natsReplicas to at most 1" on a one-server NATS that had 1 replica already), and
 * `nodeway up`, which sets those limits itself when the user did not, makes them fit the disk it has.
 */
import t from "tap";
import type { Test } from "tap";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileGatewayConfig, type GatewayOptions } from "../../gateway/index.js";
import { connectNats } from "../../gateway/nats.js";
import { ASSETS_DEFAULTS, EVENTS_DEFAULTS, InvalidConfigError } from "../../protocol/index.js";
import { storeRoomBytes, upStoreLimits } from "../../bin/settings.js";
import { NatsServer } from "../helpers/nats-server.js";

const GIB = 2 ** 30;

/** Connects as a gateway would at start-up; the error it fails with, or null. */
async function gatewayStart(natsUrl: string, opts: Omit<GatewayOptions, "natsUrl"> = {}): Promise<unknown> {
  try {
    const parts = await connectNats(compileGatewayConfig({ natsUrl, ...opts }), () => undefined);
    await parts.nc.close();
    return null;
  } catch (err) {
    return err;
  }
}

/** A nats-server whose JetStream may store `maxFileStore` on disk, as on a disk with 4/3 of that free. */
async function smallNats(t: Test, maxFileStore: string): Promise<NatsServer> {
  const dir = mkdtempSync(join(tmpdir(), "nw-small-nats-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const conf = join(dir, "nats.conf");
  writeFileSync(conf, `jetstream { max_file_store: ${maxFileStore} }\n`);
  const ns = await NatsServer.start({ configFile: conf });
  t.teardown(() => ns.stop());
  return ns;
}

t.test(
  "nats storage - a NATS with 3 GiB for JetStream: start-up names the byte limits, one after another",
  async (t) => {
    const ns = await smallNats(t, "3GB");
    const first = await gatewayStart(ns.url);
    t.ok(first instanceof InvalidConfigError, "start-up fails with a config error");
    t.equal((first as InvalidConfigError).key, "eventsMaxBytes", "naming the events stream's 4 GiB limit first");
    t.match(String((first as Error).message), /insufficient storage.*set eventsMaxBytes lower or give NATS more/s);
    t.notMatch(String((first as Error).message), /natsReplicas/, "not the replica count");
    const second = await gatewayStart(ns.url, { eventsMaxBytes: GIB });
    t.equal((second as InvalidConfigError).key, "assetsMaxBytes", "then the asset store's 16 GiB");
    t.match(String((second as Error).message), /OBJ_nw_assets.*set assetsMaxBytes lower/s);
    t.equal(await gatewayStart(ns.url, { eventsMaxBytes: GIB, assetsMaxBytes: GIB }), null, "limits that fit start");
    const raised = await gatewayStart(ns.url, { eventsMaxBytes: GIB, assetsMaxBytes: 8 * GIB });
    t.equal((raised as InvalidConfigError).key, "assetsMaxBytes", "raising an existing store past it names it too");
  },
);

t.test(
  "nats storage - nodeway up's limits fit the room it has, and are the defaults where there is room",
  async (t) => {
    t.same(upStoreLimits(100 * GIB), {
      assetsMaxBytes: ASSETS_DEFAULTS.storeMaxBytes,
      eventsMaxBytes: EVENTS_DEFAULTS.maxBytes,
    });
    for (const room of [20 * GIB, 5 * GIB, 300 * 2 ** 20, 0]) {
      const fit = upStoreLimits(room);
      t.ok(fit.assetsMaxBytes + fit.eventsMaxBytes <= Math.max(room * 0.6, 2 * 2 ** 20), `${room}: within 60% of it`);
      t.ok(fit.assetsMaxBytes >= 2 ** 20 && fit.eventsMaxBytes >= 2 ** 20, `${room}: at least 1 MiB each`);
      t.ok(fit.assetsMaxBytes % 2 ** 20 === 0 && fit.eventsMaxBytes % 2 ** 20 === 0, `${room}: whole MiB`);
    }
    // What a nats-server with 75% of that room for JetStream accepts: 4 GiB of room here.
    const fit = upStoreLimits(4 * GIB);
    const ns = await smallNats(t, String(3 * GIB));
    t.equal(await gatewayStart(ns.url, fit), null, "a NATS with 75% of the room takes both");
    const dir = mkdtempSync(join(tmpdir(), "nw-room-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const before = storeRoomBytes(dir);
    writeFileSync(join(dir, "block"), Buffer.alloc(4 * 2 ** 20));
    const after = storeRoomBytes(dir);
    t.ok(before !== null && after !== null, "the room of a folder is known");
    // The store's own bytes count as room: they were free before it wrote them (other writers may move the rest).
    t.ok(
      Math.abs(after! - before!) < 64 * 2 ** 20,
      `a store's own data does not shrink its room (${before} → ${after})`,
    );
  },
);
