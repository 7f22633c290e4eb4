/**
 * A run as the live view shows it, folded from its events. Folding mutates in place (1,000 tokens/s must not
 * copy the text per token); the view re-renders once per animation frame. A snapshot in sessionStorage lets a
 * reload resume from the last event seen instead of replaying the whole job.
 */
import type { WsMessage } from "./api";

export interface NodeRun {
  status: string;
  progress?: number;
  total?: number;
  error?: string;
}
export interface OutputItem {
  nodeId: string;
  name: string;
  type: string;
  value: unknown;
}
export interface LogLine {
  severity: string;
  node: string;
  text: string;
}

export interface RunState {
  jobId: string;
  workflowId: string;
  status: string;
  attempt: number;
  agentId: string;
  lastSeq: number;
  nodes: Record<string, NodeRun>;
  /** Streamed text per node ("" for chunks without one). */
  text: Record<string, string>;
  previews: Record<string, unknown>;
  /** The newest outputs (at most `OUTPUT_MAX` and a quarter); `outputsDropped` counts the older ones let go. */
  outputs: OutputItem[];
  outputsDropped: number;
  /** Characters cut from the start of each node's streamed text (only its last `TEXT_MAX` are kept). */
  textDropped: Record<string, number>;
  /** The newest log lines (at most `LOG_MAX` and a quarter); `logsDropped` counts the older ones let go. */
  logs: LogLine[];
  logsDropped: number;
  error: string;
  /** How many times the stream was resumed (reconnects and reloads). */
  resumes: number;
  replayIncomplete: boolean;
}

export const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);
const LOG_MAX = 2_000;
/**
 * What a page keeps of one run, whatever the job sends: a job may stream 100,000 outputs or tens of MB of text,
 * and a page that kept them all would redraw them every frame and freeze. Text is cut back to its last `TEXT_MAX`
 * characters once it passes it by a quarter, so each cut's copy is paid for by a quarter of new text.
 */
export const OUTPUT_MAX = 200;
export const TEXT_MAX = 1 << 20;

export function newRun(jobId: string): RunState {
  return {
    jobId,
    workflowId: "",
    status: "",
    attempt: 0,
    agentId: "",
    lastSeq: 0,
    nodes: {},
    text: {},
    previews: {},
    outputs: [],
    outputsDropped: 0,
    textDropped: {},
    logs: [],
    logsDropped: 0,
    error: "",
    resumes: 0,
    replayIncomplete: false,
  };
}

const str = (v: unknown): string =>
  typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v);

/** A log line's most characters: 2,000 lines of a MiB each would hold 4 GB of the page. */
export const LOG_LINE_MAX = 4_096;

function log(s: RunState, severity: string, node: string, text: string): void {
  const line = text.length > LOG_LINE_MAX ? `${text.slice(0, LOG_LINE_MAX)}… (${text.length} characters)` : text;
  s.logs.push({ severity, node: node.slice(0, 256), text: line });
  // Cut back once a quarter over: a cut moves the array, paid for by a quarter of new lines, not one per line.
  if (s.logs.length > LOG_MAX * 1.25) {
    const cut = s.logs.length - LOG_MAX;
    s.logs.splice(0, cut);
    s.logsDropped += cut;
  }
}

function jobUpdate(s: RunState, m: WsMessage): void {
  s.status = str(m.status);
  if (typeof m.attempt === "number") s.attempt = m.attempt;
  if (m.agent_id) s.agentId = str(m.agent_id);
  if (m.workflow_id) s.workflowId = str(m.workflow_id);
  const err = m.error as { message?: string } | string | null | undefined;
  if (err) s.error = typeof err === "string" ? err : str(err.message);
  if (m.message) log(s, err ? "error" : "info", "job", `${s.status}: ${str(m.message)}`);
  else log(s, "info", "job", s.status);
}

function nodeUpdate(s: RunState, m: WsMessage): void {
  const id = str(m.node_id);
  const n = s.nodes[id] ?? { status: "" };
  n.status = str(m.status);
  if (m.error) {
    n.error = str(m.error);
    log(s, "error", str(m.node_name) || id, n.error);
  }
  s.nodes[id] = n;
}

