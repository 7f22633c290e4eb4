/**
 * The gateway's Prometheus metrics on one prom-client registry. Counts kept elsewhere (the job index, the event
 * hub, the WebSocket hub, the refusal log) are read at scrape time; request durations are observed as requests are answered.
 */
import { Counter, Gauge, Histogram, createRegistry, type Registry } from "../../obs/index.js";
import type { JobState } from "../../protocol/index.js";
import type { RefusalLog } from "../auth.js";
import type { EventHub } from "../event-hub.js";
import type { JobManager } from "../jobs.js";
import type { WsHub } from "../ws.js";

const JOB_STATES: readonly JobState[] = ["queued", "running", "completed", "failed", "cancelled", "timed_out"];

/** What the scrape reads its counts from. */
export interface MetricSources {
  jobs: JobManager;
  hub: EventHub;
  wsHub: WsHub;
  refusals: RefusalLog;
}

/** The HTTP status of an answer as its class ("2xx"), or "aborted" when the client left before it. */
export function statusClass(status: number | null): string {
  return status === null ? "aborted" : `${Math.floor(status / 100)}xx`;
}

export class GatewayMetrics {
  readonly registry: Registry;
  /** Event frames sent on HTTP streams (WebSocket frames are counted by the WebSocket hub). */
  eventsOutHttp = 0;
  readonly requests: Counter;
  readonly requestSeconds: Histogram<"route" | "status_class">;

  constructor(private readonly src: MetricSources) {
    this.registry = createRegistry("gateway");
    // Samples keep the names and labels they have always had (dashboards and tests read them by exact name).
    this.registry.setDefaultLabels({});
    const registers = [this.registry];
    this.requests = new Counter({ name: "nodeway_http_requests_total", help: "HTTP requests served.", registers });
    this.requestSeconds = new Histogram({
      name: "nodeway_http_request_duration_seconds",
      help: "Time from a request's arrival to its status line (the start of a stream), by route and status class.",
      labelNames: ["route", "status_class"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.jobGauges(registers);
    this.hubGauges(registers);
    this.wsGauges(registers);
  }

  /** The text exposition of every metric. */
  async scrape(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }

  private jobGauges(registers: Registry[]): void {
    const { jobs } = this.src;
    new Gauge({
      name: "nodeway_jobs",
      help: "Jobs by state (records kept in nw_jobs).",
      labelNames: ["state"],
      registers,
      async collect() {
        const counts = await jobs.stateCounts();
        for (const s of JOB_STATES) this.set({ state: s }, counts.get(s) ?? 0);
      },
    });
    counterOf(registers, "nodeway_jobs_created_total", "Jobs created by this gateway.", () => jobs.jobsCreated);
  }

  private hubGauges(registers: Registry[]): void {
    const { hub } = this.src;
    counterOf(registers, "nodeway_events_in_total", "Events this gateway consumed from NW_EVENTS.", () => hub.eventsIn);
    const listenersHelp = "Direct event listeners (resumes catching up, HTTP event streams).";
    gaugeOf(registers, "nodeway_hub_listeners", listenersHelp, () => hub.listenerCount());
    new Counter({
      name: "nodeway_replays_total",
      help: "Resumes and replays by where their history came from.",
      labelNames: ["source"],
      registers,
      collect() {
        this.reset();
        this.inc({ source: "memory" }, hub.replaysFromMemory);
        this.inc({ source: "jetstream" }, hub.replaysFromStream);
      },
    });
    const cacheHelp = "Bytes of recent jobs' events held for replay.";
    gaugeOf(registers, "nodeway_replay_cache_bytes", cacheHelp, () => hub.cachedBytes);
  }

  private wsGauges(registers: Registry[]): void {
    const { wsHub, refusals } = this.src;
    new Gauge({
      name: "nodeway_ws_follows",
      help: "Socket-job follows by path: the job's uWS topic, or direct sends while a resume catches up.",
      labelNames: ["via"],
      registers,
      collect() {
        const f = wsHub.followStats();
        this.set({ via: "topic" }, f.topic);
        this.set({ via: "direct" }, f.direct);
      },
    });
    const membershipHelp = "Socket memberships of job topics (one per live socket following a job live).";
    gaugeOf(registers, "nodeway_ws_topic_memberships", membershipHelp, () => wsHub.topicMemberships());
    const outHelp = "Event frames sent to clients (streams and direct WS sends).";
    counterOf(registers, "nodeway_events_out_total", outHelp, () => this.eventsOutHttp + wsHub.framesOut);
    gaugeOf(registers, "nodeway_ws_sockets_open", "WebSocket connections open now.", () => wsHub.sockets.size);
    counterOf(registers, "nodeway_ws_bad_frames_total", "Client frames rejected by the codec.", () => wsHub.badFrames);
    const refusedHelp = "Requests and WebSocket upgrades refused for a missing or invalid API token.";
    counterOf(registers, "nodeway_unauthorized_total", refusedHelp, () => refusals.total);
  }
}

/** A counter whose value is read from `read` at each scrape (it is kept elsewhere). */
function counterOf(registers: Registry[], name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers,
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

function gaugeOf(registers: Registry[], name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers,
    collect() {
      this.set(read());
    },
  });
}
