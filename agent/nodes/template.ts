/**
 * Jinja-style placeholder rendering for FormatText, Template and Prompt, after NodeTool's `renderTemplate`
 * (`packages/nodes-utils/src/template.ts`): `{{ name }}` and `{{ name|filter|filter(arg) }}`, plus the
 * single-brace `{name}` form without filters. Placeholders naming an absent variable are left intact, as in
 * NodeTool, unless a `default(...)` filter supplies a value. This is substitution, not Jinja: no blocks,
 * loops or expressions.
 */
import { DEFAULT_NODE_LIMITS, NodeError, type NodeLimits } from "../engine/types.js";
import { capString, capStringLength } from "../engine/limits.js";
import { asText } from "./util.js";

type FilterArg = string | number | boolean | null;
type Filter = (value: unknown, args: FilterArg[], limits: NodeLimits) => unknown;

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
  replace: (v, [from, to], limits) => {
    const s = asText(v);
    const [f, t] = [asText(from), asText(to)];
    // A growing replacement multiplies the text: its size is known from the count of matches, before it is built.
    if (f !== "" && t.length > f.length) {
      let n = 0;
      for (let at = s.indexOf(f); at >= 0; at = s.indexOf(f, at + f.length)) n++;
      capStringLength(limits, s.length + n * (t.length - f.length));
    }
    return capString(limits, s.replaceAll(f, t));
  },
  join: (v, [sep], limits) => {
    if (!Array.isArray(v)) return asText(v);
    const parts = v.map(asText);
    const s = asText(sep ?? "");
    capStringLength(
      limits,
      parts.reduce((n, p) => n + p.length, Math.max(0, parts.length - 1) * s.length),
    );
    return parts.join(s);
  },
  length: (v) =>
    Array.isArray(v) || typeof v === "string"
      ? v.length
      : v !== null && typeof v === "object"
        ? Object.keys(v).length
        : asText(v).length,
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
  if (Object.hasOwn(vars, name)) return { found: true, value: vars[name] };
  const path = name.split(".");
  let cur: unknown = vars;
  for (const key of path) {
    if (cur === null || typeof cur !== "object" || !Object.hasOwn(cur, key)) return { found: false, value: undefined };
    cur = (cur as Record<string, unknown>)[key];
  }
  return { found: true, value: cur };
}

/**
 * Renders `template` against `vars`. Throws `NodeError` for an unknown filter (NodeTool silently skips it; a
 * typo that drops a filter is worse than a clear failure).
 */
export function renderTemplate(
  template: string,
  vars: Record<string, unknown>,
  limits: NodeLimits = DEFAULT_NODE_LIMITS,
): string {
  // The output is the template plus what each placeholder adds: counted as they are, so many copies of a large
  // value fail before the whole is built.
  let units = template.length;
  const add = (match: string, s: string): string => {
    capStringLength(limits, (units += s.length - match.length), "the rendered text");
    return s;
  };
  // One pass over both forms, so a substituted value that itself contains braces is never expanded again. After the
  // last `}}` no `{{ … }}` can close: only the single form is looked for there (a `{{` with no `}}` after it would
  // otherwise be scanned to the end from every `{{`, quadratic in the template).
  const close = template.lastIndexOf("}}");
  const head = close < 0 ? "" : template.slice(0, close + 2);
  const tail = close < 0 ? template : template.slice(close + 2);
  const placeholder = (match: string, expr: string | undefined, single: string | undefined): string => {
    if (single !== undefined) {
      return Object.hasOwn(vars, single) ? add(match, asText(vars[single])) : match;
    }
    const [name = "", ...rawFilters] = splitTopLevel(expr ?? "", "|");
    const filters = rawFilters.map(parseFilter);
    for (const f of filters) {
      if (!Object.hasOwn(FILTERS, f.name)) {
        throw new NodeError(
          `unknown template filter "${f.name}" in ${match} (known: ${Object.keys(FILTERS).join(", ")})`,
        );
      }
    }
    const { found, value } = lookup(vars, name);
    if (!found && !filters.some((f) => f.name === "default")) return match;
    return add(match, asText(filters.reduce((v, f) => FILTERS[f.name]!(v, f.args, limits), value)));
  };
  const out =
    head.replace(/\{\{([\s\S]*?)\}\}|(?<!\{)\{([A-Za-z_][\w.]*)\}(?!\})/g, placeholder) +
    tail.replace(/(?<!\{)\{([A-Za-z_][\w.]*)\}(?!\})/g, (match, single: string) =>
      placeholder(match, undefined, single),
    );
  return capString(limits, out, "the rendered text");
}
