/**
 * A submit sends the `queued` event and the dispatch before the job record (gateway/jobs.ts `submit`: the
 * dispatch no longer waits behind the record writes). What that must not change: every job's stored history
 * starts with the gateway's `queued`, the agent's first event is `running`, no client sees `queued` after it, and
 * an agent that reads the record a moment before it is stored still claims the job rather than dropping it.
 */
import t from "tap";
import { connect } from "@nats-io/transport-node";
import { api } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { readJobLog } from "../helpers/history.js";
import { startStack } from "../helpers/stack.js";

t.test(
  "submit order - concurrent submits: each history starts queued (attempt 0) then running (attempt 1), and every job completes",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    await api(s.url, "PUT", "/api/workflows/hello", {
      graph: {
        nodes: [{ id: "out", type: "nodetool.output.Output", data: { name: "greeting", value: "hi" } }],
        edges: [],
      },
    });
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());

    const JOBS = 40;
    const submitted = await Promise.all(
      Array.from({ length: JOBS }, () => api(s.url, "POST", "/api/workflows/hello/run", { params: {} })),
    );
    const ids = submitted.map((r) => String(r.body.job_id));
    t.equal(new Set(ids).size, JOBS, "every submit made its own job");

    await check(
      async () => {
        for (const id of ids)
          if ((await api(s.url, "GET", `/api/jobs/${id}`)).body.status !== "completed") return false;
        return true;
      },
      30_000,
      { name: "every job completed" },
    );

    const bad: string[] = [];
    for (const id of ids) {
      const log = await readJobLog(nc, id);
      const kind = (e: { type: string; status?: string; attempt: number }) =>
        `${e.type}:${e.status ?? ""}:${e.attempt}`;
      if (kind(log.stored[0]!) !== "job_update:queued:0") bad.push(`${id}: starts ${kind(log.stored[0]!)}`);
      const firstRun = log.stored.find((e) => e.attempt > 0);
      if (!firstRun || kind(firstRun) !== "job_update:running:1")
        bad.push(`${id}: the agent's first event is ${firstRun ? kind(firstRun) : "missing"}`);
      // A queue-position update may be stored after `running` (the queue announces positions as other jobs leave
      // it); the fence drops those, and nothing else may be dropped.
      const dropped = log.fenced.filter((e) => kind(e) !== "job_update:queued:0");
      if (dropped.length > 0) bad.push(`${id}: fenced ${dropped.map(kind).join(", ")}`);
      if (log.admitted.some((e, i) => e.status === "queued" && log.admitted.slice(0, i).some((p) => p.attempt > 0)))
        bad.push(`${id}: a client would see queued after running`);
      if (log.terminal?.status !== "completed") bad.push(`${id}: ends ${log.terminal?.status}`);
    }
    t.same(
      bad,
      [],
      `all ${JOBS} histories start queued then running, only stale queue positions fenced, all completed`,
    );
  },
);
