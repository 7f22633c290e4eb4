/**
 * Issue 4: WebSocket and SSE streaming through the TLS proxy to two gateways; one gateway killed mid-stream →
 * the clients resume through the proxy (now on the other gateway) with no lost events.
 */
import t from "tap";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileProxyConfig, startProxy } from "../../proxy/index.js";
import { WsClient } from "../helpers/clients.js";
import { History } from "../helpers/history.js";
import {
  assertHistory,
  check,
  putWorkflow,
  readEvents,
  startAgent,
  startGateway,
  startNats,
  summary,
  stats,
  tokensWorkflow,
  waitJob,
} from "./lib.js";

const TLS = { rejectUnauthorized: false };

t.test(
  "proxy failover - WS and SSE clients resume through the proxy on the other gateway when one dies mid-stream",
  async (t) => {
    const ns = await startNats(t);
    const g1 = await startGateway(t, ns.url);
    const g2 = await startGateway(t, ns.url);
    await startAgent(t, ns.url, ["--max-jobs", "8"]);
    const certDir = mkdtempSync(join(tmpdir(), "nw-certs-"));
    t.teardown(() => rmSync(certDir, { recursive: true, force: true }));
    const proxy = await startProxy(
      compileProxyConfig({
        tls: "self-signed",
        host: "127.0.0.1",
        httpsPort: 0,
        httpPort: 0,
        upstream: [g1.url, g2.url],
        certDir,
        healthIntervalMs: 200,
        accessLog: false,
      }),
      { onEvent: () => undefined },
    );
    t.teardown(() => proxy.stop());
    const front = `https://127.0.0.1:${proxy.httpsPort}`;
    await putWorkflow(g1.url, "tok", tokensWorkflow(400, 400));
    // Node's fetch has no per-call TLS option: trust the self-signed proxy for this process's fetches.
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
    t.teardown(() => delete process.env.NODE_TLS_REJECT_UNAUTHORIZED);

    const h = new History().tokens("tok", 400);
    // Six WS clients: round-robin puts about half of them on each gateway.
    const clients = await Promise.all(
      Array.from({ length: 6 }, () => WsClient.open(front, "json", { wsOptions: TLS })),
    );
    const logs = clients.map((_, i) => h.client(`ws${i}`));
    const jobs: string[] = [];
    for (const c of clients) {
      const r = await c.request("run_job", { workflow_id: "tok", params: {} });
      jobs.push(String((r.result as { job_id: string }).job_id));
    }
    // One SSE follower of job 0 through the proxy.
    const sseLog = h.client("sse");
    const sseFirst = readEvents(`${front}/api/jobs/${jobs[0]}/events?after=0`, {
      sse: true,
      log: sseLog,
      allowDrop: true,
      timeoutMs: 60_000,
    });

    await check(() => clients.every((c, i) => c.events(jobs[i]!).length >= 40), 20_000, { name: "streams under way" });
    await g1.kill("SIGKILL");
    stats.faults++;

    // Clients whose socket died reconnect through the proxy (which now only has g2) and resume from their last seq.
    let resumed = 0;
    for (const [i, c] of clients.entries()) {
      const jobId = jobs[i]!;
      const closed = await check(
        () =>
          c.closeCode !== null
            ? "closed"
            : c.events(jobId).some((e) => e.type === "job_update" && ["completed", "failed"].includes(String(e.status)))
              ? "done"
              : null,
        30_000,
        { name: `ws${i} closed or done` },
      );
      for (const m of c.messages) logs[i]!.record(m);
      if (closed === "closed") {
        resumed++;
        // A real client retries with backoff: each try resumes from the last seq it has.
        for (let attempt = 1; !logs[i]!.ended(jobId); attempt++) {
          const lastSeq = logs[i]!.lastSeq(jobId);
          const again = await check(
            async () => {
              try {
                return await WsClient.open(front, "json", { wsOptions: TLS });
              } catch {
                return null;
              }
            },
            20_000,
            { name: "reconnect through the proxy" },
          );
          again.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: lastSeq } });
          try {
            await again.waitTerminal(jobId, 20_000);
          } catch (err) {
            if (attempt >= 3) throw err;
          }
          for (const m of again.messages) logs[i]!.record(m);
          await again.close();
        }
      }
    }
    t.ok(resumed >= 1, `at least one WS client was on the killed gateway and resumed (${resumed})`);

    const first = await sseFirst;
    if (!first.ended) {
      // Dropped with the gateway: resume with Last-Event-ID, as EventSource does.
      const last = sseLog.lastSeq(jobs[0]!);
      const again = await readEvents(`${front}/api/jobs/${jobs[0]}/events`, {
        sse: true,
        log: sseLog,
        headers: { "last-event-id": String(last) },
        timeoutMs: 60_000,
      });
      t.ok(again.ended, "the resumed SSE stream ran to the terminal event");
    } else {
      // Round-robin put it on the gateway that lived: its history is still checked below, its resume was not run.
      t.comment("SSE resume not exercised: the SSE follower was on the surviving gateway and its stream ended there");
    }
    for (const id of jobs) await waitJob(front, id, (j) => j.status === "completed", 60_000);
    stats.jobs += jobs.length;
    await assertHistory(t, h, ns.url, "through the proxy across a gateway death");
    for (const c of clients) await c.close();
    summary(t);
  },
);
