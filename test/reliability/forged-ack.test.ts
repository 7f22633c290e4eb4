/**
 * A forged ack. Any agent user may publish on `$JS.ACK.NW_JOBS.>` (acks leave on the message's reply subject, which
 * permissions cannot tie to the agent that pulled it), and the subject of another agent's dispatch is guessable:
 * its stream sequence is a small number. On the shipped account config with a real nats-server, `agent-2` acks
 * every sequence of the `cpu` pool's consumer while `agent-1` runs a job there:
 *   - the holder keeps running it and it completes with its own results (the ack only removed the message);
 *   - when the holder is then killed, JetStream will never deliver the job again: a gateway ends it
 *     `JOB_ERR_DISPATCH_LOST` once the holder has been silent for a lease, instead of leaving it `running`.
 * And a holder killed without a forged ack is still redelivered to another agent (its dispatch is there).
 */
import t, { type Test } from "tap";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { ErrorCode, poolConsumer } from "../../protocol/index.js";
import { placeholderOf } from "../../bin/cmd-accounts.js";
import { startGateway } from "../../gateway/index.js";
import { WsClient, api, tokensWorkflow } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { NatsServer } from "../helpers/nats-server.js";
import { ROOT, startAgentProc } from "../helpers/procs.js";

const ACK_WAIT_MS = 3_000;
const TOKENS = 60;

t.test("forged ack - a job whose dispatch another agent acked never hangs", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nw-forged-ack-"));
  const pw = { gateway: "gw-pass-0123456789", "agent-1": "agent1-pass-0123456789", "agent-2": "agent2-pass-987654" };
  let conf = readFileSync(join(ROOT, "deploy", "nats", "accounts.conf"), "utf8");
  for (const [user, p] of Object.entries(pw)) conf = conf.replace(placeholderOf(user), JSON.stringify(p));
  writeFileSync(join(dir, "accounts.conf"), conf);
  const ns = await NatsServer.start({ configFile: join(dir, "accounts.conf") });
  t.teardown(() => ns.stop());
  writeFileSync(join(dir, "gateway.pw"), `${pw.gateway}\n`, { mode: 0o600 });
  const gw = await startGateway({
    natsUrl: ns.url,
    natsUser: "gateway",
    natsPasswordFile: join(dir, "gateway.pw"),
    port: 0,
    ackWaitMs: ACK_WAIT_MS,
  });
  t.teardown(() => gw.stop());
  const agent1Url = ns.url.replace("nats://", `nats://agent-1:${pw["agent-1"]}@`);
  const agents = [await startAgentProc(agent1Url, ["--name", "holder"])];
  t.teardown(() => {
    for (const a of agents) a.kill("SIGKILL");
  });
  await api(gw.url, "PUT", "/api/workflows/slow", tokensWorkflow(TOKENS, 20));
  const client = await WsClient.open(gw.url, "json");
  t.teardown(() => client.close());
  const admin = await connect({ servers: ns.url, user: "gateway", pass: pw.gateway });
  t.teardown(() => admin.close());
  const jsm = await jetstreamManager(admin);
  const attacker = await connect({
    servers: ns.url,
    user: "agent-2",
    pass: pw["agent-2"],
    inboxPrefix: "_INBOX_agent-2",
  });
  t.teardown(() => attacker.close());

  /** Starts a slow job and waits for its tokens: its dispatch is then pulled and pending an ack. */
  async function streamingJob(t: Test): Promise<{ id: string; seq: number }> {
    const run = await client.request("run_job", { workflow_id: "slow" });
    const id = String((run.result as { job_id: string }).job_id);
    await check(() => client.events(id).some((m) => m.type === "chunk") || null, 20_000, { name: `${id} streams` });
    const rec = (await api(gw.url, "GET", `/api/jobs/${id}`)).body as { dispatch_seq?: number };
    t.ok(Number(rec.dispatch_seq) > 0, `the claim recorded the dispatch's sequence (${rec.dispatch_seq})`);
    t.ok(await jsm.streams.getMessage("NW_JOBS", { seq: Number(rec.dispatch_seq) }), "which NW_JOBS holds");
    return { id, seq: Number(rec.dispatch_seq) };
  }

  /** agent-2 acks sequences 1..seq+5 of the cpu consumer, as a guesser would, and NATS takes them. */
  async function forgeAcks(seq: number): Promise<void> {
    for (let s = 1; s <= seq + 5; s++)
      attacker.publish(`$JS.ACK.NW_JOBS.${poolConsumer("cpu")}.1.${s}.${s}.${Date.now()}000000.0`);
    await attacker.flush();
    await check(async () => (await jsm.streams.getMessage("NW_JOBS", { seq })) === null || null, 5_000, {
      name: "the forged ack removed the dispatch",
    });
  }

  await t.test("a live holder finishes the job with its own results", async (t) => {
    const { id, seq } = await streamingJob(t);
    await forgeAcks(seq);
    const end = await client.waitTerminal(id, 30_000);
    t.equal(end.status, "completed");
    const want = Array.from({ length: TOKENS }, (_, i) => `tok${i} `).join("");
    t.same(end.result, { text: [want] }, "with the holder's output");
    const attempts = new Set(
      client
        .events(id)
        .map((m) => m.attempt)
        .filter((a) => Number(a) > 0),
    );
    t.same([...attempts], [1], "in one attempt, never redelivered");
  });

  await t.test("a killed holder's job ends JOB_ERR_DISPATCH_LOST instead of running forever", async (t) => {
    const { id, seq } = await streamingJob(t);
    await forgeAcks(seq);
    agents[0]!.kill("SIGKILL");
    agents.push(await startAgentProc(agent1Url, ["--name", "rescuer"]));
    const end = await client.waitTerminal(id, 6 * ACK_WAIT_MS);
    t.equal(end.status, "failed");
    t.equal((end.error as { code?: string } | undefined)?.code, ErrorCode.JOB_ERR_DISPATCH_LOST, "saying why");
    t.match(String((end.error as { message?: string }).message), /agent-1.*acknowledged by another NATS user/);
    const rec = (await api(gw.url, "GET", `/api/jobs/${id}`)).body as { status?: string };
    t.equal(rec.status, "failed", "the record says so too");
  });

  await t.test("a killed holder's job with its dispatch in place runs again elsewhere", async (t) => {
    const { id } = await streamingJob(t);
    const holder = agents.at(-1)!;
    holder.kill("SIGKILL");
    agents.push(await startAgentProc(agent1Url, ["--name", "second"]));
    const end = await client.waitTerminal(id, 10 * ACK_WAIT_MS);
    t.equal(end.status, "completed", `redelivered and run (${JSON.stringify(end.error ?? null)})`);
    t.ok(
      client.events(id).some((m) => m.attempt === 2),
      "by a second attempt",
    );
  });
});
