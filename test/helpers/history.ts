/**
 * The history checker: what each test client received, compared with what NATS stored and with what the job's
 * node emitted.
 *
 * Every test client records, per job, each event it received (seq, type, attempt, status, text content), in the
 * order it received them, across all of its connections (a resume continues the same log). The checker reads each
 * job's events from `NW_EVENTS` (subjects `nw.events.<job_id>.*`), keeps the gateway's own and the agents' that carry
 * a lease token for their attempt (as the gateway does), applies the gateway's attempt fence (`Fence`), and
 * compares: a client that followed a job from `after` to its end must have received exactly the admitted events
 * with `seq > after`, each once, in stream order, each as stored. A client marked partial (it stopped listening on
 * purpose) must have received a prefix of that list.
 *
 * NATS only says what was stored, so a job declared with `History.tokens` is also checked against its source: a
 * `nodeway.test.Tokens` node emits "tok0 ", "tok1 ", … (a function of its inputs), so every attempt's chunks a client
 * received must run on from tok0 without a hole, and the attempt that completed the job must have delivered all
 * of them and spelled the job's result. A token lost before it reached NATS fails here.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, DeliverPolicy } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { KV_JOBS, STREAM_EVENTS, asJobEvent, decodeMsgpack, isTerminalEvent, subjects } from "../../protocol/index.js";
import { GATEWAY_SOURCE, LEASE_HEADER, sourceOfEventSubject } from "../../protocol/subjects.js";
import { loadLeaseSigner } from "../../nats/index.js";
import type { JobEvent } from "../../protocol/index.js";
import { Fence } from "../../gateway/fence.js";

const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);

/** One delivered event, as much of it as the checker compares. */
export interface Received {
  seq: number;
  type: string;
  /** null: the frame carried no attempt (a malformed delivery; the stored event always has one). */
  attempt: number | null;
  status?: string;
  /** Text content (chunks, logs, notifications). */
  content?: string;
}

export interface StoredEvent {
  seq: number;
  type: string;
  attempt: number;
  status?: string;
  ev: JobEvent;
  /** False for an agent's event without a lease token for its attempt (the gateway drops it, as does the fence). */
  leased?: boolean;
}

export interface JobLog {
  /** Every stored event of the job, in stream order. */
  stored: StoredEvent[];
  /** Those the fence admits: what every client must see. */
  admitted: StoredEvent[];
  /** Those the fence drops (older attempts, anything after the terminal event). */
  fenced: StoredEvent[];
  /** The admitted terminal job_update, if the job ended. */
  terminal: StoredEvent | null;
}

interface Follow {
  /** The client follows events with `seq > after` (0: from the job's start). */
  after: number;
  /** false: the client stopped listening before the end on purpose; its log must be a prefix. */
  complete: boolean;
  got: Received[];
  /** The terminal job_update was received. */
  ended: boolean;
}

/** One client's view: its logs per job. */
export class ClientLog {
  readonly jobs = new Map<string, Follow>();
  constructor(readonly name: string) {}

  private entry(jobId: string): Follow {
    let f = this.jobs.get(jobId);
    if (!f) this.jobs.set(jobId, (f = { after: 0, complete: true, got: [], ended: false }));
    return f;
  }

  /** Declares where the client started following `jobId` (a first `reconnect_job` with last_seq > 0). */
  from(jobId: string, after: number): this {
    this.entry(jobId).after = after;
    return this;
  }

  /** The client stopped listening to `jobId` on purpose: its log needs only be a prefix. */
  partial(jobId: string): this {
    this.entry(jobId).complete = false;
    return this;
  }

  /** Records a delivered message; ignores anything without a job id and a numeric seq (headers, rpc replies). */
  record(m: {
    job_id?: unknown;
    seq?: unknown;
    type?: unknown;
    status?: unknown;
    attempt?: unknown;
    content?: unknown;
  }): void {
    if (typeof m.job_id !== "string" || typeof m.seq !== "number") return;
    const f = this.entry(m.job_id);
    f.got.push(received(m.seq, m));
    if (m.type === "job_update" && TERMINAL.has(String(m.status))) f.ended = true;
  }

