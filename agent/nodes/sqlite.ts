/**
 * SQLite (`lib.sqlite.*`) on sql.js: each job has its own databases, in memory, by `database_name` (NodeTool keeps
 * them as files in the job's workspace); they live as long as the run and are closed with it. `where` and
 * `order_by` are raw SQL as in NodeTool: they reach only the job's own in-memory database, which holds no files.
 */
import type { Database, SqlValue } from "sql.js";
import { NodeError, type NodeContext, type NodeDef, type NodeInputs } from "../engine/types.js";
import { columnsOf } from "./generators.js";
import { asBool, asDict, asInt, asList, asText, capList, prop } from "./util.js";

let sqlJs: Promise<import("sql.js").SqlJsStatic> | null = null;

/** The job's database `name`, created empty on first use. */
async function databaseOf(ctx: NodeContext, name: string): Promise<Database> {
  if (name.trim() === "") throw new NodeError("database_name is empty");
  const ws = workspaceOf(ctx);
  const key = `sqlite:${name}`;
  const open = ws.get(key) as Database | undefined;
  if (open) return open;
  sqlJs ??= import("sql.js").then((m) => m.default());
  const SQL = await sqlJs;
  const again = ws.get(key) as Database | undefined;
  if (again) return again;
  const db = new SQL.Database();
  ws.set(key, db);
  return db;
}

function workspaceOf(ctx: NodeContext): Map<string, unknown> {
  if (!ctx.workspace) throw new NodeError(`${ctx.nodeType} keeps its database in the run's workspace, and has none`);
  return ctx.workspace;
}

const quoteId = (name: string) => `"${name.replace(/"/g, '""')}"`;
const SQL_TYPES: Record<string, string> = { int: "INTEGER", float: "REAL", datetime: "TEXT", string: "TEXT" };

/** A value as SQLite stores it: lists and dicts as JSON, booleans as 0/1. */
function sqlValue(v: unknown): SqlValue {
  if (v === null || v === undefined) return null;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number" || typeof v === "string" || v instanceof Uint8Array) return v;
  return JSON.stringify(v);
}

function run(db: Database, sql: string, params: SqlValue[] = []): void {
  try {
    db.run(sql, params);
  } catch (err) {
    throw new NodeError(`SQLite: ${(err as Error).message} (in ${sql.slice(0, 200)})`);
  }
}

function select(ctx: NodeContext, db: Database, sql: string, params: SqlValue[] = []): Record<string, unknown>[] {
  let stmt: ReturnType<Database["prepare"]>;
  try {
    stmt = db.prepare(sql);
  } catch (err) {
    throw new NodeError(`SQLite: ${(err as Error).message} (in ${sql.slice(0, 200)})`);
  }
  try {
    stmt.bind(params);
    const rows: Record<string, unknown>[] = [];
    while (stmt.step()) {
      capList(ctx.limits, rows.length + 1, "the query's rows");
      rows.push(parseJsonCells(stmt.getAsObject()));
    }
    return rows;
  } catch (err) {
    throw err instanceof NodeError ? err : new NodeError(`SQLite: ${(err as Error).message}`);
  } finally {
    stmt.free();
  }
}

