/**
 * Small helpers shared by the node library: property metadata builders and the value coercions every node
 * uses to read its inputs. Coercions throw `NodeError` naming the property, so a bad value fails the run with
 * a message the user can act on instead of producing `NaN` or `"[object Object]"` downstream.
 */
import { type PropertyMetadata, withoutBom } from "../../protocol/index.js";
import { RE2JS } from "re2js";
import { NodeError, type NodeInputs } from "../engine/types.js";

export { capDict, capList, capString, capStringLength } from "../engine/limits.js";

/** One declared property. `extra` carries `description`, `min`, `max`, `values`, `required`. */
export function prop(
  name: string,
  type: string,
  dflt: unknown,
  extra: Omit<PropertyMetadata, "name" | "type" | "default"> = {},
): PropertyMetadata {
  return { name, type, default: dflt, ...extra };
}

/** An `enum` property; its default must be one of `values`. */
export function enumProp(
  name: string,
  values: readonly string[],
  dflt: string,
  description?: string,
): PropertyMetadata {
  return { name, type: "enum", default: dflt, values: [...values], ...(description ? { description } : {}) };
}

/** The usual single output handle, `output`. */
export function output(type: string): { name: string; type: string }[] {
  return [{ name: "output", type }];
}

function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  try {
    const json = JSON.stringify(value);
    if (json === undefined) return String(value);
    return json.length > 80 ? `${json.slice(0, 77)}...` : json;
  } catch {
    return String(value);
  }
}

/**
 * Text form of any value: strings as they are, `null`/`undefined` as "", lists and objects as JSON
 * (NodeTool's final `ToString` does the same rather than JavaScript's `"a,b"` / `"[object Object]"`); bytes (a
 * file's) as their text (`decodeText`).
 */
export function asText(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (value instanceof Uint8Array) return decodeText(value);
  if (typeof value === "object") {
    try {
      return JSON.stringify(value) ?? "";
    } catch {
      return String(value);
    }
  }
  return String(value);
}

/** A finite number; numeric strings and booleans are accepted, anything else fails naming `name`. */
export function asNumber(value: unknown, name: string): number {
  let n: number = Number.NaN;
  if (typeof value === "number") n = value;
  else if (typeof value === "boolean") n = value ? 1 : 0;
  else if (typeof value === "string" && value.trim() !== "") n = Number(value);
  // NaN and ±Infinity arrive only from a bug upstream or a bad param; name it here rather than propagate it.
  if (!Number.isFinite(n)) throw new NodeError(`${name} must be a number, got ${describe(value)}`);
  return n;
}

/** An integer: a number truncated toward zero, as Python's `int()` does. */
export function asInt(value: unknown, name: string): number {
  return Math.trunc(asNumber(value, name));
}

/** A boolean; the strings "false", "0" and "" are false (a command line passes text). */
export function asBool(value: unknown): boolean {
  if (typeof value === "string") {
    const v = value.trim().toLowerCase();
    return !(v === "" || v === "false" || v === "0" || v === "no");
  }
  return Boolean(value);
}

/** A list: arrays as they are, `null`/`undefined` as `[]`, any other value as a one-item list (NodeTool). */
export function asList(value: unknown): unknown[] {
  if (Array.isArray(value)) return value;
  if (value === null || value === undefined) return [];
  return [value];
}

/** A plain object; anything else is `{}` as in NodeTool's `asRecord`. */
export function asDict(value: unknown): Record<string, unknown> {
  if (value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Uint8Array)) {
    return value as Record<string, unknown>;
  }
  return {};
}

/** A list whose items must all be finite numbers (Sum, Average, Minimum, Maximum). */
export function asNumberList(value: unknown, name: string): number[] {
  const list = asList(value);
  return list.map((v, i) => {
    if (typeof v !== "number" || !Number.isFinite(v))
      throw new NodeError(`${name}[${i}] must be a number, got ${describe(v)}`);
    return v;
  });
}

/**
 * What RE2 cannot run, as users write it: each needs backtracking, which is what lets one pattern take exponential
 * time (`^(a+)+$`). Looked for only once a pattern has failed to compile, to say why in the user's terms.
 */
