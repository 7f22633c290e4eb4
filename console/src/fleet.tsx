/** The fleet: agents (pools, strategies, GPUs, providers, ComfyUI, running jobs, heartbeat), queue depth per pool. */
import { useState } from "react";
import { type Agent, rest } from "./api";
import { ago, ErrorLine, Status, usePoll } from "./ui";

/** Queued jobs per pool (from the newest 1,000 queued jobs). */
async function queueDepth(): Promise<[string, number][]> {
  const { jobs } = await rest.jobs({ status: "queued", limit: "1000" });
  const by = new Map<string, number>();
  for (const j of jobs) by.set(j.pool, (by.get(j.pool) ?? 0) + 1);
  return [...by.entries()].sort();
}

function DrainButton({ agent, done }: { agent: Agent; done: () => void }) {
  const [armed, setArmed] = useState(false);
  const [error, setError] = useState("");
  if (agent.state === "draining") return <span className="muted">draining</span>;
  const drain = () =>
    rest.drain(agent.id).then(
      () => (setArmed(false), done()),
      (e: Error) => setError(e.message),
    );
  return (
    <>
      {armed ? (
        <button type="button" className="danger" onClick={() => void drain()}>
          Confirm drain
        </button>
      ) : (
        <button type="button" onClick={() => setArmed(true)}>
          Drain
        </button>
      )}
      <ErrorLine error={error} />
    </>
  );
}

function AgentRow({ a, refresh }: { a: Agent; refresh: () => void }) {
  const c = a.capabilities;
  const comfy = c.comfyui ? (c.comfyui.reachable ? `up ${c.comfyui.version ?? ""}` : "unreachable") : "—";
  return (
    <tr data-agent={a.id}>
      <td>
        <b>{a.name}</b>
        <div className="mono muted">{a.id}</div>
      </td>
      <td>
        <Status value={a.state} />
      </td>
      <td>{a.pools.join(", ")}</td>
      <td>{c.strategies.join(", ")}</td>
      <td>
        {c.gpus.length ? c.gpus.map((g) => `${g.name} (${Math.round(g.memory_total_mb / 1024)} GB)`).join(", ") : "—"}
      </td>
      <td>{c.providers.join(", ") || "—"}</td>
      <td>{comfy}</td>
      <td>
        {a.running_jobs.length}/{c.max_jobs}
        {a.running_jobs.map((j) => (
          <div key={j}>
            <a className="mono" href={`#/jobs/${j}`}>
              {j}
            </a>
          </div>
        ))}
      </td>
      <td>{ago(a.heartbeat_at)}</td>
      <td>
        <DrainButton agent={a} done={refresh} />
      </td>
    </tr>
  );
}

export function Fleet() {
  const [data, error, refresh] = usePoll(() => rest.agents(), 2_000, []);
  const [depth] = usePoll(queueDepth, 2_000, []);
  return (
    <section>
      <h2>Fleet</h2>
      <ErrorLine error={error} />
      <h3>Queue depth</h3>
      <div className="pools">
        {depth?.length ? (
          depth.map(([pool, n]) => (
            <span key={pool} className="pool" data-pool={pool}>
              {pool}: <b>{n}</b>
            </span>
          ))
        ) : (
          <span className="muted">no queued jobs</span>
        )}
      </div>
      <h3>Agents</h3>
      <table className="agents">
        <thead>
          <tr>
            <th>Agent</th>
            <th>State</th>
            <th>Pools</th>
            <th>Strategies</th>
            <th>GPUs</th>
            <th>Providers</th>
            <th>ComfyUI</th>
            <th>Running</th>
            <th>Heartbeat</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {data?.agents.map((a) => (
            <AgentRow key={a.id} a={a} refresh={refresh} />
          ))}
        </tbody>
      </table>
      {data && data.agents.length === 0 && <p className="muted">No agents are connected.</p>}
    </section>
  );
}
