/** Workflows in KV `nw_workflows`, validated on save. */
import type { KV } from "@nats-io/kv";
import { newId, parseJson, validateGraph, workflowKey, type NodeCatalog, type Workflow } from "../protocol/index.js";
import { ErrorCode } from "../protocol/index.js";
import { GatewayError, badRequest, notFound } from "./errors.js";
import { LIST_PAGE_MAX_BYTES } from "./http.js";

/** Fields NodeTool saves as `null` when empty; a stored workflow leaves them out instead. */
const NULLABLE_FIELDS = ["name", "description", "tags", "settings"] as const;

export class WorkflowStore {
  constructor(
    private readonly kv: KV,
    /** The largest workflow the bucket takes: one KV value is one NATS message. */
    private readonly maxBytes: number,
  ) {}

  async get(id: string): Promise<Workflow> {
    const e = await this.kv.get(workflowKey(id)).catch(() => null);
    if (e?.operation !== "PUT" || e.length === 0) throw notFound(`workflow "${id}"`);
    return parseJson(e.string()) as Workflow;
  }

  async list(limit: number, cursor?: string): Promise<{ workflows: Workflow[]; next: string | null }> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) keys.push(k);
    keys.sort();
    const out: Workflow[] = [];
    let next: string | null = null;
    let bytes = 0;
    let last = "";
    for (const k of keys) {
      if (cursor && k <= cursor) continue;
      if (out.length === limit || bytes >= LIST_PAGE_MAX_BYTES) {
        next = last;
        break;
      }
      last = k;
      const e = await this.kv.get(k);
      if (e && e.operation === "PUT" && e.length > 0) {
        out.push(parseJson(e.string()) as Workflow);
        bytes += e.length;
      }
    }
    return { workflows: out, next };
  }

  /**
   * Creates (`id` absent: the body's id or a new one; an id that exists is a 409) or replaces (`id` given); the
   * graph is checked against the node types live agents offer.
   */
  async save(body: Record<string, unknown>, catalog: NodeCatalog | undefined, id?: string): Promise<Workflow> {
    const creating = id === undefined;
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
    if (creating && prev) throw conflict(wid);
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
    if (!creating) await this.kv.put(workflowKey(wid), json);
    // Written only if no workflow has the id: two creates of one id cannot both land.
    else await this.kv.create(workflowKey(wid), json).catch((err: unknown) => Promise.reject(existsError(err, wid)));
    return wf;
  }

  async delete(id: string): Promise<void> {
    await this.get(id);
    await this.kv.delete(workflowKey(id));
  }
}

const conflict = (id: string) =>
  new GatewayError(ErrorCode.GW_ERR_CONFLICT, `workflow "${id}" exists: PUT /api/workflows/${id} replaces it`);

/** A KV create that lost to an existing key is the same conflict; anything else stays what it was. */
function existsError(err: unknown, id: string): unknown {
  return err instanceof Error && /wrong last sequence|exists/i.test(err.message) ? conflict(id) : err;
}