const UNSUPPORTED: readonly [RegExp, string][] = [
  [/\\[1-9]/, "backreferences (\\1 … \\9)"],
  [/\\k<|\(\?P=/, "named backreferences (\\k<name>, (?P=name))"],
  [/\(\?<[=!]/, "lookbehind ((?<=…), (?<!…))"],
  [/\(\?[=!]/, "lookahead ((?=…), (?!…))"],
  [/[*+?}][+]/, "possessive quantifiers (a++, a*+)"],
  [/\(\?>/, "atomic groups ((?>…))"],
];

/**
 * Compiles a user regular expression for the linear-time engine RE2 (`re2js`): matching takes time linear in the
 * text whatever the pattern, so no pattern can hold a run. Python's `(?P<name>…)` is RE2 syntax. A pattern RE2
 * cannot express, or a bad one, is the user's error: a `NodeError` naming the construct.
 */
export function compileRegex(pattern: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (err) {
    const construct = UNSUPPORTED.find(([re]) => re.test(pattern))?.[1];
    if (construct) {
      throw new NodeError(
        `regular expression ${JSON.stringify(pattern.slice(0, 200))} uses ${construct}, which the linear-time engine (RE2) does not support`,
      );
    }
    throw new NodeError(
      `invalid regular expression ${JSON.stringify(pattern.slice(0, 200))}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/** Structural equality for JSON-like values (Python `==` on lists and dicts). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  const rb = b as Record<string, unknown>;
  const ra = a as Record<string, unknown>;
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(rb, k) && deepEqual(ra[k], rb[k]));
}

/**
 * Python `seq[start:stop:step]` over a list, with NodeTool's convention that `stop = 0` means "to the end"
 * (and, for a negative step, `start = 0` means "from the end"), so the defaults 0/0/-1 reverse the list.
 */
export function pySlice<T>(items: readonly T[], start: number, stop: number, step: number): T[] {
  if (step === 0) throw new NodeError("slice step cannot be zero");
  const len = items.length;
  const out: T[] = [];
  if (step > 0) {
    const s = start < 0 ? Math.max(0, len + start) : Math.min(start, len);
    const e = stop === 0 ? len : stop < 0 ? Math.max(0, len + stop) : Math.min(stop, len);
    for (let i = s; i < e; i += step) out.push(items[i]!);
  } else {
    const s = start === 0 ? len - 1 : start < 0 ? len + start : Math.min(start, len - 1);
    const e = stop === 0 ? -1 : stop < 0 ? Math.max(-1, len + stop) : stop;
    for (let i = s; i > e; i += step) if (i >= 0 && i < len) out.push(items[i]!);
  }
  return out;
}

/** Inputs that are not declared properties: the values of a dynamic node's undeclared handles. */
export function dynamicInputs(inputs: NodeInputs, properties: readonly PropertyMetadata[]): Record<string, unknown> {
  const declared = new Set(properties.map((p) => p.name));
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(inputs)) if (!declared.has(k)) out[k] = inputs[k];
  return out;
}

/** Lets timers and sockets run during a long synchronous-looking loop (async generators only yield microtasks). */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** File signatures of binary formats a user may pass where text is wanted, to name them in the error. */
const BINARY_SIGNATURES: readonly [number[], string][] = [
  [[0x89, 0x50, 0x4e, 0x47], "a PNG image"],
  [[0xff, 0xd8, 0xff], "a JPEG image"],
  [[0x47, 0x49, 0x46, 0x38], "a GIF image"],
  [[0x25, 0x50, 0x44, 0x46], "a PDF document"],
  [[0x50, 0x4b, 0x03, 0x04], "a ZIP archive (an .xlsx or .docx file is one)"],
  [[0x52, 0x49, 0x46, 0x46], "a RIFF file (WAV, WebP, AVI)"],
];

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** What binary format `b` is, or null when it looks like text (no signature, no NUL in its first 8 KiB). */
function binaryKind(b: Uint8Array): string | null {
  const sig = BINARY_SIGNATURES.find(([magic]) => magic.every((x, i) => b[i] === x));
  if (sig) return sig[1];
  return b.subarray(0, 8192).includes(0) ? "binary data" : null;
}

/**
 * The text of a file's bytes. A byte-order mark decides the encoding and is dropped: UTF-8, UTF-16LE (Excel's
 * "Unicode text", PowerShell), UTF-16BE. Without one the bytes are UTF-8, or Windows-1252 when they are not valid
 * UTF-8 (Excel's plain "CSV"; Python would fail on them, but é read as é is what the user wants). Binary data
 * (an image, a PDF, an .xlsx) fails naming what it is.
 */
export function decodeText(b: Uint8Array, label = "the text"): string {
  if (b[0] === 0xff && b[1] === 0xfe) return new TextDecoder("utf-16le").decode(b);
  if (b[0] === 0xfe && b[1] === 0xff) return new TextDecoder("utf-16be").decode(b);
  const kind = b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf ? null : binaryKind(b);
  if (kind) throw new NodeError(`${label} is ${kind} (${b.byteLength} bytes), not text`);
  try {
    return UTF8.decode(b);
  } catch {
    return new TextDecoder("windows-1252").decode(b);
  }
}

/** JSON tokens that can hold the words below: strings (skipped) and Python's NaN / Infinity (replaced). */
const PY_NON_FINITE = /"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g;

/**
 * The value of JSON text, as Python's `json.loads` reads it: a leading BOM is ignored, and NaN / Infinity (which
 * Python and pandas write) become null, as JSON has no such numbers. Invalid JSON fails naming `label`.
 */
export function parseJsonText(text: string, label = "the text"): unknown {
  const src = withoutBom(text);
  try {
    return JSON.parse(src) as unknown;
  } catch (err) {
    const fixed = src.replace(PY_NON_FINITE, (tok) => (tok.startsWith('"') ? tok : "null"));
    if (fixed !== src) {
      try {
        return JSON.parse(fixed) as unknown;
      } catch {
        // fall through: report the error in the text as given
      }
    }
    throw new NodeError(`invalid JSON in ${label}: ${err instanceof Error ? err.message.slice(0, 200) : String(err)}`);
  }
}
