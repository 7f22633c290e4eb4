/**
 * SQLite nodes (`lib.sqlite.*`) on the job's own in-memory database: a table created, rows inserted from a stream,
 * queried back (each row along `row`, then the list) with JSON cells parsed; another job does not see it.
 */
import t from "tap";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";

const edge = (source: string, sourceHandle: string, target: string, targetHandle: string) => ({
  id: `${source}.${sourceHandle}-${target}.${targetHandle}`,
  source,
  sourceHandle,
  target,
  targetHandle,
});

async function run(ws: WsClient, graph: unknown): Promise<Msg> {
  const r = await ws.request("run_job", { graph, params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  return check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: `job ${jobId} ended` });
}
const errorOf = (end: Msg) => String((end.error as { message?: string } | undefined)?.message ?? "");

const COLUMNS = {
  type: "record_type",
  columns: [
    { name: "id", data_type: "int" },
    { name: "question", data_type: "string" },
    { name: "tags", data_type: "object" },
  ],
};

/** Creates the table, inserts each of `records` (one Insert per item), then queries after the last insert. */
const roundTrip = (records: unknown[], where = "id >= 1") => ({
  nodes: [
    {
      id: "ct",
      type: "lib.sqlite.CreateTable",
      data: { database_name: "cards.db", table_name: "cards", columns: COLUMNS },
    },
    // The records go out once the table exists (Insert combines the latest of its inputs).
    { id: "gate", type: "nodetool.dictionary.GetValue", data: { dictionary: { cards: records } } },
    { id: "each", type: "nodetool.control.ForEach", data: {} },
    { id: "ins", type: "lib.sqlite.Insert", data: {} },
    { id: "all", type: "nodetool.control.Collect", data: {} },
    { id: "w", type: "nodetool.text.FormatText", data: { template: where } },
    { id: "q", type: "lib.sqlite.Query", data: { order_by: "id DESC" } },
    { id: "out_inserted", type: "nodetool.output.Output", data: { name: "inserted" } },
    { id: "out_rows", type: "nodetool.output.Output", data: { name: "rows" } },
    { id: "out_row", type: "nodetool.output.Output", data: { name: "row" } },
  ],
  edges: [
    edge("ct", "database_name", "ins", "database_name"),
    edge("ct", "table_name", "ins", "table_name"),
    edge("ct", "table_name", "gate", "key"),
    edge("gate", "output", "each", "input_list"),
    edge("each", "output", "ins", "data"),
    edge("ins", "output", "all", "input_item"),
    edge("all", "output", "w", "done"),
    edge("all", "output", "out_inserted", "value"),
    edge("w", "output", "q", "where"),
    edge("ct", "database_name", "q", "database_name"),
    edge("ct", "table_name", "q", "table_name"),
    edge("q", "output", "out_rows", "value"),
    edge("q", "row", "out_row", "value"),
  ],
});

t.test("sqlite - create, insert, query round trip in the job's own database", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const end = await run(
    ws,
    roundTrip([
      { question: "2+2?", tags: ["math"] },
      { question: "capital of France?", tags: { geo: true } },
    ]),
  );
  t.equal(end.status, "completed", errorOf(end));
  const r = end.result as Record<string, unknown[]>;
  t.match(r.inserted![0], [
    { row_id: 1, rows_affected: 1, message: "Inserted record with ID 1" },
    { row_id: 2, rows_affected: 1 },
  ]);
  const rows = [
    { id: 2, question: "capital of France?", tags: { geo: true } },
    { id: 1, question: "2+2?", tags: ["math"] },
  ];
  t.same(r.rows, [rows], "the rows, newest first, JSON cells parsed; the first int column is the key");
  t.same(r.row, rows, "each row was also sent on its own");

  const other = await run(ws, {
    nodes: [
      { id: "q", type: "lib.sqlite.Query", data: { database_name: "cards.db", table_name: "cards" } },
      { id: "o", type: "nodetool.output.Output", data: { name: "rows" } },
    ],
    edges: [edge("q", "output", "o", "value")],
  });
  t.equal(other.status, "completed", errorOf(other));
  t.same(other.result, { rows: [[]] }, "another job has its own (empty) databases");

  const bad = await run(ws, roundTrip([{ question: "x" }], "no_such_column = 1"));
  t.equal(bad.status, "failed");
  t.match(errorOf(bad), /SQLite: no such column: no_such_column/, "SQLite's error names the problem");
});
