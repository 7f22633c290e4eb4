/**
 * The OpenAPI 3.1 document served at `/openapi.json`, built from the same schemas the routes check bodies with
 * (protocol/schemas.ts), so the document cannot drift from what is enforced.
 */
import {
  GraphSchema,
  MessageBodySchema,
  RunOptionsSchema,
  ThreadBodySchema,
  WorkflowBodySchema,
} from "../protocol/index.js";

type Op = { summary: string; body?: string; ok?: string; stream?: boolean };
const idParam = {
  name: "id",
  in: "path",
  required: true,
  schema: { type: "string", pattern: "^[A-Za-z0-9_=-]{1,128}$" },
};
const json = (ref: string) => ({ "application/json": { schema: { $ref: `#/components/schemas/${ref}` } } });

const ROUTES: Record<string, Record<string, Op>> = {
  "/health": { get: { summary: "Liveness and NATS reachability (no token needed)" } },
  "/metrics": { get: { summary: "Prometheus metrics" } },
  "/openapi.json": { get: { summary: "This document" } },
  "/api/workflows": {
    get: { summary: "List workflows (limit, cursor)" },
    post: { summary: "Save a workflow", body: "WorkflowBody" },
  },
  "/api/workflows/{id}": {
    get: { summary: "Read a workflow" },
    put: { summary: "Replace a workflow", body: "WorkflowBody" },
    delete: { summary: "Delete a workflow" },
  },
  "/api/workflows/{id}/run": {
    post: {
      summary: "Run a workflow (?stream=true for NDJSON/SSE events, ?wait=true for the result)",
      body: "RunOptions",
    },
    delete: { summary: "Cancel a run of this workflow (job_id in query or body)" },
  },
  "/api/jobs": { get: { summary: "List jobs, newest first (status, workflow_id, limit, cursor)" } },
  "/api/jobs/{id}": { get: { summary: "A job's record" } },
  "/api/jobs/{id}/cancel": { post: { summary: "Cancel a job" } },
  "/api/jobs/{id}/events": {
    get: { summary: "A job's events after ?after= / Last-Event-ID, then live", stream: true },
  },
  "/api/agents": { get: { summary: "Live agents" } },
  "/api/agents/{id}/drain": { post: { summary: "Drain an agent" } },
  "/api/assets": { get: { summary: "List assets" }, post: { summary: "Upload an asset (raw body or multipart)" } },
  "/api/assets/{id}": { get: { summary: "An asset's metadata" }, delete: { summary: "Delete an asset" } },
  "/api/assets/{id}/content": {
    get: { summary: "An asset's bytes: one Range gets 206; If-None-Match gets 304" },
  },
  "/api/threads": { get: { summary: "List chat threads" }, post: { summary: "Create a thread", body: "ThreadBody" } },
  "/api/threads/{id}": {
    get: { summary: "A thread" },
    put: { summary: "Rename a thread", body: "ThreadBody" },
    delete: { summary: "Delete a thread" },
  },
  "/api/messages": {
    get: { summary: "A thread's messages (thread_id)" },
    post: { summary: "Add a message", body: "MessageBody" },
  },
  "/api/messages/{id}": { get: { summary: "A message" } },
  "/api/nodes/metadata": { get: { summary: "Node types the fleet offers" } },
  "/v1/models": { get: { summary: "OpenAI-compatible model list" } },
  "/v1/models/{id}": { get: { summary: "OpenAI-compatible model" } },
  "/v1/chat/completions": { post: { summary: "OpenAI-compatible chat completion (stream supported)" } },
};

function operation(path: string, op: Op): Record<string, unknown> {
  const responses: Record<string, unknown> = {
    "200": {
      description: "OK",
      ...(op.stream ? { content: { "application/x-ndjson": {}, "text/event-stream": {} } } : {}),
    },
    "4XX": { description: "The request's fault", content: json("Error") },
    "5XX": { description: "Ours", content: json("Error") },
  };
  return {
    summary: op.summary,
    ...(path.includes("{id}") ? { parameters: [idParam] } : {}),
    ...(op.body ? { requestBody: { required: false, content: json(op.body) } } : {}),
    responses,
  };
}

let cached: string | null = null;

/** The document as JSON text (built once). */
export function openApiDocument(): string {
  if (cached) return cached;
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [path, ops] of Object.entries(ROUTES)) {
    paths[path] = Object.fromEntries(Object.entries(ops).map(([m, op]) => [m, operation(path, op)]));
  }
  cached = JSON.stringify({
    openapi: "3.1.0",
    info: {
      title: "Nodeway gateway API",
      version: "1",
      description: "Errors are {code, message}; codes are stable (docs/api.md).",
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: {
        Error: {
          type: "object",
          required: ["code", "message"],
          properties: { code: { type: "string" }, message: { type: "string" } },
        },
        Graph: GraphSchema,
        RunOptions: RunOptionsSchema,
        WorkflowBody: WorkflowBodySchema,
        ThreadBody: ThreadBodySchema,
        MessageBody: MessageBodySchema,
      },
    },
    security: [{ bearer: [] }, {}],
    paths,
  });
  return cached;
}
