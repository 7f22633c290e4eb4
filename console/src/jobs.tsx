/** Jobs, newest first, filtered by status and workflow; a row opens the job (live, or replayed when done). */
import { useState } from "react";
import { rest } from "./api";
import { ago, duration, ErrorLine, Status, usePoll } from "./ui";

const STATUSES = ["", "queued", "running", "completed", "failed", "cancelled", "timed_out"];

export function JobList() {
  const [status, setStatus] = useState("");
  const [workflow, setWorkflow] = useState("");
  const [wfs] = usePoll(() => rest.workflows(), 0, []);
  const [data, error] = usePoll(() => rest.jobs({ status, workflow_id: workflow, limit: "200" }), 2_000, [
    status,
    workflow,
  ]);
  const jobs = [...(data?.jobs ?? [])].sort((a, b) => b.created_at.localeCompare(a.created_at));
  return (
    <section>
      <h2>Jobs</h2>
      <div className="filters">
        <label>
          status
          <select name="status" value={status} onChange={(e) => setStatus(e.target.value)}>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <label>
          workflow
          <select name="workflow" value={workflow} onChange={(e) => setWorkflow(e.target.value)}>
            <option value="">any</option>
            {wfs?.workflows.map((w) => (
              <option key={w.id} value={w.id}>
                {w.name}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorLine error={error} />
      <table className="jobs">
        <thead>
          <tr>
            <th>Job</th>
            <th>Workflow</th>
            <th>Status</th>
            <th>Attempt</th>
            <th>Agent</th>
            <th>Created</th>
            <th>Duration</th>
          </tr>
        </thead>
        <tbody>
          {jobs.map((j) => (
            <tr key={j.id} className="link" data-job={j.id} onClick={() => (location.hash = `#/jobs/${j.id}`)}>
              <td className="mono">
                <a href={`#/jobs/${j.id}`}>{j.id}</a>
              </td>
              <td>{j.workflow_id}</td>
              <td>
                <Status value={j.status} />
              </td>
              <td>{j.attempt}</td>
              <td className="mono">{j.agent_id ?? "—"}</td>
              <td>{ago(j.created_at)}</td>
              <td>{duration(j.started_at, j.finished_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && jobs.length === 0 && <p className="muted">No jobs match.</p>}
    </section>
  );
}
