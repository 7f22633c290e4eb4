/**
 * One job, live: its graph with node states, progress bars, streamed text, previews and outputs, logs; Cancel.
 * Events are folded as they come and drawn once per animation frame; a reload resumes after the saved seq.
 */
import { memo, Suspense, useEffect, useRef, useState } from "react";
import { type JobRecord, live, rest, type Workflow } from "./api";
import { dropSnapshot, fold, loadSnapshot, newRun, type RunState, saveSnapshot, TERMINAL } from "./run-state";
import { ErrorLine, Status, usePoll, Value } from "./ui";
import { Graph } from "./workflows";

const SAVE_EVERY_MS = 500;

/** The run of `jobId` as folded so far, and a counter that changes at most once per frame when it does. */
function useLiveRun(jobId: string, epoch: number): [RunState, number] {
  const ref = useRef<RunState>(newRun(jobId));
  const [frame, setFrame] = useState(0);
  useEffect(() => {
    const snap = epoch === 0 ? loadSnapshot(jobId) : null;
    const s = snap ?? newRun(jobId);
    ref.current = s;
    let raf = 0;
    let savedAtMs = 0;
    const draw = () => {
      raf = 0;
      setFrame((f) => f + 1);
      if (performance.now() - savedAtMs > SAVE_EVERY_MS) {
        savedAtMs = performance.now();
        saveSnapshot(s);
      }
    };
    const stop = live.watch(jobId, s.lastSeq, function onEvent(m) {
      if (m.type === "job_resumed" && s.lastSeq > 0) s.resumes++;
      fold(s, m);
      if (raf === 0) raf = requestAnimationFrame(draw);
    });
    const onHide = () => saveSnapshot(s);
    addEventListener("pagehide", onHide);
    setFrame((f) => f + 1);
    return () => {
      stop();
      cancelAnimationFrame(raf);
      removeEventListener("pagehide", onHide);
      saveSnapshot(s);
    };
  }, [jobId, epoch]);
  return [ref.current, frame];
}

function useConnState(): string {
  const [state, setState] = useState(live.state);
  useEffect(() => live.onState(setState), []);
  return state;
}

function Progress({ run }: { run: RunState }) {
  const bars = Object.entries(run.nodes).filter(([, n]) => (n.total ?? 0) > 0);
  if (bars.length === 0) return null;
  return (
    <div className="progress">
      {bars.map(([id, n]) => (
        <div key={id} className="prow" data-node={id}>
          <span className="mono">{id}</span>
          <div className="bar">
            <i style={{ width: `${Math.min(100, (100 * (n.progress ?? 0)) / n.total!)}%` }} />
          </div>
          <span>
            {n.progress}/{n.total}
          </span>
        </div>
      ))}
    </div>
  );
}

/** Says how much of a run the page let go of (it keeps the newest: see run-state's limits). */
function Dropped({ count, what }: { count: number; what: string }) {
  if (count === 0) return null;
  return (
    <p className="muted" data-testid="dropped">
      {count.toLocaleString("en")} {what} not shown
    </p>
  );
}

function Streams({ run }: { run: RunState }) {
  const entries = Object.entries(run.text);
  if (entries.length === 0) return null;
  return (
    <div>
      <h3>Streaming</h3>
      {entries.map(([id, text]) => (
        <div key={id}>
          <Dropped count={run.textDropped[id] ?? 0} what="earlier characters" />
          <pre className="stream" data-node={id} data-testid="stream">
            {text}
          </pre>
        </div>
      ))}
    </div>
  );
}

function Outputs({ run }: { run: RunState }) {
  const previews = Object.entries(run.previews);
  if (run.outputs.length === 0 && previews.length === 0) return null;
  return (
    <div className="outputs">
      <h3>Outputs</h3>
      <Dropped count={run.outputsDropped} what="earlier outputs" />
      {previews.map(([id, v]) => (
        <div key={`p-${id}`} className="output">
          <small>preview · {id}</small>
          <Value value={v} />
        </div>
      ))}
      {run.outputs.map((o, i) => (
        <div key={run.outputsDropped + i} className="output" data-output={o.name}>
          <small>
            {o.name} · {o.type}
          </small>
          <Value value={o.value} />
        </div>
      ))}
    </div>
  );
}

function Logs({ run }: { run: RunState }) {
  const dropped = run.logsDropped > 0 ? `, ${run.logsDropped} earlier not shown` : "";
  return (
    <details open={run.logs.some((l) => l.severity === "error")}>
      <summary>
        Logs ({run.logs.length}
        {dropped})
      </summary>
      <div className="logs">
        {/* Keyed by line number: a new line draws one row, not every row again. */}
        {run.logs.map((l, i) => (
          <LogRow key={run.logsDropped + i} line={l} />
        ))}
      </div>
    </details>
  );
}

/** One log line; lines never change once written, so a row is drawn once. */
const LogRow = memo(function LogRow({ line }: { line: RunState["logs"][number] }) {
  return (
    <div className={`log l-${line.severity}`}>
      <span className="mono">{line.node}</span> {line.text}
    </div>
  );
});

function Header({ run, rec, onReplay }: { run: RunState; rec: JobRecord | null; onReplay: () => void }) {
  const conn = useConnState();
  const [error, setError] = useState("");
  const status = run.status || rec?.status || "";
  const cancel = () => live.cancel(run.jobId).catch((e: Error) => setError(e.message));
  return (
    <div className="run-head">
      <h2>
        Job <span className="mono">{run.jobId}</span> <Status value={status} />
      </h2>
      <div className="facts">
        <span>
          workflow{" "}
          <a href={`#/workflows/${rec?.workflow_id ?? run.workflowId}`}>{rec?.workflow_id ?? run.workflowId}</a>
        </span>
        <span>attempt {run.attempt || rec?.attempt || 0}</span>
        <span>agent {run.agentId || rec?.agent_id || "—"}</span>
        <span data-testid="seq">seq {run.lastSeq}</span>
        <span data-testid="resumes">resumed {run.resumes}×</span>
        <span className={`conn c-${conn}`}>{conn}</span>
        {!TERMINAL.has(status) && (
          <button type="button" onClick={() => void cancel()}>
            Cancel
          </button>
        )}
        <button type="button" onClick={onReplay}>
          Replay
        </button>
      </div>
      <ErrorLine error={error || run.error} />
      {run.replayIncomplete && <p className="muted">Older events are past retention: the replay starts later.</p>}
    </div>
  );
}

export function RunView({ jobId }: { jobId: string }) {
  const [epoch, setEpoch] = useState(0);
  const [run, frame] = useLiveRun(jobId, epoch);
  const [rec] = usePoll(() => rest.job(jobId), 0, [jobId, TERMINAL.has(run.status)]);
  const wfId = rec?.workflow_id ?? "";
  const [wf] = usePoll<Workflow | null>(() => (wfId ? rest.workflow(wfId) : Promise.resolve(null)), 0, [wfId]);
  const replay = () => {
    dropSnapshot(jobId);
    setEpoch((e) => e + 1);
  };
  return (
    <section className="run" data-status={run.status}>
      <Header run={run} rec={rec} onReplay={replay} />
      {wf && (
        <Suspense fallback={<div className="graph" />}>
          <Graph nodes={wf.graph.nodes} edges={wf.graph.edges} runs={run.nodes} version={frame} />
        </Suspense>
      )}
      <Progress run={run} />
      <Streams run={run} />
      <Outputs run={run} />
      <Logs run={run} />
    </section>
  );
}
