/**
 * Schemas of what clients send: one source for the TypeScript type (`Static`), the check and its error message,
 * and the OpenAPI document the gateway serves. Extra fields are kept (NodeTool's clients send more than we read).
 */
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { THREAD_LIMITS } from "./chat.js";
import { ErrorCode, ProtocolError } from "./errors.js";

/** Ids of things clients name (jobs, workflows, threads): a KV key and a subject token both take these. */
export const IdSchema = Type.String({ pattern: "^[A-Za-z0-9_=-]{1,128}$", description: "an id" });
const PoolSchema = Type.String({ pattern: "^[A-Za-z0-9_-]{1,64}$" });
export const StrategySchema = Type.Union([
  Type.Literal("inline"),
  Type.Literal("threaded"),
  Type.Literal("subprocess"),
  Type.Literal("docker"),
]);
const Params = Type.Record(Type.String(), Type.Unknown(), {
  description: "values for the graph's input nodes, by name",
});

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
  {
    nodes: Type.Array(GraphNodeSchema, { maxItems: 10_000 }),
    edges: Type.Array(GraphEdgeSchema, { maxItems: 100_000 }),
  },
  { additionalProperties: true },
);

/** What a run asks for besides its workflow: the body of `POST /api/workflows/{id}/run`, part of `run_job`. */
export const RunOptionsSchema = Type.Object(
  {
    params: Type.Optional(Params),
    execution_strategy: Type.Optional(StrategySchema),
    timeout_s: Type.Optional(
      Type.Union([Type.Number({ exclusiveMinimum: 0 }), Type.Null()], {
        description: "seconds; default and maximum are the gateway's",
      }),
    ),
    requirements: Type.Optional(Type.Object({ pool: Type.Optional(PoolSchema) }, { additionalProperties: true })),
  },
  { additionalProperties: true },
);
export type RunOptions = Static<typeof RunOptionsSchema>;

/** `POST /api/threads`, `PUT /api/threads/{id}`. */
export const ThreadBodySchema = Type.Object(
  { title: Type.Optional(Type.Union([Type.String({ maxLength: THREAD_LIMITS.titleChars }), Type.Null()])) },
  { additionalProperties: true },
);
export type ThreadBody = Static<typeof ThreadBodySchema>;

/** `POST /api/messages`: a message added to a thread by hand. */
export const MessageBodySchema = Type.Object(
  {
    thread_id: IdSchema,
    role: Type.Union([Type.Literal("user"), Type.Literal("assistant")]),
    content: Type.String({ maxLength: THREAD_LIMITS.contentChars }),
  },
  { additionalProperties: true },
);
export type MessageBody = Static<typeof MessageBodySchema>;

/** NodeTool writes `null` for a field it has no value for (`"settings": null`): read as absent. */
const OrNull = <T extends TSchema>(s: T) => Type.Optional(Type.Union([s, Type.Null()]));

export const WorkflowBodySchema = Type.Object(
  {
    // NodeTool exports a new workflow with `"id": ""`: empty or null means "give it one".
    id: OrNull(Type.Union([IdSchema, Type.Literal("")])),
    name: OrNull(Type.String({ maxLength: 1024 })),
    description: OrNull(Type.String({ maxLength: 65_536 })),
    tags: OrNull(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 256 })),
    graph: GraphSchema,
    settings: OrNull(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: true },
);

const RequestId = Type.Optional(Type.Union([Type.String({ maxLength: 256 }), Type.Number()]));
const command = <C extends string, D extends TSchema>(name: C, data: D) =>
  Type.Object({ command: Type.Literal(name), data: data, request_id: RequestId }, { additionalProperties: true });
const OptData = <D extends TSchema>(d: D) => Type.Optional(d);

