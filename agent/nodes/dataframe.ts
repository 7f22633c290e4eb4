/**
 * NodeTool's dataframe value (`{type: "dataframe", columns: [{name, data_type}], data: [[row]…]}`), CSV text, and the
 * row conditions of `nodetool.data.Filter` (pandas `DataFrame.query` syntax: comparisons, chained comparisons, `and`
 * `or` `not`, `in` / `not in` lists, `` `quoted column` ``), evaluated by a small parser (no `eval`).
 */
import { NodeError } from "../engine/types.js";
import { withoutBom } from "../../protocol/index.js";
import type { ColumnDef } from "./generators.js";

export interface Dataframe {
  type: "dataframe";
  columns: ColumnDef[];
  data: unknown[][];
}

/** The dataframe in `v` (NodeTool's shape); an unset one (`columns: null`) is empty. */
export function dataframeOf(v: unknown, name = "dataframe"): Dataframe {
  const df = v as { columns?: unknown; data?: unknown } | null;
  if (df === null || typeof df !== "object") throw new NodeError(`${name} must be a dataframe`);
  const columns = Array.isArray(df.columns) ? (df.columns as ColumnDef[]) : [];
  const data = Array.isArray(df.data) ? (df.data as unknown[][]) : [];
  if (!data.every(Array.isArray)) throw new NodeError(`${name}.data must be a list of rows (lists)`);
  return { type: "dataframe", columns, data };
}

/** The data type NodeTool gives a column from its values. */
function typeOfValues(values: unknown[]): string {
  const present = values.filter((v) => v !== null && v !== undefined);
  if (present.length === 0) return "object";
  if (present.every((v) => typeof v === "number" && Number.isInteger(v))) return "int";
  if (present.every((v) => typeof v === "number")) return "float";
  if (present.every((v) => typeof v === "string")) return "string";
  return "object";
}

/** A dataframe of `rows` (objects): columns in first-seen order, missing cells null. */
export function dataframeFromRecords(rows: Record<string, unknown>[]): Dataframe {
  const names: string[] = [];
  const seen = new Set<string>();
  for (const r of rows)
    for (const k of Object.keys(r))
      if (!seen.has(k)) {
        seen.add(k);
        names.push(k);
      }
  const data = rows.map((r) => names.map((n) => (Object.hasOwn(r, n) ? r[n] : null)));
  const columns = names.map((name, i) => ({ name, data_type: typeOfValues(data.map((row) => row[i])) }));
  return { type: "dataframe", columns, data };
}

/** The rows of a dataframe as objects (column name → cell). */
export function recordsOf(df: Dataframe): Record<string, unknown>[] {
  return df.data.map((row) => Object.fromEntries(df.columns.map((c, i) => [c.name, row[i] ?? null])));
}

/**
 * A CSV cell as pandas reads it: integers and decimals as numbers, empty as null, the rest as text. An integer past
 * 2^53 stays text: a JavaScript number would change its digits (an ID, an account number), pandas keeps them.
 */
function csvValue(s: string): unknown {
  if (s === "") return null;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) return s;
  const n = Number(s);
  return /^[-+]?\d+$/.test(s) && !Number.isSafeInteger(n) ? s : n;
}

/**
 * The field separator: a comma, or a semicolon or tab when the header line has one and no comma (European Excel
 * writes `;`; pandas would need `sep=";"`, which ImportCSV has no property for).
 */
export function csvDelimiter(text: string): string {
  const nl = text.search(/[\r\n]/);
  const header = nl < 0 ? text : text.slice(0, nl);
  if (header.includes(",")) return ",";
  if (header.includes(";")) return ";";
  return header.includes("\t") ? "\t" : ",";
}

/** One field and what ends it: a quoted field (`""` is a quote) or an unquoted one, then the separator or a line end. */
function fieldPattern(sep: string): RegExp {
  const d = sep === "\t" ? "\\t" : sep;
  return new RegExp(`(?:"([^"]*(?:""[^"]*)*)"|([^"${d}\\r\\n][^${d}\\r\\n]*)?)(${d}|\\r\\n|\\n|\\r|$)`, "y");
}

