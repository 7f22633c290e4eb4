/**
 * Diagnostic (not a goal): what one received NATS message costs a Node process on this machine, by delivery
 * path, at a fixed rate. The fan-out benchmark's gap to bare uWS at N = 100 is a per-event cost, and this
 * splits it: a JetStream consumer (what the gateway needs: stream sequence numbers for resume) against a core
 * subscription (what the bare uWS floor uses), and a plain push consumer read by a core subscription that parses the
 * stream sequence itself (what a hand-written ordered consumer would cost). Messages carry a `Nats-Msg-Id`
 * header, as the agent's events do. Each arm runs in a fresh process: a paced publisher on its own
 * connection plus the receiving side; the "publisher only" arm is subtracted.
 * Usage: node --import ./bench/register.mjs bench/consume-cost.ts [rate=400] [seconds=5]
 */
import { fork } from "node:child_process";
import { connect, headers } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { NatsServer } from "./lib/stack.js";

type Mode =
  | "publisher_only"
  | "core_subscribe"
  | "js_consume_iterator"
  | "js_consume_callback"
  | "js_push_ordered"
  | "js_push_raw"
  | "js_republish_core";
const MODES: Mode[] = [
  "publisher_only",
  "core_subscribe",
  "js_consume_iterator",
  "js_consume_callback",
  "js_push_ordered",
  "js_push_raw",
  "js_republish_core",
];

async function arm(url: string, mode: Mode, rate: number, seconds: number): Promise<{ msgs: number; userMs: number }> {
  const nc = await connect({ servers: url, noAsyncTraces: true });
  const pub = await connect({ servers: url, noAsyncTraces: true });
  const js = jetstream(nc);
  let got = 0;
  const count = (data: Uint8Array): void => {
    got += data.length > 0 ? 1 : 0;
  };
  if (mode === "core_subscribe") nc.subscribe("cc.>", { callback: (_e, m) => count(m.data) });
  // The stream republishes what it stored to `ccr.>` with its sequence in a header: a core subscription
  // that still knows each message's stream sequence.
  let lastSeq = 0;
  if (mode === "js_republish_core") {
    nc.subscribe("ccr.>", {
      callback: (_e, m) => {
        lastSeq = Number(m.headers?.get("Nats-Sequence"));
        count(m.data);
      },
    });
  }
  if (mode === "js_consume_iterator" || mode === "js_consume_callback") {
    const c = await js.consumers.get("CC", { filter_subjects: "cc.>", deliver_policy: DeliverPolicy.New });
    if (mode === "js_consume_callback")
      await c.consume({ max_messages: 2_000, expires: 2_000, callback: (m) => count(m.data) });
    else {
      const it = await c.consume({ max_messages: 2_000, expires: 2_000 });
      void (async () => {
        for await (const m of it) count(m.data);
      })();
    }
  }
  if (mode === "js_push_ordered") {
    const c = await js.consumers.getPushConsumer("CC", { filter_subjects: "cc.>", deliver_policy: DeliverPolicy.New });
    await c.consume({ callback: (m) => count(m.data) });
  }
  if (mode === "js_push_raw") {
    // A plain push consumer read by a core subscription: the stream sequence parsed from the reply subject.
    const inbox = `_INBOX.raw${process.pid}`;
    nc.subscribe(inbox, {
      callback: (_e, m) => {
        // `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>`: the 4th token from the
        // end.
        const r = m.reply ?? "";
        let third = -1;
        let at = r.length;
        for (let dots = 0; at > 0; at--) {
          if (r.charCodeAt(at - 1) !== 46) continue;
          if (++dots === 3) third = at - 1;
          else if (dots === 4) break;
        }
        lastSeq = Number(r.slice(at, third));
        count(m.data);
      },
    });
    await (await jetstreamManager(nc)).consumers.add("CC", {
      deliver_subject: inbox,
      filter_subject: "cc.>",
      deliver_policy: DeliverPolicy.New,
      ack_policy: AckPolicy.None,
    });
  }
  const body = new Uint8Array(170);
  let stop = false;
  void (async () => {
    const t0 = performance.now();
    for (let i = 0; !stop; i++) {
      const waitMs = t0 + (i * 1000) / rate - performance.now();
      if (waitMs >= 1) await new Promise((r) => setTimeout(r, waitMs));
      const h = headers();
      h.set("Nats-Msg-Id", `job${i % 3}:${process.pid}:${i}`);
      pub.publish(`cc.job${i % 3}`, body, { headers: h });
    }
  })();
  await new Promise((r) => setTimeout(r, 1_500));
  const c0 = process.cpuUsage();
  const g0 = got;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const u = process.cpuUsage(c0);
  stop = true;
  if ((mode === "js_republish_core" || mode === "js_push_raw") && !(lastSeq > 0))
    throw new Error(`${mode}: no stream sequence seen`);
  return { msgs: got - g0, userMs: u.user / 1000 };
}

if (process.argv[2] === "--arm") {
  const [, , , url, mode, rate, seconds] = process.argv;
  const r = await arm(url!, mode as Mode, Number(rate), Number(seconds));
  process.send!(r);
  process.exit(0);
}

const rate = Number(process.argv[2] ?? 400);
const seconds = Number(process.argv[3] ?? 5);
const ns = await NatsServer.start();
try {
  const nc = await connect({ servers: ns.url });
  await (await jetstreamManager(nc)).streams.add({
    name: "CC",
    subjects: ["cc.>"],
    republish: { src: "cc.>", dest: "ccr.>" },
  });
  await nc.close();
  // Rounds alternate the arms and each arm's median counts: single runs on a shared VM swing by 2x.
  const ROUNDS = 3;
  const runs: Record<string, number[]> = {};
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? [...MODES].reverse() : MODES;
    for (const mode of order) {
      const r = await new Promise<{ msgs: number; userMs: number }>((resolve, reject) => {
        const p = fork(new URL(import.meta.url).pathname, ["--arm", ns.url, mode, String(rate), String(seconds)], {
          execArgv: process.execArgv,
        });
        p.once("message", (m) => resolve(m as { msgs: number; userMs: number }));
        p.once("exit", (code) => (code ? reject(new Error(`${mode} exited ${code}`)) : undefined));
      });
      // Per published message (receivers get them all; the publisher-only arm receives none).
      if (mode !== "publisher_only" && r.msgs < rate * seconds * 0.95)
        throw new Error(`${mode} received only ${r.msgs} messages`);
      (runs[mode] ??= []).push((r.userMs * 1000) / (rate * seconds));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const base = median(runs.publisher_only!);
  process.stdout.write(
    `user CPU per message at ${rate} msg/s, median of ${ROUNDS} alternating rounds (publisher-only arm subtracted):\n`,
  );
  process.stdout.write(`  ${"publisher_only".padEnd(22)} ${base.toFixed(1).padStart(7)} µs per published message\n`);
  for (const mode of MODES.slice(1))
    process.stdout.write(`  ${mode.padEnd(22)} ${(median(runs[mode]!) - base).toFixed(1).padStart(7)} µs\n`);
} finally {
  await ns.stop();
}
process.exit(0);