  /** The client has received the job's terminal job_update. */
  ended(jobId: string): boolean {
    return this.jobs.get(jobId)?.ended ?? false;
  }

  /** Highest seq received for the job (what a client sends as `last_seq`). */
  lastSeq(jobId: string): number {
    const got = this.jobs.get(jobId)?.got ?? [];
    let max = this.jobs.get(jobId)?.after ?? 0;
    for (const r of got) if (r.seq > max) max = r.seq;
    return max;
  }

  count(jobId: string): number {
    return this.jobs.get(jobId)?.got.length ?? 0;
  }
}

/** The fields of an event the checker compares, from a delivered frame or a stored event. */
function received(
  seq: number,
  m: { type?: unknown; status?: unknown; attempt?: unknown; content?: unknown },
): Received {
  return {
    seq,
    type: String(m.type),
    attempt: typeof m.attempt === "number" ? m.attempt : null,
    ...(m.type === "job_update" ? { status: String(m.status) } : {}),
    ...(typeof m.content === "string" ? { content: m.content } : {}),
  };
}

export interface Problem {
  client: string;
  job: string;
  /**
   * Against the stream: missing … wrong_content (seq: the event's). Against the source (seq: the client's first
   * event of the attempt): `token_gap` (a chunk that is not the next token the node emitted), `tokens_missing`
   * (the completing attempt's tokens did not all arrive; `lost` says how many), `wrong_result`.
   */
  kind:
    | "missing"
    | "duplicated"
    | "out_of_order"
    | "unexpected"
    | "wrong_type"
    | "wrong_content"
    | "token_gap"
    | "tokens_missing"
    | "wrong_result";
  seq: number;
  detail?: string;
  /** Events this problem stands for that the client should have had (missing: 1). */
  lost?: number;
}

/** A job whose graph is one `nodeway.test.Tokens` node of `count` tokens into the Output named `output`. */
export interface TokensSource {
  count: number;
  output: string;
}

export interface HistoryReport {
  jobs: number;
  clients: number;
  /** Received events compared against the stream. */
  eventsChecked: number;
  /** Events some client should have had and did not: admitted ones it missed, tokens the node emitted. */
  lost: number;
  /** Stored events the fence drops (late or old-attempt events that must not reach clients). */
  fencedOff: number;
  problems: Problem[];
  ok: boolean;
}

/** All clients of a test; `check()` compares every log with the stream. */
export class History {
  readonly clients: ClientLog[] = [];
  /** By workflow id (every event names it). */
  readonly sources = new Map<string, TokensSource>();
  /**
   * Declares that `workflowId` is a Tokens workflow of `count` tokens: the clients of its jobs are also checked
   * against the tokens the node emits.
   */
  tokens(workflowId: string, count: number, output = "text"): this {
    this.sources.set(workflowId, { count, output });
    return this;
  }
  client(name: string): ClientLog {
    const c = new ClientLog(name);
    this.clients.push(c);
    return c;
  }
  jobIds(): string[] {
    const s = new Set<string>();
    for (const c of this.clients) for (const j of c.jobs.keys()) s.add(j);
    return [...s];
  }
  async check(natsUrl: string): Promise<HistoryReport> {
    return checkHistory(natsUrl, this);
  }
}