/**
 * RFC 4180 CSV (quoted fields with separators, `""` and line breaks; CRLF or LF) as the header's names and the rows'
 * values, in pandas' terms: blank lines skipped, a short row filled with null, a long one or an unclosed quote
 * refused naming the row. More than `maxRows` rows fail as soon as they are seen.
 */
export function parseCsv(text: string, maxRows: number): { header: string[]; rows: unknown[][] } {
  const sep = csvDelimiter(text);
  const re = fieldPattern(sep);
  let header: string[] | null = null;
  const rows: unknown[][] = [];
  let row: unknown[] = [];
  let at = 0;
  while (at < text.length || row.length > 0) {
    re.lastIndex = at;
    const m = re.exec(text);
    const line = rows.length + (header ? 2 : 1);
    if (!m) {
      throw new NodeError(
        `CSV row ${line}: a quoted field is never closed, or has text after its closing quote (near ${JSON.stringify(text.slice(at, at + 30))})`,
      );
    }
    at = re.lastIndex;
    const quoted = m[1] !== undefined;
    if (header === null) row.push(quoted ? m[1]!.replaceAll('""', '"') : (m[2] ?? ""));
    else row.push(quoted ? m[1]!.replaceAll('""', '"') : csvValue(m[2] ?? ""));
    if (m[3] === sep) continue;
    if (row.length === 1 && !quoted && (m[2] ?? "") === "") row = [];
    else if (header === null) header = row as string[];
    else {
      if (row.length > header.length)
        throw new NodeError(`CSV row ${line} has ${row.length} fields, the header has ${header.length}`);
      if (rows.length >= maxRows)
        throw new NodeError(`the CSV has more than ${maxRows} rows, over the agent's nodeListMaxItems (${maxRows})`);
      rows.push(row);
    }
    row = [];
  }
  return { header: header ?? [], rows };
}

/** Column names as pandas gives them: an empty one is `Unnamed: i`, a repeated one `name.1`, `name.2`, … */
function columnNames(header: string[]): string[] {
  const seen = new Map<string, number>();
  return header.map((raw, i) => {
    const name = raw === "" ? `Unnamed: ${i}` : raw;
    const n = seen.get(name) ?? 0;
    seen.set(name, n + 1);
    return n === 0 ? name : `${name}.${n}`;
  });
}

/** A dataframe from CSV text whose first row is the header (a leading BOM ignored); at most `maxRows` rows. */
export function dataframeFromCsv(text: string, maxRows = Number.POSITIVE_INFINITY): Dataframe {
  const { header, rows } = parseCsv(withoutBom(text), maxRows);
  if (header.length === 0) throw new NodeError("the CSV data is empty (no header row)");
  const names = columnNames(header);
  const data = rows.map((r) => (r.length < names.length ? names.map((_, i) => r[i] ?? null) : r));
  const columns = names.map((name, i) => ({ name, data_type: typeOfValues(data.map((row) => row[i])) }));
  return { type: "dataframe", columns, data };
}

// ---- Filter conditions -------------------------------------------------------------------------------------------

type Tok = { k: "num" | "str" | "id" | "op"; v: string };