/** Text cells that hold a JSON object or list come back parsed (NodeTool does the same). */
function parseJsonCells(row: Record<string, SqlValue>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...row };
  for (const [k, v] of Object.entries(row)) {
    if (typeof v !== "string" || !/^\s*[[{]/.test(v)) continue;
    try {
      out[k] = JSON.parse(v);
    } catch {
      // plain text that starts with a bracket
    }
  }
  return out;
}

const DB = prop("database_name", "str", "memory.db", { description: "Name of the job's SQLite database" });
const TABLE = (what: string) => prop("table_name", "str", "flashcards", { description: `Name of the table ${what}` });
const WHERE = prop("where", "str", "", { description: "WHERE clause (without 'WHERE'), e.g. 'id = 1'" });

export const createTable: NodeDef = {
  kind: "process",
  type: "lib.sqlite.CreateTable",
  title: "Create Table",
  description: "Create a new SQLite table with specified columns.",
  properties: [
    DB,
    TABLE("to create"),
    prop("columns", "record_type", { type: "record_type", columns: [] }, { description: "Column definitions" }),
    prop("add_primary_key", "bool", true, { description: "First int column becomes PRIMARY KEY AUTOINCREMENT" }),
    prop("if_not_exists", "bool", true, { description: "Only create table if it doesn't exist" }),
  ],
  outputs: [
    { name: "database_name", type: "str" },
    { name: "table_name", type: "str" },
    { name: "columns", type: "record_type" },
  ],
  process: async (ctx, inputs) => {
    const db = await databaseOf(ctx, asText(inputs.database_name));
    const table = asText(inputs.table_name);
    const columns = columnsOf(inputs.columns);
    if (columns.length === 0) throw new NodeError("columns is empty: a table needs at least one column");
    const defs = columns.map((c, i) =>
      i === 0 && asBool(inputs.add_primary_key) && c.data_type === "int"
        ? `${quoteId(c.name)} INTEGER PRIMARY KEY AUTOINCREMENT`
        : `${quoteId(c.name)} ${SQL_TYPES[c.data_type] ?? "TEXT"}`,
    );
    const ifNot = asBool(inputs.if_not_exists) ? "IF NOT EXISTS " : "";
    run(db, `CREATE TABLE ${ifNot}${quoteId(table)} (${defs.join(", ")})`);
    return { database_name: inputs.database_name, table_name: table, columns: inputs.columns };
  },
};

export const insert: NodeDef = {
  kind: "process",
  type: "lib.sqlite.Insert",
  title: "Insert",
  description: "Insert a record (column → value) into a SQLite table.",
  properties: [DB, TABLE("to insert into"), prop("data", "dict", { content: "example" })],
  outputs: [{ name: "output", type: "dict[str, any]" }],
  process: async (ctx, inputs) => {
    const db = await databaseOf(ctx, asText(inputs.database_name));
    const data = asDict(inputs.data);
    const keys = Object.keys(data);
    if (keys.length === 0) throw new NodeError("data is empty: nothing to insert");
    const sql = `INSERT INTO ${quoteId(asText(inputs.table_name))} (${keys.map(quoteId).join(", ")}) VALUES (${keys.map(() => "?").join(", ")})`;
    run(
      db,
      sql,
      keys.map((k) => sqlValue(data[k])),
    );
    const rowId = select(ctx, db, "SELECT last_insert_rowid() AS id")[0]?.id ?? null;
    return {
      output: { row_id: rowId, rows_affected: db.getRowsModified(), message: `Inserted record with ID ${rowId}` },
    };
  },
};

export const query: NodeDef = {
  kind: "generator",
  type: "lib.sqlite.Query",
  title: "Query",
  description:
    "Query records from a SQLite table: each row is sent along `row`, then all of them along `output` (an unknown database gives none).",
  properties: [
    DB,
    TABLE("to query"),
    WHERE,
    prop("columns", "record_type", { type: "record_type", columns: [] }, { description: "Columns to select" }),
    prop("order_by", "str", "", { description: "ORDER BY clause (without 'ORDER BY')" }),
    prop("limit", "int", 0, { description: "Maximum number of rows to return (0 = no limit)" }),
  ],
  outputs: [
    { name: "output", type: "list[dict[str, any]]" },
    { name: "row", type: "dict[str, any]" },
  ],
  async *generate(ctx, inputs) {
    const rows = workspaceOf(ctx).has(`sqlite:${asText(inputs.database_name)}`) ? await selectRows(ctx, inputs) : [];
    for (const row of rows) yield { handle: "row", value: row };
    yield { handle: "output", value: rows };
  },
};

async function selectRows(ctx: NodeContext, inputs: NodeInputs): Promise<Record<string, unknown>[]> {
  const db = await databaseOf(ctx, asText(inputs.database_name));
  const cols = columnsOf(inputs.columns);
  let sql = `SELECT ${cols.length === 0 ? "*" : cols.map((c) => quoteId(c.name)).join(", ")} FROM ${quoteId(asText(inputs.table_name))}`;
  if (asText(inputs.where)) sql += ` WHERE ${asText(inputs.where)}`;
  if (asText(inputs.order_by)) sql += ` ORDER BY ${asText(inputs.order_by)}`;
  const limit = asInt(inputs.limit ?? 0, "limit");
  if (limit > 0) sql += ` LIMIT ${limit}`;
  return select(ctx, db, sql);
}

export const update: NodeDef = {
  kind: "process",
  type: "lib.sqlite.Update",
  title: "Update",
  description: "Update records in a SQLite table.",
  properties: [DB, TABLE("to update"), prop("data", "dict", { content: "updated" }), WHERE],
  outputs: [{ name: "output", type: "dict[str, any]" }],
  process: async (ctx, inputs) => {
    const db = await databaseOf(ctx, asText(inputs.database_name));
    const data = asDict(inputs.data);
    const keys = Object.keys(data);
    if (keys.length === 0) throw new NodeError("data is empty: nothing to update");
    let sql = `UPDATE ${quoteId(asText(inputs.table_name))} SET ${keys.map((k) => `${quoteId(k)} = ?`).join(", ")}`;
    if (asText(inputs.where)) sql += ` WHERE ${asText(inputs.where)}`;
    run(
      db,
      sql,
      keys.map((k) => sqlValue(data[k])),
    );
    const n = db.getRowsModified();
    return { output: { rows_affected: n, message: `Updated ${n} record(s)` } };
  },
};

export const deleteRows: NodeDef = {
  kind: "process",
  type: "lib.sqlite.Delete",
  title: "Delete",
  description: "Delete records from a SQLite table (a WHERE clause is required).",
  properties: [DB, TABLE("to delete from"), WHERE],
  outputs: [{ name: "output", type: "dict[str, any]" }],
  process: async (ctx, inputs) => {
    if (!asText(inputs.where))
      throw new NodeError("WHERE clause is required for DELETE operations to prevent accidental data loss");
    const db = await databaseOf(ctx, asText(inputs.database_name));
    run(db, `DELETE FROM ${quoteId(asText(inputs.table_name))} WHERE ${asText(inputs.where)}`);
    const n = db.getRowsModified();
    return { output: { rows_affected: n, message: `Deleted ${n} record(s)` } };
  },
};

export const executeSql: NodeDef = {
  kind: "process",
  type: "lib.sqlite.ExecuteSQL",
  title: "Execute SQL",
  description: "Execute a SQL statement with parameters on the job's database.",
  properties: [DB, prop("sql", "str", "SELECT * FROM flashcards"), prop("parameters", "list", [])],
  outputs: [{ name: "output", type: "dict[str, any]" }],
  process: async (ctx, inputs) => {
    const db = await databaseOf(ctx, asText(inputs.database_name));
    const sql = asText(inputs.sql);
    const params = asList(inputs.parameters).map(sqlValue);
    if (/^\s*(select|pragma|with)\b/i.test(sql)) {
      const rows = select(ctx, db, sql, params);
      return { output: { rows, count: rows.length } };
    }
    run(db, sql, params);
    const n = db.getRowsModified();
    return { output: { rows_affected: n, message: `Query executed successfully, ${n} row(s) affected` } };
  },
};

export const SQLITE_NODES: readonly NodeDef[] = [createTable, insert, query, update, deleteRows, executeSql];
