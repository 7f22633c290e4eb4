/**
 * `leaseHeaderOf` against a real nats-server: header blocks written byte for byte on a raw socket (an agent is not
 * bound to the library's writer), stored in a stream, read back through the library's ordered consumer. Where the
 * library's header map reads a block, ours gives the same answer; where the map throws (a malformed line elsewhere
 * in the block), ours still reads the lease, and the event is then judged by its token like any other.
 */
import { Socket } from "node:net";
import t, { type Test } from "tap";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { leaseHeaderOf } from "../../nats/index.js";
import { leaseInBlock } from "../../nats/lease-header.js";
import { NatsServer } from "../helpers/nats-server.js";

const TOKEN = "Qm9ndXMtYnV0LXBsYXVzaWJsZQ";

/** Header blocks as an agent could write them, and what the lease is in each. */
const BLOCKS: [name: string, block: string, lease: string | undefined][] = [
  ["the lease alone", `NATS/1.0\r\nNw-Lease: ${TOKEN}\r\n\r\n`, TOKEN],
  ["among other headers", `NATS/1.0\r\nA: 1\r\nNw-Lease: ${TOKEN}\r\nB: 2\r\n\r\n`, TOKEN],
  ["twice: the first counts", `NATS/1.0\r\nNw-Lease: first\r\nNw-Lease: ${TOKEN}\r\n\r\n`, "first"],
  ["no space, trailing spaces", `NATS/1.0\r\nNw-Lease:${TOKEN}   \r\n\r\n`, TOKEN],
  ["empty value", "NATS/1.0\r\nNw-Lease:\r\n\r\n", ""],
  ["other case is another key", `NATS/1.0\r\nnw-lease: ${TOKEN}\r\n\r\n`, undefined],
  ["a longer key", `NATS/1.0\r\nNw-Leases: ${TOKEN}\r\n\r\n`, undefined],
  ["a key with the lease as a prefix of its value", `NATS/1.0\r\nX: Nw-Lease: ${TOKEN}\r\n\r\n`, undefined],
  ["the status line is not a header", `NATS/1.0 Nw-Lease: ${TOKEN}\r\n\r\n`, undefined],
  ["no headers but the status line", "NATS/1.0\r\n\r\n", undefined],
  ["non-ASCII value", "NATS/1.0\r\nNw-Lease: é\r\n\r\n", "é"],
];

/** A bare NATS client on a raw socket: CONNECT (headers on), then each message as an HPUB frame. */
async function rawPublish(port: number, msgs: { subject: string; block: string | null; payload: string }[]) {
  const s = new Socket();
  await new Promise<void>((resolve, reject) => s.once("error", reject).connect(port, "127.0.0.1", resolve));
  const frames = [Buffer.from('CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n')];
  for (const m of msgs) {
    const payload = Buffer.from(m.payload);
    if (m.block === null) frames.push(Buffer.from(`PUB ${m.subject} ${payload.length}\r\n`), payload);
    else {
      const hdr = Buffer.from(m.block);
      frames.push(Buffer.from(`HPUB ${m.subject} ${hdr.length} ${hdr.length + payload.length}\r\n`), hdr, payload);
    }
    frames.push(Buffer.from("\r\n"));
  }
  frames.push(Buffer.from("PING\r\n"));
  let seen = "";
  const ponged = new Promise<void>((resolve) =>
    s.on("data", (d) => {
      seen += d.toString();
      if (seen.includes("PONG")) resolve();
    }),
  );
  s.write(Buffer.concat(frames));
  await ponged;
  s.destroy();
  return seen;
}

/** What the library's own header map says: the first value, undefined without the key, or that it threw. */
function libraryLease(m: JsMsg): string | undefined | { threw: string } {
  try {
    const h = m.headers;
    return h?.has("Nw-Lease") ? h.get("Nw-Lease") : undefined;
  } catch (err) {
    return { threw: (err as Error).message };
  }
}