function tokenize(src: string): Tok[] {
  const re =
    /\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|`([^`]*)`|([A-Za-z_]\w*)|(==|!=|<=|>=|[<>()[\],&|~]))/y;
  const out: Tok[] = [];
  let at = 0;
  while (at < src.length) {
    if (/^\s*$/.test(src.slice(at))) break;
    re.lastIndex = at;
    const m = re.exec(src);
    if (!m) throw new NodeError(`condition: cannot read ${JSON.stringify(src.slice(at, at + 20))}`);
    at = re.lastIndex;
    if (m[1] !== undefined) out.push({ k: "num", v: m[1] });
    else if (m[2] !== undefined || m[3] !== undefined)
      out.push({ k: "str", v: (m[2] ?? m[3])!.replace(/\\(.)/g, "$1") });
    else if (m[4] !== undefined) out.push({ k: "id", v: m[4] });
    else if (m[5] !== undefined) out.push({ k: ["and", "or", "not", "in"].includes(m[5]) ? "op" : "id", v: m[5] });
    else out.push({ k: "op", v: m[6]! });
  }
  return out;
}

type Row = Record<string, unknown>;
type Expr = (row: Row) => unknown;

const CMP: Record<string, (a: unknown, b: unknown) => boolean> = {
  "==": (a, b) => a === b,
  "!=": (a, b) => a !== b,
  "<": (a, b) => (a as number) < (b as number),
  "<=": (a, b) => (a as number) <= (b as number),
  ">": (a, b) => (a as number) > (b as number),
  ">=": (a, b) => (a as number) >= (b as number),
};

/** Compiles a pandas-style row condition; unknown column names fail when compiled against `columns`. */
export function compileCondition(src: string, columns: readonly string[]): (row: Row) => boolean {
  const toks = tokenize(src);
  let i = 0;
  const peek = (v?: string) => (v === undefined ? toks[i] : toks[i]?.k === "op" && toks[i]?.v === v);
  const take = (v: string) => {
    if (!peek(v)) throw new NodeError(`condition: expected "${v}" at ${JSON.stringify(toks[i]?.v ?? "the end")}`);
    i++;
  };
  const or = (): Expr => {
    let l = and();
    while (peek("or") || peek("|")) {
      i++;
      const a = l;
      const b = and();
      l = (r) => Boolean(a(r)) || Boolean(b(r));
    }
    return l;
  };
  const and = (): Expr => {
    let l = not();
    while (peek("and") || peek("&")) {
      i++;
      const a = l;
      const b = not();
      l = (r) => Boolean(a(r)) && Boolean(b(r));
    }
    return l;
  };
  const not = (): Expr => {
    if (peek("not") || peek("~")) {
      i++;
      const e = not();
      return (r) => !e(r);
    }
    return comparison();
  };
  const comparison = (): Expr => {
    const first = atom();
    const parts: { op: string; e: Expr }[] = [];
    for (;;) {
      const t = toks[i];
      if (t?.k === "op" && t.v in CMP) i++, parts.push({ op: t.v, e: atom() });
      else if (peek("in")) i++, parts.push({ op: "in", e: atom() });
      else if (peek("not") && toks[i + 1]?.v === "in") (i += 2), parts.push({ op: "not in", e: atom() });
      else break;
    }
    if (parts.length === 0) return first;
    return (r) => {
      let left = first(r);
      for (const { op, e } of parts) {
        const right = e(r);
        const ok =
          op === "in" || op === "not in"
            ? (Array.isArray(right) && right.includes(left)) === (op === "in")
            : CMP[op]!(left, right);
        if (!ok) return false;
        left = right;
      }
      return true;
    };
  };
  const atom = (): Expr => {
    const t = toks[i++];
    if (!t) throw new NodeError("condition: ends too early");
    if (t.k === "num") return () => Number(t.v);
    if (t.k === "str") return () => t.v;
    if (t.k === "op" && t.v === "(") {
      const e = or();
      take(")");
      return e;
    }
    if (t.k === "op" && t.v === "[") {
      const items: Expr[] = [];
      while (!peek("]")) {
        items.push(atom());
        if (!peek("]")) take(",");
      }
      take("]");
      return (r) => items.map((e) => e(r));
    }
    if (t.k === "id") {
      if (t.v === "True" || t.v === "False") return () => t.v === "True";
      if (t.v === "None") return () => null;
      if (!columns.includes(t.v)) throw new NodeError(`condition: no column "${t.v}" (columns: ${columns.join(", ")})`);
      return (r) => r[t.v];
    }
    throw new NodeError(`condition: unexpected "${t.v}"`);
  };
  const e = or();
  if (i < toks.length) throw new NodeError(`condition: unexpected "${toks[i]!.v}"`);
  return (row) => Boolean(e(row));
}
