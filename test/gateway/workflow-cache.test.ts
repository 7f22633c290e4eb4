/**
 * The workflows a gateway keeps in memory (gateway/workflows.ts): a change or a delete made through another gateway,
 * or written straight into the bucket, reaches what this gateway serves and runs; a change made through this gateway
 * is read back at once.
 */
import t from "tap";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { startGateway } from "../../gateway/index.js";
import { KV_WORKFLOWS } from "../../protocol/index.js";
import { check } from "../helpers/check.js";
import { api } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";

const hello = (value: string) => ({
  graph: { nodes: [{ id: "out", type: "nodetool.output.Output", data: { name: "greeting", value } }], edges: [] },
});

/** What GET /api/workflows/hello answers on `base`: its greeting, or the status when not 200. */
async function served(base: string): Promise<string | number> {
  const r = await api(base, "GET", "/api/workflows/hello");
  if (r.status !== 200) return r.status;
  return (r.body as { graph: { nodes: { data: { value: string } }[] } }).graph.nodes[0]!.data.value;
}

/** Runs hello on `base` to its end; its greeting. */
async function ran(base: string): Promise<unknown> {
  const r = await api(base, "POST", "/api/workflows/hello/run?wait=true", { params: {} });
  return (r.body.outputs as Record<string, unknown[]> | undefined)?.greeting?.[0];
}

t.test("workflow cache - changes from anywhere reach what a gateway serves and runs", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const g2 = await startGateway({ natsUrl: s.ns.url, port: 0 });
  t.teardown(() => g2.stop());
  const nc = await connect({ servers: s.ns.url });
  t.teardown(() => nc.close());
  const kv = await new Kvm(nc).open(KV_WORKFLOWS);
  const until = (want: string | number) => () =>
    check(async () => (await served(g2.url)) === want, 10_000, { name: `the second gateway serves ${want}` });

  t.equal((await api(s.url, "PUT", "/api/workflows/hello", hello("one"))).status, 200);
  t.equal(await ran(g2.url), "one", "a second gateway runs what the first saved (and keeps it)");

  await api(s.url, "PUT", "/api/workflows/hello", hello("two"));
  await until("two")();
  t.equal(await ran(g2.url), "two", "a change through the first gateway: the second runs the new version");

  const stored = JSON.parse((await kv.get("hello"))!.string()) as Record<string, unknown>;
  await kv.put("hello", JSON.stringify({ ...stored, ...hello("three") }));
  await until("three")();
  t.equal(await ran(g2.url), "three", "a write straight into the bucket: the same");

  await api(g2.url, "PUT", "/api/workflows/hello", hello("four"));
  t.equal(await served(g2.url), "four", "a change through the gateway itself is read back at once");
  t.equal(await ran(g2.url), "four", "and run at once");

  await api(s.url, "DELETE", "/api/workflows/hello");
  await until(404)();
  const refused = await api(g2.url, "POST", "/api/workflows/hello/run", { params: {} });
  t.equal(refused.status, 404, "a delete through the first gateway: the second no longer runs it");

  await api(g2.url, "PUT", "/api/workflows/hello", hello("five"));
  t.equal(await served(g2.url), "five");
  t.equal((await api(g2.url, "DELETE", "/api/workflows/hello")).status, 200);
  t.equal(await served(g2.url), 404, "a delete through the gateway itself is gone at once");
});