/**
 * `text + more`, cut back to its last `TEXT_MAX` characters once past it by a quarter (never half a surrogate
 * pair), and how many characters the cut let go.
 */
export function appendTail(text: string, more: string): [string, number] {
  const all = text + more;
  if (all.length <= TEXT_MAX + TEXT_MAX / 4) return [all, 0];
  let cut = all.length - TEXT_MAX;
  const c = all.charCodeAt(cut);
  if (c >= 0xdc00 && c <= 0xdfff) cut++;
  return [all.slice(cut), cut];
}

function appendText(s: RunState, id: string, more: string): void {
  const [text, cut] = appendTail(s.text[id] ?? "", more);
  s.text[id] = text;
  if (cut > 0) s.textDropped[id] = (s.textDropped[id] ?? 0) + cut;
}

function chunk(s: RunState, m: WsMessage): void {
  const id = str(m.node_id);
  if (m.content_type === "text" || m.content_type === undefined) {
    if (typeof m.content === "string" && m.content !== "") appendText(s, id, m.content);
  } else s.previews[id] = { type: m.content_type, uri: m.content };
}

function output(s: RunState, m: WsMessage): void {
  s.outputs.push({ nodeId: str(m.node_id), name: str(m.node_name), type: str(m.output_type), value: m.value });
  if (s.outputs.length > OUTPUT_MAX + OUTPUT_MAX / 4) {
    const cut = s.outputs.length - OUTPUT_MAX;
    s.outputs.splice(0, cut);
    s.outputsDropped += cut;
  }
}

/** Folds one event into the run; the caller has dropped events at or below `lastSeq`. */
export function fold(s: RunState, m: WsMessage): void {
  if (typeof m.seq === "number") s.lastSeq = m.seq;
  switch (m.type) {
    case "job_update":
      return jobUpdate(s, m);
    case "node_update":
      return nodeUpdate(s, m);
    case "node_progress": {
      const n = s.nodes[str(m.node_id)] ?? { status: "running" };
      n.progress = Number(m.progress);
      n.total = Number(m.total);
      s.nodes[str(m.node_id)] = n;
      if (typeof m.chunk === "string" && m.chunk) appendText(s, str(m.node_id), m.chunk);
      return;
    }
    case "chunk":
      return chunk(s, m);
    case "output_update":
      return output(s, m);
    case "preview_update":
      s.previews[str(m.node_id)] = m.value;
      return;
    case "log_update":
    case "notification":
      return log(s, str(m.severity), str(m.node_name) || str(m.node_id), str(m.content));
    case "error":
      s.error = str(m.message);
      return log(s, "error", "job", s.error);
    case "job_resumed":
      // A replay's own job_updates say how the job went; the header's status stands only when none follow.
      if (s.status === "" && (m.replay_count === 0 || m.replay_incomplete)) s.status = str(m.status);
      if (m.replay_incomplete) s.replayIncomplete = true;
      return;
    default:
      return;
  }
}

const snapKey = (jobId: string) => `nodeway.run.${jobId}`;

/** The run saved by this tab, if any (a reload resumes after its `lastSeq`). */
export function loadSnapshot(jobId: string): RunState | null {
  try {
    const raw = sessionStorage.getItem(snapKey(jobId));
    // Fields a snapshot of an older console lacks take their defaults.
    return raw ? { ...newRun(jobId), ...(JSON.parse(raw) as Partial<RunState>) } : null;
  } catch {
    return null;
  }
}

/** Saves the run for a reload; one too large for sessionStorage is dropped (a reload then replays it). */
export function saveSnapshot(s: RunState): void {
  try {
    sessionStorage.setItem(snapKey(s.jobId), JSON.stringify(s));
  } catch {
    sessionStorage.removeItem(snapKey(s.jobId));
  }
}

export function dropSnapshot(jobId: string): void {
  sessionStorage.removeItem(snapKey(jobId));
}
