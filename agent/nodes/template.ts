/**
 * Jinja-style placeholder rendering for FormatText, Template and Prompt, after NodeTool's `renderTemplate`
 * (`packages/nodes-utils/src/template.ts`): `{{ name }}` and `{{ name|filter|filter(arg) }}`, plus the
 * single-brace `{name}` form without filters. Placeholders naming an absent variable are left intact, as in
 * NodeTool, unless a `default(...)` filter supplies a value. This is substitution, not Jinja: no blocks,
 * loops or expressions.
 */
import { NodeError } from "../engine/types.js";
import { asText } from "./util.js";

type FilterArg = string | number | boolean | null;
type Filter = (value: unknown, args: FilterArg[]) => unknown;

function titleCase(s: string): string {
  return s.replace(/\w\S*/g, (w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase());
}

function capitalize(s: string): string {
  return s.length === 0 ? "" : s.charAt(0).toUpperCase() + s.slice(1).toLowerCase();
}

function compareForSort(a: unknown, b: unknown): number {
  if (typeof a === "number" && typeof b === "number") return a - b;
  const sa = asText(a);
  const sb = asText(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

/** The filters NodeTool documents for FormatText/Template (upper … join), by name. */
const FILTERS: Readonly<Record<string, Filter>> = {
  upper: (v) => asText(v).toUpperCase(),
  lower: (v) => asText(v).toLowerCase(),
  capitalize: (v) => capitalize(asText(v)),
  title: (v) => titleCase(asText(v)),
  trim: (v) => asText(v).trim(),
  // NodeTool cuts at n and appends "..." (Jinja would also look for a word boundary).
  truncate: (v, [n]) => {
    const s = asText(v);
    const limit = typeof n === "number" ? Math.max(0, Math.trunc(n)) : 255;
    return s.length <= limit ? s : `${s.slice(0, limit)}...`;
  },
  default: (v, [fallback]) => (v === undefined || v === null || v === "" ? (fallback ?? "") : v),
  replace: (v, [from, to]) => asText(v).replaceAll(asText(from), asText(to)),
  join: (v, [sep]) => (Array.isArray(v) ? v.map(asText).join(asText(sep ?? "")) : asText(v)),
  length: (v) => (Array.isArray(v) || typeof v === "string" ? v.length : v !== null && typeof v === "object" ? Object.keys(v).length : asText(v).length),
  first: (v) => (Array.isArray(v) ? v[0] : asText(v).charAt(0)),
  last: (v) => (Array.isArray(v) ? v[v.length - 1] : asText(v).slice(-1)),
  sort: (v) => (Array.isArray(v) ? [...v].sort(compareForSort) : v),
};

/** Splits `s` on `sep` outside quotes and parentheses. */
function splitTopLevel(s: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | null = null;
  let cur = "";
  for (const ch of s) {
    if (quote) {
      if (ch === quote) quote = null;
    } else if (ch === "'" || ch === '"') quote = ch;
    else if (ch === "(") depth++;
    else if (ch === ")") depth--;
    else if (ch === sep && depth === 0) {
      parts.push(cur);
      cur = "";
      continue;
    }
    cur += ch;
  }
  parts.push(cur);
  return parts.map((p) => p.trim());
}

function parseArg(raw: string): FilterArg {
  const s = raw.trim();
  if (s.length >= 2 && (s[0] === "'" || s[0] === '"') && s[s.length - 1] === s[0]) return s.slice(1, -1);
  if (s === "true" || s === "True") return true;
  if (s === "false" || s === "False") return false;
  if (s === "none" || s === "None") return null;
  if (s !== "" && Number.isFinite(Number(s))) return Number(s);
  return s;
}

interface FilterCall {
  name: string;
  args: FilterArg[];
}

function parseFilter(raw: string): FilterCall {
  const m = /^([A-Za-z_]\w*)\s*(?:\(([\s\S]*)\))?$/.exec(raw);
  if (!m) throw new NodeError(`bad template filter ${JSON.stringify(raw)}`);
  const args = m[2] !== undefined && m[2].trim() !== "" ? splitTopLevel(m[2], ",").map(parseArg) : [];
  return { name: m[1]!, args };
}

/** `a.b.c` looks into nested objects when no variable is literally named `a.b.c`. */
function lookup(vars: Record<string, unknown>, name: string): { found: boolean; value: unknown } {
  if (Object.prototype.hasOwnProperty.call(vars, name)) return { found: true, value: vars[name] };
  const path = name.split(".");
  let cur: unknown = vars;
  for (const key of path) {
    if (cur === null || typeof cur !== "object" || !Object.prototype.hasOwnProperty.call(cur, key)) return { found: false, value: undefined };
    cur = (cur as Record<string, unknown>)[key];
  }
  return { found: true, value: cur };
}

/**
 * Renders `template` against `vars`. Throws `NodeError` for an unknown filter (NodeTool silently skips it; a
 * typo that drops a filter is worse than a clear failure).
 */
export function renderTemplate(template: string, vars: Record<string, unknown>): string {
  // One pass over both forms, so a substituted value that itself contains braces is never expanded again.
  return template.replace(/\{\{([\s\S]*?)\}\}|(?<!\{)\{([A-Za-z_][\w.]*)\}(?!\})/g, (match, expr: string | undefined, single: string | undefined) => {
    if (single !== undefined) {
      return Object.prototype.hasOwnProperty.call(vars, single) ? asText(vars[single]) : match;
    }
    const [name = "", ...rawFilters] = splitTopLevel(expr ?? "", "|");
    const filters = rawFilters.map(parseFilter);
    for (const f of filters) {
      if (!Object.prototype.hasOwnProperty.call(FILTERS, f.name)) {
        throw new NodeError(`unknown template filter "${f.name}" in ${match} (known: ${Object.keys(FILTERS).join(", ")})`);
      }
    }
    const { found, value } = lookup(vars, name);
    if (!found && !filters.some((f) => f.name === "default")) return match;
    return asText(filters.reduce((v, f) => FILTERS[f.name]!(v, f.args), value));
  });
}
