/**
 * How a job's events are shown: per-node progress bars redrawn in place on a terminal, plain lines when stderr is
 * piped, one JSON line per event with `--json`. Streamed text goes to stdout in every mode but `--json`.
 */
import type { JobEvent } from "../../client/index.js";

export interface Display {
  event(ev: JobEvent): void;
  /** A line about the run itself (reconnecting, cancelling). */
  note(line: string): void;
  /** A question shown until it is answered (null clears it). */
  prompt(text: string | null): void;
  /** Draws the final state and leaves the cursor on a fresh line. */
  finish(): void;
}

/** The display for how the CLI was started: `--json`, `--quiet`, or stderr a terminal or not. */
export function displayFor(o: { json: boolean; quiet: boolean }): Display {
  if (o.json) return new JsonDisplay(o.quiet);
  if (!o.quiet && process.stderr.isTTY) return new TtyDisplay(process.stdout.isTTY === true);
  return new PlainDisplay(o.quiet);
}

/** One event as a line for logs: its seq, type and what it says. */
export function describe(ev: JobEvent): string {
  const seq = String(ev.seq ?? "-").padStart(6);
  return `${seq} ${ev.type.padEnd(14)} ${detailOf(ev)}`;
}

function detailOf(ev: JobEvent): string {
  switch (ev.type) {
    case "job_update":
      return `${ev.status}${ev.message ? `: ${ev.message}` : ""}${ev.agent_id ? ` (agent ${ev.agent_id})` : ""}`;
    case "node_update":
      return `${ev.node_name} ${ev.status}${ev.error ? `: ${ev.error}` : ""}`;
    case "node_progress":
      return `${ev.node_id} ${ev.progress}/${ev.total}`;
    case "chunk":
      return typeof ev.content === "string" ? JSON.stringify(ev.content) : `<${ev.content.byteLength} bytes>`;
    case "log_update":
    case "notification":
      return `${ev.severity} ${ev.content}`;
    case "output_update":
      return `${ev.node_name}.${ev.output_name} (${ev.output_type})`;
    case "save_update":
      return `${ev.node_id} saved ${ev.name} (${ev.output_type})`;
    case "edge_update":
      return `${ev.edge_id} ${ev.status}`;
    case "preview_update":
      return ev.node_id;
    case "error":
      return ev.message;
  }
}

