/**
 * Each agent can touch only the jobs it holds. The shipped account config (deploy/nats/accounts.conf) on a real
 * nats-server with auth; a gateway as `gateway`, the victim agent as `agent-1`, and the attacker connected as
 * `agent-2` (a compromised GPU host that knows the victim's job id) with nats.js as any NATS client would:
 *   - forging the victim job's events (its own subject, with a made-up lease token; the victim's and the
 *     gateway's subjects): stored at most, never delivered to the watching client, replayed, or in the record;
 *   - rewriting the job's record (KV directly; through the gateways, with a wrong claim secret): refused;
 *   - reading a thread, a workflow, the job's events and its dispatch: refused;
 *   - deleting, creating or updating a consumer: refused; subscribing to `_INBOX.>`: refused;
 * and the victim job completes with its own results, counted from the client's side. `agent-2` also runs as a real
 * agent (its own pool), so it holds a real lease token and claim secret of its own job: neither works on the victim's.
 */
import t from "tap";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import {
  KV_JOBS,
  KV_THREADS,
  KV_WORKFLOWS,
  OBJ_ASSETS,
  decodeMsgpack,
  encodeJson,
  encodeMsgpack,
  eventMsgId,
  jobKeys,
  threadKeys,
  workflowKey,
} from "../../protocol/index.js";
import { LEASE_HEADER, subjects } from "../../protocol/subjects.js";
import { loadLeaseSigner, renderAccounts } from "../../nats/index.js";
import { placeholderOf } from "../../bin/cmd-accounts.js";
import { startGateway } from "../../gateway/index.js";
import { WsClient, api, readStream, tokensWorkflow } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { readJobLog } from "../helpers/history.js";
import { NatsServer } from "../helpers/nats-server.js";
import { ROOT, startAgentProc } from "../helpers/procs.js";

const TOKENS = 100;
const FORGED = "FORGED-BY-AGENT-2";

/** The shipped accounts file with real passwords in place of its placeholders. */
function shippedConf(dir: string, passwords: Record<string, string>): string {
  let text = readFileSync(join(ROOT, "deploy", "nats", "accounts.conf"), "utf8");
  for (const [user, pw] of Object.entries(passwords)) text = text.replace(placeholderOf(user), JSON.stringify(pw));
  const file = join(dir, "accounts.conf");
  writeFileSync(file, text);
  return file;
}

/** What NATS said no to on `nc` (permission violations arrive as async errors). */
function violationsOf(nc: NatsConnection): string[] {
  const out: string[] = [];
  void (async () => {
    for await (const s of nc.status())
      if (s.type === "error") out.push(String((s as { error?: Error }).error?.message));
  })();
  return out;
}

/** An event of the victim job as the attacker makes it. */
function forged(jobId: string, body: Record<string, unknown>): Uint8Array {
  return encodeMsgpack({ ...body, job_id: jobId, workflow_id: "slow", attempt: 1, ts: Date.now() });
}

/** Settles to "ok" or the error's message: the attacker's calls are expected to fail. */
const outcome = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => "ok",
    (err: Error) => err.message || String(err),
  );