async function storedAndRead(t: Test, msgs: { subject: string; block: string | null; payload: string }[]) {
  const ns = await NatsServer.start();
  const nc = await connect({ servers: ns.url });
  t.teardown(async () => {
    await nc.close();
    await ns.stop();
  });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "EV", subjects: ["ev.>"] });
  const seen = await rawPublish(ns.port, msgs);
  t.notMatch(seen, /-ERR/, "the server took every frame");
  const consumer = await jetstream(nc).consumers.get("EV");
  const out: JsMsg[] = [];
  const it = await consumer.consume({ max_messages: 100 });
  for await (const m of it) {
    out.push(m);
    if (out.length === msgs.length) break;
  }
  return out;
}

t.test("reads the lease as the library's header map does, for every block an agent may write", async (t) => {
  const msgs: { subject: string; block: string | null; payload: string }[] = BLOCKS.map(([, block], i) => ({
    subject: `ev.${i}`,
    block,
    payload: `p${i}`,
  }));
  msgs.push({ subject: "ev.plain", block: null, payload: "no headers at all" });
  const read = await storedAndRead(t, msgs);
  t.equal(read.length, msgs.length, "every message stored and read back");
  for (const m of read) {
    const raw = (m as unknown as { msg: { _rdata?: unknown; _msg?: { hdr?: unknown } } }).msg;
    t.ok(
      raw._rdata instanceof Uint8Array && typeof raw._msg?.hdr === "number",
      "nats.js still keeps the raw block where the fast path reads it (else it falls back to the map, slower)",
    );
    const i = m.subject === "ev.plain" ? -1 : Number(m.subject.slice(3));
    const want = i < 0 ? undefined : BLOCKS[i]![2];
    const name = i < 0 ? "no header block" : BLOCKS[i]![0];
    t.equal(leaseHeaderOf(m), want, `${name}: the lease read`);
    t.same(leaseHeaderOf(m), libraryLease(m), `${name}: as the library reads it`);
    t.equal(new TextDecoder().decode(m.data), msgs.find((x) => x.subject === m.subject)!.payload, "payload intact");
  }
});

t.test("a block the library's map refuses still gives its lease, and a hostile block gives none", async (t) => {
  const bad = [
    { subject: "ev.badkey", block: `NATS/1.0\r\nbad key: x\r\nNw-Lease: ${TOKEN}\r\n\r\n`, payload: "a" },
    { subject: "ev.after", block: `NATS/1.0\r\nNw-Lease: ${TOKEN}\r\nbad key: x\r\n\r\n`, payload: "b" },
  ];
  const read = await storedAndRead(t, bad);
  for (const m of read) {
    t.ok(typeof libraryLease(m) === "object", `${m.subject}: the library's map throws on the bad key`);
    t.equal(leaseHeaderOf(m), TOKEN, `${m.subject}: the lease is still read; the token decides`);
  }
});

t.test("blocks cut short or without line ends are read without overrun", async (t) => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const cases: [string, string | undefined][] = [
    ["", undefined],
    ["NATS/1.0", undefined],
    ["NATS/1.0\r\nNw-Lease: abc", "abc"],
    ["NATS/1.0\r\nNw-Lease", undefined],
    ["NATS/1.0\r\nNw-Lease:", ""],
    ["NATS/1.0\r\n\r\nNw-Lease: late\r\n", "late"],
    ["\r\n\r\n\r\n", undefined],
  ];
  for (const [block, want] of cases) {
    const bytes = enc(block);
    t.equal(leaseInBlock(bytes, bytes.length), want, JSON.stringify(block));
  }
  const long = enc(`NATS/1.0\r\nNw-Lease: ${TOKEN}\r\n\r\npayload after the block`);
  const end = long.indexOf(0x70); // where the payload starts
  t.equal(leaseInBlock(long, end), TOKEN, "stops at the block's end");
  t.equal(leaseInBlock(long, 12), undefined, "a block end inside the key reads nothing past it");
});

t.test("consecutive leases of one length that differ in one byte are each read as sent", async (t) => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const tokens = [TOKEN, `${TOKEN.slice(0, -1)}X`, TOKEN, ` ${TOKEN.slice(1)}`, TOKEN];
  for (const token of tokens) {
    const block = enc(`NATS/1.0\r\nNw-Lease: ${token}\r\n\r\n`);
    t.equal(leaseInBlock(block, block.length), token.trim(), JSON.stringify(token));
  }
});