class JsonDisplay implements Display {
  constructor(private readonly quiet: boolean) {}
  event(ev: JobEvent): void {
    process.stdout.write(
      `${JSON.stringify(ev, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.byteLength} bytes>` : v))}\n`,
    );
  }
  note(line: string): void {
    if (!this.quiet) process.stderr.write(`${line}\n`);
  }
  prompt(text: string | null): void {
    if (text) this.note(text);
  }
  finish(): void {}
}

/** Lines on stderr, text on stdout: what a log file or a pipe should get. */
class PlainDisplay implements Display {
  private midLine = false;
  /** Per node, the last tenth of its progress said. */
  private readonly tenths = new Map<string, number>();
  constructor(private readonly quiet: boolean) {}

  private line(s: string): void {
    if (this.quiet) return;
    if (this.midLine) process.stdout.write("\n");
    this.midLine = false;
    process.stderr.write(`${s}\n`);
  }

  event(ev: JobEvent): void {
    switch (ev.type) {
      case "job_update":
        return this.line(`[job ${ev.job_id}] ${ev.status}${ev.message ? `: ${ev.message}` : ""}`);
      case "node_update":
        if (ev.status === "error") return this.line(`  ✗ ${ev.node_name} (${ev.node_type}): ${ev.error}`);
        return this.line(`  ${ev.status === "running" ? "…" : "✓"} ${ev.node_name}`);
      case "node_progress": {
        const tenth = ev.total > 0 ? Math.floor((10 * ev.progress) / ev.total) : 0;
        if (tenth === this.tenths.get(ev.node_id)) return;
        this.tenths.set(ev.node_id, tenth);
        return this.line(`  ${ev.node_id}: ${ev.progress}/${ev.total}`);
      }
      case "chunk":
        if (typeof ev.content === "string" && ev.content) {
          process.stdout.write(ev.content);
          this.midLine = !ev.content.endsWith("\n");
        }
        return;
      case "log_update":
        return this.line(`  [${ev.node_name}] ${ev.content}`);
      default:
        return;
    }
  }
  note(s: string): void {
    this.line(s);
  }
  prompt(text: string | null): void {
    if (text) this.line(text);
  }
  finish(): void {
    if (this.midLine) process.stdout.write("\n");
    this.midLine = false;
  }
}

interface NodeRow {
  name: string;
  status: string;
  progress: number;
  total: number;
}

const REDRAW_MS = 80;
const BAR_CELLS = 24;

/**
 * A block of lines at the bottom of the terminal, redrawn in place (at most every 80 ms): the job's status, a bar
 * per node, and the question of a Ctrl-C. Text streamed to a terminal stdout is written above it as whole lines,
 * its unfinished line shown in the block.
 */
class TtyDisplay implements Display {
  private readonly nodes = new Map<string, NodeRow>();
  private job = "";
  private question: string | null = null;
  private pending = "";
  /** Text went straight to stdout and its last line is unfinished. */
  private midLine = false;
  private drawn = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly textOnTerminal: boolean) {}

  private get cols(): number {
    return Math.max(20, (process.stderr.columns ?? 80) - 1);
  }

  event(ev: JobEvent): void {
    switch (ev.type) {
      case "job_update":
        this.job = `job ${ev.job_id} ${ev.status}${ev.message ? `: ${ev.message}` : ""}`;
        break;
      case "node_update":
        this.row(ev.node_id, ev.node_name).status = ev.status === "error" ? `error: ${ev.error}` : ev.status;
        break;
      case "node_progress": {
        const r = this.row(ev.node_id);
        r.progress = ev.progress;
        r.total = ev.total;
        break;
      }
      case "chunk":
        if (typeof ev.content === "string") this.text(ev.content);
        break;
      default:
        return;
    }
    this.schedule();
  }

  private row(id: string, name?: string): NodeRow {
    let r = this.nodes.get(id);
    if (!r) this.nodes.set(id, (r = { name: name ?? id, status: "running", progress: 0, total: 0 }));
    if (name) r.name = name;
    return r;
  }

  /** Streamed text: straight to stdout when it is not the terminal, else through the block. */
  private text(s: string): void {
    if (!this.textOnTerminal) {
      if (s) this.midLine = !s.endsWith("\n");
      process.stdout.write(s);
      return;
    }
    this.pending += s;
  }

  /** Whole lines of the pending text (cut at the terminal's width), to be written above the block. */
  private takeLines(): string {
    let out = "";
    for (;;) {
      const nl = this.pending.indexOf("\n");
      const cut = nl >= 0 && nl <= this.cols ? nl + 1 : this.pending.length > this.cols ? this.cols : -1;
      if (cut < 0) return out;
      const line = this.pending.slice(0, cut);
      out += line.endsWith("\n") ? line : `${line}\n`;
      this.pending = this.pending.slice(cut);
    }
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.draw();
    }, REDRAW_MS);
  }

  private erase(): void {
    if (this.drawn === 0) return;
    process.stderr.write(`\r${this.drawn > 1 ? `\x1b[${this.drawn - 1}A` : ""}\x1b[J`);
    this.drawn = 0;
  }

  private blockLines(): string[] {
    const lines: string[] = [];
    if (this.pending) lines.push(this.pending);
    if (this.job) lines.push(this.job);
    for (const r of this.nodes.values()) lines.push(`  ${nodeLine(r)}`);
    if (this.question) lines.push(this.question);
    return lines.map((l) => l.replace(/\s+$/, "").slice(0, this.cols));
  }

  private draw(): void {
    this.erase();
    const lines = this.takeLines();
    if (lines) process.stdout.write(lines);
    const block = this.blockLines();
    process.stderr.write(block.join("\n"));
    this.drawn = block.length;
  }

  note(line: string): void {
    this.erase();
    process.stderr.write(`${line}\n`);
    this.draw();
  }

  prompt(text: string | null): void {
    this.question = text;
    this.draw();
  }

  finish(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.question = null;
    const rest = this.pending;
    this.pending = "";
    this.erase();
    if (rest || this.midLine) process.stdout.write(`${rest}\n`);
    this.midLine = false;
    const block = this.blockLines();
    if (block.length > 0) process.stderr.write(`${block.join("\n")}\n`);
  }
}

function nodeLine(r: NodeRow): string {
  const mark = r.status === "completed" ? "✓" : r.status.startsWith("error") ? "✗" : "…";
  const name = r.name.padEnd(18).slice(0, 18);
  if (r.total <= 0) return `${mark} ${name} ${r.status}`;
  const filled = Math.round((BAR_CELLS * Math.min(r.progress, r.total)) / r.total);
  const bar = "█".repeat(filled) + "░".repeat(BAR_CELLS - filled);
  return `${mark} ${name} ${bar} ${r.progress}/${r.total}`;
}