t.test("confined - a second agent user cannot forge, rewrite, read or steer another agent's job", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nw-confined-"));
  const pw = { gateway: "gw-pass-0123456789", "agent-1": "agent1-pass-0123456789", "agent-2": "agent2-pass-987654" };
  const ns = await NatsServer.start({ configFile: shippedConf(dir, pw) });
  t.teardown(() => ns.stop());
  const gwPw = join(dir, "gateway.pw");
  writeFileSync(gwPw, `${pw.gateway}\n`, { mode: 0o600 });
  const gw = await startGateway({ natsUrl: ns.url, natsUser: "gateway", natsPasswordFile: gwPw, port: 0 });
  t.teardown(() => gw.stop());
  const victim = await startAgentProc(ns.url.replace("nats://", `nats://agent-1:${pw["agent-1"]}@`), [
    "--name",
    "victim",
  ]);
  t.teardown(() => victim.kill("SIGKILL"));
  const host2 = await startAgentProc(ns.url.replace("nats://", `nats://agent-2:${pw["agent-2"]}@`), [
    "--name",
    "attacker",
    "--pools",
    "evil",
  ]);
  t.teardown(() => host2.kill("SIGKILL"));

  // What the attacker will try to read: a thread and a workflow, stored the gateway's way.
  const admin = await connect({ servers: ns.url, user: "gateway", pass: pw.gateway });
  t.teardown(() => admin.close());
  const kvm = new Kvm(admin);
  await (await kvm.open(KV_THREADS)).put(threadKeys.thread("secret-thread"), encodeJson({ id: "secret-thread" }));
  await api(gw.url, "PUT", "/api/workflows/slow", tokensWorkflow(TOKENS, 20));

  const client = await WsClient.open(gw.url, "json");
  t.teardown(() => client.close());
  // The attacker's own job, on the pool only it serves (the gateway made that pool's consumer for it): it gets a
  // real lease token and claim secret.
  const own = await client.request("run_job", { ...tokensWorkflow(3, 0), params: {}, requirements: { pool: "evil" } });
  const ownId = String((own.result as { job_id: string }).job_id);
  t.equal((await client.waitTerminal(ownId, 30_000)).status, "completed", "the attacker host runs its own job");
  const ownLog = await jetstreamManager(admin).then((m) =>
    m.streams.getMessage("NW_EVENTS", { last_by_subj: subjects.jobEvents(ownId, "agent-2") }),
  );
  const ownLease = ownLog?.header.get(LEASE_HEADER) ?? "";
  t.ok(ownLease.length > 0, "its events carry its lease token");
  const ownSecret = (await loadLeaseSigner(await kvm.open(KV_JOBS))).claimSecret(ownId);

  const run = await client.request("run_job", { workflow_id: "slow" });
  const jobId = String((run.result as { job_id: string }).job_id);
  await check(() => (client.events(jobId).some((m) => m.type === "chunk") ? true : null), 20_000, {
    name: "the victim job streams",
  });

  const nc = await connect({ servers: ns.url, user: "agent-2", pass: pw["agent-2"], inboxPrefix: "_INBOX_agent-2" });
  t.teardown(() => nc.close());
  const violations = violationsOf(nc);
  const js = jetstream(nc, { timeout: 2_000 });
  const jsm = await jetstreamManager(nc, { timeout: 2_000 });

  await t.test("forged events are dropped", async (t) => {
    const h = headers();
    h.set("Nats-Msg-Id", eventMsgId(jobId, 1, "forged-1"));
    h.set(LEASE_HEADER, "AAAAAAAAAAAAAAAAAAAAAA");
    const chunk = forged(jobId, { type: "chunk", node_id: "tok", content_type: "text", content: FORGED, done: false });
    const ack = await outcome(js.publish(subjects.jobEvents(jobId, "agent-2"), chunk, { headers: h }));
    t.equal(ack, "ok", "its own subject takes the event (NATS cannot know it is forged) ...");
    const replayed = headers();
    replayed.set(LEASE_HEADER, ownLease);
    const withOwn = await outcome(js.publish(subjects.jobEvents(jobId, "agent-2"), chunk, { headers: replayed }));
    t.equal(withOwn, "ok", "... and one with the lease token of its own job");
    const end = forged(jobId, { type: "job_update", status: "completed", result: { text: [FORGED] } });
    t.equal(await outcome(js.publish(subjects.jobEvents(jobId, "agent-2"), end)), "ok", "... and a forged ending");
    for (const source of ["agent-1", "gw"]) {
      const r = await outcome(js.publish(subjects.jobEvents(jobId, source), end, { timeout: 1_000 }));
      t.not(r, "ok", `publishing on the ${source === "gw" ? "gateway's" : "victim's"} subject is refused (${r})`);
    }
  });

  await t.test("the record cannot be rewritten", async (t) => {
    const kvPut = await outcome(
      js.publish(`$KV.${KV_JOBS}.${jobKeys.record(jobId)}`, encodeJson({ id: jobId, status: "completed" }), {
        timeout: 1_000,
      }),
    );
    t.not(kvPut, "ok", `a KV write to nw_jobs is refused (${kvPut})`);
    const ask = (subject: string, req: Record<string, unknown>) =>
      outcome(
        nc
          .request(subject, encodeMsgpack({ v: 1, job_id: jobId, proof: "guess", ...req }), { timeout: 2_000 })
          .then((m) => {
            const reply = decodeMsgpack(m.data) as { ok: boolean; code?: string };
            if (!reply.ok) throw new Error(String(reply.code));
          }),
      );
    const record = encodeJson({ id: jobId, status: "completed", attempt: 1, outputs: { text: [FORGED] } });
    const finish = { type: "record.update", revision: 1, record_json: record };
    const write = await ask(subjects.records("agent-2"), finish);
    t.equal(write, "GW_ERR_FORBIDDEN", "a gateway refuses its write to another's job");
    t.equal(await ask(subjects.records("agent-2"), { type: "record.get" }), "GW_ERR_FORBIDDEN", "and its read of it");
    const claim = await ask(subjects.records("agent-2"), {
      type: "record.update",
      revision: 1,
      record_json: encodeJson({ id: jobId, status: "running", attempt: 9 }),
    });
    t.equal(claim, "GW_ERR_FORBIDDEN", "and a claim without the dispatch's secret");
    const claimOwn = await ask(subjects.records("agent-2"), {
      type: "record.update",
      proof: ownSecret,
      revision: 1,
      record_json: encodeJson({ id: jobId, status: "running", attempt: 9 }),
    });
    t.equal(claimOwn, "GW_ERR_FORBIDDEN", "or with the claim secret of its own job");
    // The one-request claim follows the same rules.
    const oneShot = { type: "record.claim", attempt: 9, agent_id: "attacker", dispatch_seq: 1 };
    t.equal(await ask(subjects.records("agent-2"), oneShot), "GW_ERR_FORBIDDEN", "a record.claim without the secret");
    t.equal(
      await ask(subjects.records("agent-2"), { ...oneShot, proof: ownSecret }),
      "GW_ERR_FORBIDDEN",
      "or with its own job's",
    );
    const bad = await ask(subjects.records("agent-2"), { ...oneShot, attempt: 0, dispatch_seq: "1" });
    t.equal(bad, "GW_ERR_BAD_REQUEST", "and a malformed one is refused as such");
    const asVictim = await ask(subjects.records("agent-1"), finish);
    t.not(asVictim, "ok", `asking as the victim is refused by NATS (${asVictim})`);
    // Child jobs are asked for by the parent's holder only: another agent can neither start one in the victim's
    // name (work billed to its job) nor wait for or cancel one.
    const graph = { nodes: [{ id: "n", type: "nodetool.constant.String", data: { value: FORGED } }], edges: [] };
    const child = await ask(subjects.records("agent-2"), {
      type: "child.submit",
      proof: ownSecret,
      attempt: 1,
      node_id: "tok",
      call: 1,
      graph,
    });
    t.equal(child, "GW_ERR_FORBIDDEN", "a child job of another's job is refused");
    const waits = await ask(subjects.records("agent-2"), { type: "child.wait", child_id: jobId, wait_ms: 0 });
    t.equal(waits, "GW_ERR_FORBIDDEN", "and a wait on one");
    const cancels = await ask(subjects.records("agent-2"), { type: "child.cancel", child_id: jobId });
    t.equal(cancels, "GW_ERR_FORBIDDEN", "and a cancel of one");
  });

  await t.test("threads, workflows, events and dispatches cannot be read", async (t) => {
    const akvm = new Kvm(nc);
    const thread = await outcome(akvm.open(KV_THREADS).then((kv) => kv.get(threadKeys.thread("secret-thread"))));
    t.not(thread, "ok", `a thread (${thread})`);
    const wf = await outcome(akvm.open(KV_WORKFLOWS).then((kv) => kv.get(workflowKey("slow"))));
    t.not(wf, "ok", `a workflow (${wf})`);
    const ev = await outcome(jsm.streams.getMessage("NW_EVENTS", { last_by_subj: subjects.jobEventsAny(jobId) }));
    t.not(ev, "ok", `the job's stored events (${ev})`);
    const dispatch = await outcome(jsm.streams.getMessage("NW_JOBS", { seq: 1 }));
    t.not(dispatch, "ok", `a dispatch, which holds a job's claim secret (${dispatch})`);
  });

  await t.test(
    "assets: a confined agent reads and writes its job's through the gateways; another cannot",
    async (t) => {
      const { default: sharp } = await import("sharp");
      const noise = Buffer.alloc(400 * 400 * 3);
      for (let i = 0; i < noise.length; i++) noise[i] = (i * 7919 + (i >> 5) * 31) & 0xff;
      const png = await sharp(noise, { raw: { width: 400, height: 400, channels: 3 } })
        .png()
        .toBuffer();
      const up = await fetch(`${gw.url}/api/assets?name=secret.png`, {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: new Uint8Array(png),
      });
      const uploadId = String(((await up.json()) as { id: string }).id);
      const graph = {
        nodes: [
          { id: "in", type: "nodetool.input.ImageInput", data: { name: "photo" } },
          { id: "big", type: "nodetool.image.Resize", data: { width: 500, height: 500 } },
          { id: "out", type: "nodetool.output.Output", data: { name: "image" } },
        ],
        edges: [
          { id: "e1", source: "in", sourceHandle: "output", target: "big", targetHandle: "image" },
          { id: "e2", source: "big", sourceHandle: "output", target: "out", targetHandle: "value" },
        ],
      };
      const r = await client.request("run_job", { graph, params: { photo: `asset://${uploadId}` } });
      const resized = String((r.result as { job_id: string }).job_id);
      const end = await client.waitTerminal(resized, 30_000);
      t.equal(
        end.status,
        "completed",
        `the victim agent read the upload and stored its output (${JSON.stringify(end.error ?? null)})`,
      );
      const out = client.events(resized).find((m) => m.type === "output_update")?.value as { asset_id?: string };
      const outId = String(out?.asset_id);
      const back = Buffer.from(await (await fetch(`${gw.url}/api/assets/${outId}/content`)).arrayBuffer());
      t.match(await sharp(back).metadata(), { width: 500, height: 500, format: "png" }, "the output asset is whole");
      const owner = (await api(gw.url, "GET", `/api/assets/${outId}`)).body as { job_id?: string };
      t.equal(owner.job_id, resized, "owned by its job (the gateway wrote the entry)");

      const os = await new Objm(nc).open(OBJ_ASSETS).catch(() => null);
      for (const id of [uploadId, outId]) {
        const direct = await outcome(os ? os.getBlob(id) : Promise.reject(new Error("cannot open the store")));
        t.not(direct, "ok", `reading asset ${id} from nw_assets is refused (${direct})`);
        const viaGateway = await outcome(
          nc
            .request(
              subjects.records("agent-2"),
              encodeMsgpack({ type: "asset.read", v: 1, job_id: ownId, proof: ownSecret, asset_id: id, cursor: 0 }),
              { timeout: 2_000 },
            )
            .then((m) => {
              const reply = decodeMsgpack(m.data) as { ok: boolean; code?: string };
              if (!reply.ok) throw new Error(String(reply.code));
            }),
        );
        t.equal(viaGateway, "GW_ERR_FORBIDDEN", "and through a gateway, for a job that does not use it");
      }
      const byStream = await outcome(jsm.streams.getMessage(subjects.objectStream(OBJ_ASSETS), { seq: 1 }));
      t.not(byStream, "ok", `reading the bucket's stream is refused (${byStream})`);
      const overwrite = await outcome(
        js.publish(subjects.objectMeta(OBJ_ASSETS, uploadId), JSON.stringify({ name: uploadId, nuid: "x" }), {
          timeout: 1_000,
        }),
      );
      t.not(overwrite, "ok", `replacing an asset's entry is refused (${overwrite})`);
      const still = Buffer.from(await (await fetch(`${gw.url}/api/assets/${uploadId}/content`)).arrayBuffer());
      t.ok(still.equals(png), "the upload is unchanged");
    },
  );

  await t.test("consumers cannot be deleted, created or updated; _INBOX.> cannot be read", async (t) => {
    const del = await outcome(jsm.consumers.delete("NW_JOBS", "pool_cpu"));
    t.not(del, "ok", `delete (${del})`);
    const add = await outcome(
      jsm.consumers.add("NW_JOBS", {
        durable_name: "steal",
        filter_subject: "nw.jobs.x",
        ack_policy: AckPolicy.Explicit,
      }),
    );
    t.not(add, "ok", `create (${add})`);
    const upd = await outcome(jsm.consumers.update("NW_JOBS", "pool_cpu", { max_deliver: 100 }));
    t.not(upd, "ok", `update (${upd})`);
    nc.subscribe("_INBOX.>");
    await nc.flush();
    await check(() => violations.find((v) => /Permissions Violation for Subscription to "_INBOX\.>"/.test(v)), 5_000, {
      name: "the _INBOX.> refusal",
    });
    t.pass("subscribing to every reply in the account is refused");
  });

  await t.test("the victim job completes with its own results", async (t) => {
    const end = await client.waitTerminal(jobId, 30_000);
    t.equal(end.status, "completed");
    const want = Array.from({ length: TOKENS }, (_, i) => `tok${i} `).join("");
    t.same(end.result, { text: [want] }, "with the victim's output");
    const got = client.events(jobId);
    const chunks = got.filter((m) => m.type === "chunk" && m.content !== "");
    t.equal(chunks.map((m) => m.content).join(""), want, `the client got the ${TOKENS} tokens, each once, in order`);
    t.notOk(JSON.stringify(got).includes(FORGED), "and nothing the attacker published");
    t.equal(got.filter((m) => m.type === "job_update" && m.status === "completed").length, 1, "one ending");
    const replay = await readStream(`${gw.url}/api/jobs/${jobId}/events`);
    t.notOk(JSON.stringify(replay.events).includes(FORGED), "a replay holds nothing forged");
    t.same(
      replay.events.map((m) => m.seq),
      got.map((m) => m.seq),
      "and is what the client got live",
    );
    const rec = await api(gw.url, "GET", `/api/jobs/${jobId}`);
    t.same(rec.body.outputs, { text: [want] }, "the stored record has the victim's outputs");
    const log = await readJobLog(admin, jobId);
    const dropped = log.stored.filter((s) => s.leased === false);
    t.ok(dropped.length >= 3, `the forged events were stored, and fenced off (${dropped.length})`);
    t.ok(
      log.admitted.every((s) => !JSON.stringify(s.ev).includes(FORGED)),
      "the checker's fenced history has none of them",
    );
  });

  t.ok(
    violations.some((v) => /Permissions Violation for Publish to "nw\.events\.[^"]+\.agent-1"/.test(v)),
    "NATS reported the publish on the victim's subject",
  );
  t.notOk(JSON.stringify(renderAccounts({ agents: ["x"] }).conf).includes("_INBOX.>"), "no agent user reads _INBOX.>");
});