/** Reads a job's stored events from NW_EVENTS in order and applies the gateway's fence. */
export async function readJobLog(nc: NatsConnection, jobId: string): Promise<JobLog> {
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const subject = subjects.jobEventsAny(jobId);
  const leases = await loadLeaseSigner(await new Kvm(nc).open(KV_JOBS));
  const last = await jsm.streams.getMessage(STREAM_EVENTS, { last_by_subj: subject }).catch(() => null);
  const stored: StoredEvent[] = [];
  if (last) {
    const consumer = await js.consumers.get(STREAM_EVENTS, {
      filter_subjects: subject,
      deliver_policy: DeliverPolicy.All,
    });
    try {
      let done = false;
      while (!done) {
        const batch = await consumer.fetch({ max_messages: 1_000, expires: 2_000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          const ev = asJobEvent(decodeMsgpack(m.data));
          const source = sourceOfEventSubject(m.subject);
          const leased =
            source === GATEWAY_SOURCE || leases.verify(jobId, ev.attempt, source, m.headers?.get(LEASE_HEADER));
          stored.push({
            seq: m.seq,
            type: ev.type,
            attempt: ev.attempt,
            ...(ev.type === "job_update" ? { status: ev.status } : {}),
            ev,
            leased,
          });
          if (m.seq >= last.seq) {
            done = true;
            break;
          }
        }
        if (got === 0) break;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
  }
  const fence = new Fence();
  const admitted: StoredEvent[] = [];
  const fenced: StoredEvent[] = [];
  let terminal: StoredEvent | null = null;
  for (const s of stored) {
    if (s.leased !== false && fence.admit(s.ev)) {
      admitted.push(s);
      if (isTerminalEvent(s.ev)) terminal = s;
    } else fenced.push(s);
  }
  return { stored, admitted, fenced, terminal };
}

/** Compares one client's log of one job with the job's admitted events. */
export function compareLog(client: string, job: string, f: Follow, log: JobLog): Problem[] {
  const problems: Problem[] = [];
  const expected = log.admitted.filter((e) => e.seq > f.after);
  const bySeq = new Map(log.admitted.map((e) => [e.seq, e]));
  const seen = new Set<number>();
  let prev = f.after;
  for (const r of f.got) {
    if (seen.has(r.seq)) {
      problems.push({ client, job, kind: "duplicated", seq: r.seq, detail: r.type });
      continue;
    }
    seen.add(r.seq);
    if (r.seq <= prev) problems.push({ client, job, kind: "out_of_order", seq: r.seq, detail: `after ${prev}` });
    prev = Math.max(prev, r.seq);
    const want = bySeq.get(r.seq);
    if (!want) {
      const raw = log.stored.find((s) => s.seq === r.seq);
      problems.push({
        client,
        job,
        kind: "unexpected",
        seq: r.seq,
        detail: raw ? `fenced-off ${raw.type} of attempt ${raw.attempt}` : "not in the stream",
      });
    } else if (want.type !== r.type)
      problems.push({ client, job, kind: "wrong_type", seq: r.seq, detail: `${r.type}, stored ${want.type}` });
    else {
      const diff = differs(r, received(want.seq, want.ev));
      if (diff) problems.push({ client, job, kind: "wrong_content", seq: r.seq, detail: diff });
    }
  }
  // Missing: expected events not received. A partial log only owes the events up to the last one it got.
  const upTo = f.complete ? Infinity : Math.max(f.after, ...f.got.map((r) => r.seq));
  for (const e of expected) {
    if (e.seq <= upTo && !seen.has(e.seq))
      problems.push({ client, job, kind: "missing", seq: e.seq, detail: e.type, lost: 1 });
  }
  return problems;
}

/** How a delivered event differs from the stored one at its seq (attempt, status, text content), or null. */
function differs(got: Received, want: Received): string | null {
  if (got.attempt !== want.attempt) return `attempt ${got.attempt}, stored ${want.attempt}`;
  if (got.status !== want.status) return `status ${got.status}, stored ${want.status}`;
  if (want.content !== undefined && got.content !== want.content) {
    return `content ${JSON.stringify(got.content)}, stored ${JSON.stringify(want.content)}`;
  }
  return null;
}

const token = (i: number) => `tok${i} `;

/**
 * Compares one client's chunks of a Tokens job with what the node emitted: per attempt, the tokens received run on
 * without a hole (from tok0, or from where `after` left off); the completing attempt delivered all `count` of them
 * and they spell the job's result.
 */
export function compareSource(client: string, job: string, f: Follow, log: JobLog, src: TokensSource): Problem[] {
  const problems: Problem[] = [];
  const isToken = (r: Received) => r.type === "chunk" && r.content !== undefined && r.content !== "";
  const byAttempt = new Map<number, Received[]>();
  for (const r of f.got) {
    if (!isToken(r) || r.attempt === null) continue;
    byAttempt.set(r.attempt, [...(byAttempt.get(r.attempt) ?? []), r]);
  }
  // A client that started after a seq owes the tokens from there: skip the ones stored at or before it.
  const skipped = (attempt: number) =>
    log.admitted.filter((e) => e.seq <= f.after && e.attempt === attempt && isToken(received(e.seq, e.ev))).length;
  for (const [attempt, rs] of byAttempt) {
    const from = skipped(attempt);
    const k = rs.findIndex((r, i) => r.content !== token(from + i));
    if (k >= 0) {
      const detail = `attempt ${attempt}: got ${JSON.stringify(rs[k]!.content)} where the node emitted ${JSON.stringify(token(from + k))}`;
      problems.push({ client, job, kind: "token_gap", seq: rs[k]!.seq, detail });
    }
  }
  const end = log.terminal;
  if (!f.ended || end === null || end.status !== "completed") return problems;
  const got = skipped(end.attempt) + (byAttempt.get(end.attempt)?.length ?? 0);
  if (got < src.count) {
    const detail = `attempt ${end.attempt}: ${got} of the ${src.count} tokens the node emitted`;
    problems.push({ client, job, kind: "tokens_missing", seq: end.seq, detail, lost: src.count - got });
  }
  const want = Array.from({ length: src.count }, (_, i) => token(i)).join("");
  const result = end.ev.type === "job_update" ? end.ev.result?.[src.output]?.[0] : undefined;
  if (result !== want) {
    const detail = `result ${JSON.stringify(String(result).slice(0, 40))}…, not the ${src.count} tokens`;
    problems.push({ client, job, kind: "wrong_result", seq: end.seq, detail });
  }
  return problems;
}

export async function checkHistory(natsUrl: string, h: History): Promise<HistoryReport> {
  const nc = await connect({ servers: natsUrl, name: "history-checker" });
  try {
    const logs = new Map<string, JobLog>();
    for (const j of h.jobIds()) logs.set(j, await readJobLog(nc, j));
    const problems: Problem[] = [];
    let eventsChecked = 0;
    for (const c of h.clients) {
      for (const [job, f] of c.jobs) {
        eventsChecked += f.got.length;
        problems.push(...compareLog(c.name, job, f, logs.get(job)!));
        const src = h.sources.get(logs.get(job)!.stored[0]?.ev.workflow_id ?? "");
        if (src) problems.push(...compareSource(c.name, job, f, logs.get(job)!, src));
      }
    }
    let fencedOff = 0;
    for (const l of logs.values()) fencedOff += l.fenced.length;
    return {
      jobs: logs.size,
      clients: h.clients.length,
      eventsChecked,
      lost: problems.reduce((n, p) => n + (p.lost ?? 0), 0),
      fencedOff,
      problems,
      ok: problems.length === 0,
    };
  } finally {
    await nc.close();
  }
}

/** A short human summary of the first problems, for assertion messages. */
export function describeProblems(problems: Problem[], max = 10): string {
  const head = problems
    .slice(0, max)
    .map((p) => `${p.client} ${p.job} ${p.kind} seq ${p.seq}${p.detail ? ` (${p.detail})` : ""}`);
  return head.join("; ") + (problems.length > max ? `; … ${problems.length - max} more` : "");
}
