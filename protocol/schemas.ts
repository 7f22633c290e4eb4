/**
 * Schemas of what clients send: one source for the TypeScript type (`Static`), the check and its error message,
 * and the OpenAPI document the gateway serves. Extra fields are kept (NodeTool's clients send more than we read).
 */
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { ErrorCode, ProtocolError } from "./errors.js";

/** Ids of things clients name (jobs, workflows, threads): a KV key and a subject token both take these. */
export const IdSchema = Type.String({ pattern: "^[A-Za-z0-9_=-]{1,128}$", description: "an id" });
const PoolSchema = Type.String({ pattern: "^[A-Za-z0-9_-]{1,64}$" });
export const StrategySchema = Type.Union([Type.Literal("inline"), Type.Literal("threaded"), Type.Literal("subprocess"), Type.Literal("docker")]);
const Params = Type.Record(Type.String(), Type.Unknown(), { description: "values for the graph's input nodes, by name" });

export const GraphNodeSchema = Type.Object(
  {
    id: Type.String({ minLength: 1, maxLength: 256 }),
    type: Type.String({ minLength: 1, maxLength: 256 }),
    data: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    ui_properties: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    dynamic_properties: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    sync_mode: Type.Optional(Type.Union([Type.Literal("on_any"), Type.Literal("zip_all")])),
    parent_id: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  },
  { additionalProperties: true },
);
export const GraphEdgeSchema = Type.Object(
  {
    id: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    source: Type.String({ minLength: 1 }),
    sourceHandle: Type.String(),
    target: Type.String({ minLength: 1 }),
    targetHandle: Type.String(),
    edge_type: Type.Optional(Type.Union([Type.Literal("data"), Type.Literal("control")])),
  },
  { additionalProperties: true },
);
export const GraphSchema = Type.Object(
  { nodes: Type.Array(GraphNodeSchema, { maxItems: 10_000 }), edges: Type.Array(GraphEdgeSchema, { maxItems: 100_000 }) },
  { additionalProperties: true },
);

/** What a run asks for besides its workflow: the body of `POST /api/workflows/{id}/run`, part of `run_job`. */
export const RunOptionsSchema = Type.Object(
  {
    params: Type.Optional(Params),
    execution_strategy: Type.Optional(StrategySchema),
    timeout_s: Type.Optional(Type.Union([Type.Number({ exclusiveMinimum: 0 }), Type.Null()], { description: "seconds; default and maximum are the gateway's" })),
    requirements: Type.Optional(Type.Object({ pool: Type.Optional(PoolSchema) }, { additionalProperties: true })),
  },
  { additionalProperties: true },
);
export type RunOptions = Static<typeof RunOptionsSchema>;

export const WorkflowBodySchema = Type.Object(
  {
    id: Type.Optional(IdSchema),
    name: Type.Optional(Type.String({ maxLength: 1024 })),
    description: Type.Optional(Type.String({ maxLength: 65_536 })),
    tags: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 256 })),
    graph: GraphSchema,
    settings: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: true },
);

const RequestId = Type.Optional(Type.Union([Type.String({ maxLength: 256 }), Type.Number()]));
const command = <C extends string, D extends TSchema>(name: C, data: D) =>
  Type.Object({ command: Type.Literal(name), data: data, request_id: RequestId }, { additionalProperties: true });
const OptData = <D extends TSchema>(d: D) => Type.Optional(d);

export const RunJobDataSchema = Type.Intersect([
  Type.Object(
    { workflow_id: Type.Optional(IdSchema), graph: Type.Optional(GraphSchema), job_id: Type.Optional(Type.String()) },
    { additionalProperties: true },
  ),
  RunOptionsSchema,
]);
export const ClientCommandSchemas = {
  run_job: command("run_job", RunJobDataSchema),
  reconnect_job: command(
    "reconnect_job",
    Type.Object(
      { job_id: IdSchema, last_seq: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])), workflow_id: Type.Optional(Type.String()) },
      { additionalProperties: true },
    ),
  ),
  cancel_job: command("cancel_job", Type.Object({ job_id: IdSchema }, { additionalProperties: true })),
  get_status: command("get_status", OptData(Type.Object({ job_id: Type.Optional(IdSchema) }, { additionalProperties: true }))),
  chat_message: command("chat_message", Type.Record(Type.String(), Type.Unknown())),
  stop: command(
    "stop",
    OptData(Type.Object({ job_id: Type.Optional(IdSchema), thread_id: Type.Optional(IdSchema) }, { additionalProperties: true })),
  ),
  set_mode: command("set_mode", Type.Object({ mode: Type.Union([Type.Literal("text"), Type.Literal("binary")]) })),
  ping: command("ping", OptData(Type.Record(Type.String(), Type.Unknown()))),
} as const;

const compiled = new WeakMap<TSchema, TypeCheck<TSchema>>();
function checkerOf<T extends TSchema>(schema: T): TypeCheck<T> {
  let c = compiled.get(schema);
  if (!c) compiled.set(schema, (c = TypeCompiler.Compile(schema)));
  return c as TypeCheck<T>;
}

/** An error's text: a choice of literals is listed ("must be one of …"), anything else says what was expected. */
function describe(schema: TSchema, message: string): string {
  const options = (schema as { anyOf?: { const?: unknown }[] }).anyOf;
  const literals = options?.map((o) => o.const).filter((v) => v !== undefined && v !== null);
  if (literals && literals.length > 0) return `must be one of ${literals.join(", ")}`;
  return message.toLowerCase();
}

/** Returns `value` typed by `schema`, or throws `ProtocolError(PROTO_ERR_SHAPE)` naming the first thing wrong. */
export function checkSchema<T extends TSchema>(schema: T, value: unknown, what: string): Static<T> {
  const c = checkerOf(schema);
  if (c.Check(value)) return value as Static<T>;
  const first = c.Errors(value).First();
  const where = first?.path ? `"${first.path.slice(1).replace(/\//g, ".")}"` : "the value";
  throw new ProtocolError(ErrorCode.PROTO_ERR_SHAPE, `${what}: ${where} ${first ? describe(first.schema, first.message) : "is malformed"}`);
}
