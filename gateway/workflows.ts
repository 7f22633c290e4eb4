/** Workflows in KV `nw_workflows`, validated on save; the ones run here are kept in memory while unchanged. */
import type { JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import {
  KV_WORKFLOWS,
  newId,
  parseJson,
  validateGraph,
  workflowKey,
  type NodeCatalog,
  type Workflow,
} from "../protocol/index.js";
import { ErrorCode } from "../protocol/index.js";
import { GatewayError, badRequest, notFound } from "./errors.js";
import { KvView, type KvViewSink } from "./kv-view.js";

/** Fields NodeTool saves as `null` when empty; a stored workflow leaves them out instead. */
const NULLABLE_FIELDS = ["name", "description", "tags", "settings"] as const;

/** At most this much workflow JSON is kept in memory (the least recently used goes first). */
const CACHE_MAX_CHARS = 32 * 2 ** 20;

/**
 * Workflows as last read or written here, by key, with their revision. The bucket's view tells it of every write
 * (from any gateway): a write newer than an entry drops it, and a read older than a write already seen is not
 * kept. Entries are JSON text, parsed per get, so no caller can change another's copy.
 */
class WorkflowCache implements KvViewSink {
  private readonly entries = new Map<string, { revision: number; text: string }>();
  /** The newest revision of each key the view has delivered. */
  private readonly newest = new Map<string, number>();
  private chars = 0;

  get(key: string): string | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.text;
  }

  keep(key: string, revision: number, text: string): void {
    if (revision < (this.newest.get(key) ?? 0) || text.length > CACHE_MAX_CHARS / 4) return;
    this.drop(key);
    this.entries.set(key, { revision, text });
    this.chars += text.length;
    for (const [k] of this.entries) {
      if (this.chars <= CACHE_MAX_CHARS) break;
      this.drop(k);
    }
  }

  put(key: string, _value: Uint8Array, _writtenMs: number, revision: number): void {
    this.newest.set(key, revision);
    if ((this.entries.get(key)?.revision ?? revision) < revision) this.drop(key);
  }

  delete(key: string, revision: number): void {
    this.newest.set(key, revision);
    this.drop(key);
  }

  /** Deleted here: gone from this gateway's gets now, before the view delivers the delete. */
  forget(key: string): void {
    this.drop(key);
  }

  private drop(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    this.chars -= e.text.length;
  }
}

export class WorkflowStore {
  private readonly cache = new WorkflowCache();
  private view: KvView | null = null;

  constructor(
    private readonly kv: KV,
    /** The largest workflow the bucket takes: one KV value is one NATS message. */
    private readonly maxBytes: number,
  ) {}

  /** Starts the view that keeps the cache current; without it every get reads the bucket. */
  async start(js: JetStreamClient, log: (line: string, err?: unknown) => void): Promise<void> {
    this.view = new KvView(js, KV_WORKFLOWS, ">", this.cache, log);
    await this.view.start();
  }

  stop(): void {
    this.view?.stop();
    this.view = null;
  }

  async get(id: string): Promise<Workflow> {
    const key = workflowKey(id);
    const kept = this.view ? this.cache.get(key) : undefined;
    if (kept !== undefined) return parseJson(kept) as Workflow;
    const e = await this.kv.get(key).catch(() => null);
    if (e?.operation !== "PUT" || e.length === 0) throw notFound(`workflow "${id}"`);
    const text = e.string();
    if (this.view) this.cache.keep(key, e.revision, text);
    return parseJson(text) as Workflow;
  }

  async list(limit: number, cursor?: string): Promise<{ workflows: Workflow[]; next: string | null }> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) keys.push(k);
    keys.sort();
    const out: Workflow[] = [];
    let next: string | null = null;
    for (const k of keys) {
      if (cursor && k <= cursor) continue;
      if (out.length === limit) {
        next = out[out.length - 1]!.id;
        break;
      }
      const e = await this.kv.get(k);
      if (e && e.operation === "PUT" && e.length > 0) out.push(parseJson(e.string()) as Workflow);
    }
    return { workflows: out, next };
  }

  /** Creates or replaces; the graph is checked against the node types live agents offer. */
  async save(body: Record<string, unknown>, catalog: NodeCatalog | undefined, id?: string): Promise<Workflow> {
    const wid = id ?? (typeof body.id === "string" && body.id ? body.id : newId());
    try {
      workflowKey(wid);
    } catch {
      throw badRequest(`invalid workflow id "${wid}"`);
    }
    if (body.graph === undefined) throw badRequest('workflow needs a "graph" {nodes, edges}');
    const graph = validateGraph(body.graph, catalog);
    for (const k of NULLABLE_FIELDS) if (body[k] === null) delete body[k];
    const prev = await this.get(wid).catch(() => null);
    const now = new Date().toISOString();
    const wf: Workflow = {
      ...(prev ?? {}),
      ...(body as Partial<Workflow>),
      id: wid,
      name: typeof body.name === "string" ? body.name : (prev?.name ?? "Untitled"),
      graph,
      created_at: prev?.created_at ?? now,
      updated_at: now,
    };
    const json = JSON.stringify(wf);
    const bytes = Buffer.byteLength(json);
    if (bytes > this.maxBytes) {
      throw new GatewayError(
        ErrorCode.GW_ERR_BODY_TOO_LARGE,
        `the workflow is ${bytes} bytes; a workflow may be at most ${this.maxBytes} (NATS max_payload less headers)`,
      );
    }
    const revision = await this.kv.put(workflowKey(wid), json);
    if (this.view) this.cache.keep(workflowKey(wid), revision, json);
    return wf;
  }

  async delete(id: string): Promise<void> {
    await this.get(id);
    await this.kv.delete(workflowKey(id));
    this.cache.forget(workflowKey(id));
  }
}