export const RunJobDataSchema = Type.Intersect([
  Type.Object(
    {
      workflow_id: Type.Optional(IdSchema),
      graph: Type.Optional(GraphSchema),
      // The client's own name for the run (NodeTool clients send one): a retry with it finds the first run's job.
      job_id: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    },
    { additionalProperties: true },
  ),
  RunOptionsSchema,
]);
export const ClientCommandSchemas = {
  run_job: command("run_job", RunJobDataSchema),
  reconnect_job: command(
    "reconnect_job",
    Type.Object(
      {
        job_id: IdSchema,
        last_seq: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
        workflow_id: Type.Optional(Type.String()),
      },
      { additionalProperties: true },
    ),
  ),
  cancel_job: command("cancel_job", Type.Object({ job_id: IdSchema }, { additionalProperties: true })),
  get_status: command(
    "get_status",
    OptData(Type.Object({ job_id: Type.Optional(IdSchema) }, { additionalProperties: true })),
  ),
  chat_message: command("chat_message", Type.Record(Type.String(), Type.Unknown())),
  stop: command(
    "stop",
    OptData(
      Type.Object(
        { job_id: Type.Optional(IdSchema), thread_id: Type.Optional(IdSchema) },
        { additionalProperties: true },
      ),
    ),
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

const kindOf = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);
/** Whether `v` is of the JSON Schema type `type` (a number is of "integer" too: its own check says if it is one). */
const ofType = (v: unknown, type: unknown): boolean =>
  kindOf(v) === type || (type === "integer" && kindOf(v) === "number");
const KIND: Record<string, string> = {
  string: "a string",
  number: "a number",
  integer: "an integer",
  boolean: "true or false",
  object: "an object",
  array: "a list",
  null: "null",
};

/** An error's text in this API's words: what the value must be, from the schema it failed. */
function describe(schema: TSchema, value: unknown, message: string): string {
  const options = (schema as { anyOf?: { const?: unknown }[] }).anyOf;
  const literals = options?.map((o) => o.const).filter((v) => v !== undefined && v !== null);
  const or = (words: string[]) => (words.length > 1 ? `${words.slice(0, -1).join(", ")} or ${words.at(-1)}` : words[0]);
  if (literals && literals.length > 0) return `must be ${or(literals.map((v) => JSON.stringify(v)))}`;
  if (value === undefined) return "is required";
  if (options) {
    // A choice of types: the option of the value's own type says what is wrong with it, else list the types.
    const own = options.find(
      (o) => KIND[String((o as TSchema).type)] !== undefined && ofType(value, (o as TSchema).type),
    );
    if (own) return describe(own as TSchema, value, message);
    return `must be ${or(options.map((o) => KIND[String((o as TSchema).type)] ?? "another value"))}`;
  }
  const kind = KIND[String(schema.type)];
  const typeOk =
    kind === undefined ||
    (schema.type === "array"
      ? Array.isArray(value)
      : schema.type === "integer"
        ? Number.isInteger(value)
        : typeof value === (schema.type === "integer" ? "number" : schema.type) &&
          value !== null &&
          !Array.isArray(value));
  if (!typeOk) return `must be ${kind}`;
  if (typeof value === "string" && typeof schema.maxLength === "number" && value.length > schema.maxLength)
    return `is longer than ${schema.maxLength} characters`;
  if (typeof value === "string" && typeof schema.pattern === "string")
    return `is not valid here (${JSON.stringify(value.slice(0, 40))})`;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return "must be a finite number";
    if (typeof schema.exclusiveMinimum === "number" && !(value > schema.exclusiveMinimum))
      return `must be more than ${schema.exclusiveMinimum}`;
    if (typeof schema.minimum === "number" && value < schema.minimum) return `must be at least ${schema.minimum}`;
    if (typeof schema.maximum === "number" && value > schema.maximum) return `must be at most ${schema.maximum}`;
  }
  return message.toLowerCase();
}

/** Returns `value` typed by `schema`, or throws `ProtocolError(PROTO_ERR_SHAPE)` naming the first thing wrong. */
export function checkSchema<T extends TSchema>(schema: T, value: unknown, what: string): Static<T> {
  const c = checkerOf(schema);
  if (c.Check(value)) return value as Static<T>;
  const first = c.Errors(value).First();
  const where = first?.path ? `"${first.path.slice(1).replace(/\//g, ".")}"` : "the value";
  throw new ProtocolError(
    ErrorCode.PROTO_ERR_SHAPE,
    `${what}: ${where} ${first ? describe(first.schema, first.value, first.message) : "is malformed"}`,
  );
}
