/**
 * Text nodes (`nodetool.text.*`). NodeTool has since folded most of these into its sandboxed Code node and
 * FormatText into Prompt (`NODE_TYPE_MIGRATIONS` in its protocol package); saved graphs still name them, so
 * they run here natively with the behaviour of NodeTool's last native implementations.
 */
import {
  NodeError,
  type NodeContext,
  type NodeDef,
  type NodeInputs,
  type ProcessNodeDef,
  type StreamingInputNodeDef,
} from "../engine/types.js";
import { CODEC_LIMITS, jsonTooDeep, type PropertyMetadata } from "../../protocol/index.js";
import { renderTemplate } from "./template.js";
import {
  asBool,
  asDict,
  asInt,
  asList,
  asText,
  capList,
  capString,
  capStringLength,
  compileRegex,
  dynamicInputs,
  enumProp,
  output,
  parseJsonText,
  prop,
  pySlice,
} from "./util.js";
import { readTextValue } from "./files.js";

const TEXT = prop("text", "str", "");

function textNode(
  name: string,
  title: string,
  description: string,
  properties: PropertyMetadata[],
  outType: string,
  fn: (inputs: NodeInputs, ctx: NodeContext) => unknown,
  extra: Partial<ProcessNodeDef> = {},
): ProcessNodeDef {
  return {
    kind: "process",
    type: `nodetool.text.${name}`,
    title,
    description,
    properties,
    outputs: output(outType),
    process: async (ctx, inputs) => ({ output: fn(await withFileTexts(ctx, inputs, properties), ctx) }),
    ...extra,
  };
}

/** `inputs` with each text property that holds a file (bytes, a text or document reference) read as its text. */
async function withFileTexts(ctx: NodeContext, inputs: NodeInputs, properties: readonly PropertyMetadata[]) {
  let out = inputs;
  for (const p of properties) {
    const v = inputs[p.name];
    if (p.type !== "str" || v === null || typeof v !== "object") continue;
    out = { ...out, [p.name]: await readTextValue(ctx, v, p.name) };
  }
  return out;
}

const text = (inputs: NodeInputs, key = "text") => asText(inputs[key]);

/** `parts` joined by `sep`, failing before it is built when it would be over `nodeStringMaxBytes`. */
function cappedJoin(ctx: NodeContext, parts: readonly string[], sep: string): string {
  let units = Math.max(0, parts.length - 1) * sep.length;
  for (const p of parts) units += p.length;
  capStringLength(ctx.limits, units);
  return capString(ctx.limits, parts.join(sep));
}

/** `str(value)`, or a quoted JSON form with mode "repr". */
export const toString = textNode(
  "ToString",
  "To String",
  "Converts any input value to its string representation.",
  [
    prop("value", "any", ""),
    enumProp("mode", ["str", "repr"], "str", "Conversion mode: plain text or a quoted, JSON-style representation."),
  ],
  "str",
  (i) => (i.mode === "repr" ? (JSON.stringify(i.value ?? null) ?? "") : asText(i.value)),
);

/**
 * a + b + every dynamic input, in order; list values are flattened. NodeTool's current Concat is purely dynamic;
 * `a` and `b` stay declared so graphs saved with them keep their order.
 */
export const concat = textNode(
  "Concat",
  "Concatenate Text",
  "Concatenates text inputs into a single output. Add more inputs dynamically; lists are joined item by item.",
  [prop("a", "str", ""), prop("b", "str", "")],
  "str",
  (i, ctx) =>
    cappedJoin(
      ctx,
      Object.values(i)
        .flatMap((v) => (Array.isArray(v) ? v : [v]))
        .map(asText),
      "",
    ),
  { isDynamic: true },
);

/** strings joined by separator. */
export const join = textNode(
  "Join",
  "Join",
  "Joins a list of strings into a single string using a specified separator.",
  [
    prop("strings", "list", [], { description: "The list of strings to join." }),
    prop("separator", "str", "", { description: "Separator between items." }),
  ],
  "str",
  (i, ctx) => cappedJoin(ctx, asList(i.strings).map(asText), text(i, "separator")),
);

const FILTER_HELP =
  "Available filters: upper, lower, capitalize, title, trim, truncate(n), default(value), replace(old, new), join(sep), length, first, last, sort.";

function templateNode(
  name: string,
  title: string,
  description: string,
  field: PropertyMetadata,
  vars: (inputs: NodeInputs, props: PropertyMetadata[]) => Record<string, unknown>,
): ProcessNodeDef {
  const properties =
    name === "Template"
      ? [field, prop("values", "dict", {}, { description: "Template variables, in addition to the dynamic inputs." })]
      : [field];
  return textNode(
    name,
    title,
    description,
    properties,
    "str",
    (i, ctx) => renderTemplate(text(i, field.name), vars(i, properties), ctx.limits),
    { isDynamic: true },
  );
}

/** Renders `template`; the values of undeclared (dynamic) inputs are its variables. */
export const formatText = templateNode(
  "FormatText",
  "Format Text",
  `Replaces {{ name }} placeholders in a template with the node's dynamic inputs, Jinja-style: {{ name|upper }}, {{ title|truncate(20) }}. ${FILTER_HELP}`,
  prop("template", "str", "", {
    description: `Example: Hello, {{ name }} or {{ title|truncate(20) }}. ${FILTER_HELP}`,
  }),
  (i, props) => dynamicInputs(i, props),
);

/** Renders `string` with `values` and the dynamic inputs (dynamic inputs win). */
export const template = templateNode(
  "Template",
  "Template",
  `Formats a string with {{ variable }} or {variable} placeholders from its dynamic inputs and \`values\`. ${FILTER_HELP}`,
  prop("string", "str", "", { description: "Template string with {{ variable }} or {variable} placeholders." }),
  (i, props) => ({ ...asDict(i.values), ...dynamicInputs(i, props) }),
);

/**
 * NodeTool's current name for FormatText (field `prompt`). Like NodeTool it also forwards each variable on an
 * output handle of the same name, so a wired value can feed a node that wants it raw.
 */
export const promptNode: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.text.Prompt",
  title: "Prompt",
  description: `Compose a prompt string with named variables, referenced as {{ variable }} or {variable}. ${FILTER_HELP}`,
  properties: [
    prop("prompt", "str", "", { description: "Prompt text. Reference variables with {{ name }} or {name}." }),
  ],
  outputs: output("str"),
  isDynamic: true,
  process: (ctx, inputs) => {
    const vars = dynamicInputs(inputs, promptNode.properties);
    // The rendered text goes last so a variable named "output" cannot shadow it.
    return { ...vars, output: renderTemplate(text(inputs, "prompt"), vars, ctx.limits) };
  },
};

/** Every occurrence of `old` replaced by `new`. */
export const replace = textNode(
  "Replace",
  "Replace Text",
  "Replaces every occurrence of a substring in a text with another substring.",
  [TEXT, prop("old", "str", ""), prop("new", "str", "")],
  "str",
  // `new_value` is the field's name in NodeTool's last TypeScript version.
  (i, ctx) => {
    const old = text(i, "old");
    const repl = asText(i.new ?? i.new_value);
    const input = text(i);
    if (old === "") return input;
    // The result's size is known from the count of matches: a growing replacement is refused before it is built.
    if (repl.length > old.length) {
      let n = 0;
      for (let at = input.indexOf(old); at >= 0; at = input.indexOf(old, at + old.length)) n++;
      capStringLength(ctx.limits, input.length + n * (repl.length - old.length));
    }
    return capString(ctx.limits, input.replaceAll(old, repl));
  },
);

/** text split on delimiter. */
export const split = textNode(
  "Split",
  "Split Text",
  "Separates text into a list of strings based on a specified delimiter.",
  [TEXT, prop("delimiter", "str", ",")],
  "list[str]",
  (i, ctx) => {
    const parts = text(i).split(text(i, "delimiter"));
    capList(ctx.limits, parts.length);
    return parts;
  },
);

/** Windows of `length` words (split on separator), each starting `length − overlap` words after the last. */
export const chunk = textNode(
  "Chunk",
  "Split Text into Chunks",
  "Splits text into chunks of a given number of words, optionally overlapping.",
  [TEXT, prop("length", "int", 100, { min: 1, max: 1000 }), prop("overlap", "int", 0), prop("separator", "str", " ")],
  "list[str]",
  (i, ctx) => {
    const length = asInt(i.length, "length");
    const overlap = asInt(i.overlap, "overlap");
    const step = length - overlap;
    if (length < 1 || step <= 0)
      throw new NodeError(`invalid chunk parameters: length ${length} must be ≥ 1 and greater than overlap ${overlap}`);
    const separator = text(i, "separator");
    const words = separator === "" ? [...text(i)] : text(i).split(separator);
    // Overlapping windows repeat each word up to `length` times: the total is checked before any is built.
    const windows = Math.ceil(words.length / step);
    capList(ctx.limits, windows);
    capStringLength(ctx.limits, Math.min(length, words.length) * windows, "the chunks together");
    const chunks: string[] = [];
    let units = 0;
    for (let at = 0; at < words.length; at += step) {
      const c = words.slice(at, at + length).join(separator);
      capStringLength(ctx.limits, (units += c.length), "the chunks together");
      chunks.push(c);
    }
    return chunks;
  },
);

/** Whether text contains substring (or any/all/none of search_values). */
export const contains = textNode(
  "Contains",
  "Contains Text",
  "Checks if text contains a specified substring, or any, all or none of a list of substrings.",
  [
    TEXT,
    prop("substring", "str", ""),
    prop("search_values", "list[str]", [], { description: "Optional list of additional substrings to check" }),
    prop("case_sensitive", "bool", true),
    enumProp(
      "match_mode",
      ["any", "all", "none"],
      "any",
      "ANY requires one match, ALL needs every value, NONE ensures none",
    ),
  ],
  "bool",
  (i) => {
    const values = asList(i.search_values).map(asText);
    const substring = text(i, "substring");
    const targets = values.length > 0 ? values : substring !== "" ? [substring] : [];
    if (targets.length === 0) return false;
    const fold = asBool(i.case_sensitive) ? (s: string) => s : (s: string) => s.toLowerCase();
    const hay = fold(text(i));
    const hits = targets.map((t) => hay.includes(fold(t)));
    if (i.match_mode === "all") return hits.every(Boolean);
    if (i.match_mode === "none") return !hits.some(Boolean);
    return hits.some(Boolean);
  },
);

const PAIR = [
  prop("text_a", "str", ""),
  prop("text_b", "str", ""),
  prop("case_sensitive", "bool", true, { description: "Compare without lowercasing" }),
  prop("trim_whitespace", "bool", false, { description: "Strip leading/trailing whitespace before comparing" }),
];

function order(i: NodeInputs): "less" | "equal" | "greater" {
  const norm = (s: string) => {
    const t = asBool(i.trim_whitespace) ? s.trim() : s;
    return asBool(i.case_sensitive) ? t : t.toLowerCase();
  };
  const a = norm(text(i, "text_a"));
  const b = norm(text(i, "text_b"));
  return a < b ? "less" : a > b ? "greater" : "equal";
}

/** "less", "equal" or "greater" (code-unit order). */
export const compare = textNode(
  "Compare",
  "Compare Text",
  "Compares two text values and reports ordering: less, equal or greater.",
  PAIR,
  "str",
  order,
);
/** text_a equals text_b after the chosen normalisation. */
export const equals = textNode(
  "Equals",
  "Equals",
  "Checks if two text inputs are equal.",
  PAIR,
  "bool",
  (i) => order(i) === "equal",
);

/** TEXT UPPERCASE. */
export const toUppercase = textNode("ToUppercase", "To Uppercase", "Converts text to uppercase.", [TEXT], "str", (i) =>
  text(i).toUpperCase(),
);
/** text lowercase. */
export const toLowercase = textNode("ToLowercase", "To Lowercase", "Converts text to lowercase.", [TEXT], "str", (i) =>
  text(i).toLowerCase(),
);
/** Each Word Capitalised. */
export const toTitlecase = textNode(
  "ToTitlecase",
  "To Title Case",
  "Converts text to title case.",
  [TEXT],
  "str",
  (i) => text(i).replace(/\w\S*/g, (w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase()),
);
/** First character upper, the rest lower (Python's `str.capitalize`). */
export const capitalizeText = textNode(
  "CapitalizeText",
  "Capitalize Text",
  "Capitalizes the first character and lowercases the rest.",
  [TEXT],
  "str",
  (i) => {
    const t = text(i);
    return t === "" ? "" : t.charAt(0).toUpperCase() + t.slice(1).toLowerCase();
  },
);

/** Characters, words or lines in text. */
export const lengthNode = textNode(
  "Length",
  "Measure Length",
  "Measures text length as characters, words, or lines.",
  [
    TEXT,
    enumProp(
      "measure",
      ["characters", "words", "lines"],
      "characters",
      "Choose whether to count characters, words, or lines",
    ),
    prop("trim_whitespace", "bool", false, { description: "Strip whitespace before counting" }),
  ],
  "int",
  (i) => {
    const trim = asBool(i.trim_whitespace);
    const t = trim ? text(i).trim() : text(i);
    if (i.measure === "words") return t.split(/\s+/).filter(Boolean).length;
    if (i.measure === "lines") return t === "" ? 0 : t.split(/\r?\n/).filter((line) => line !== "" || !trim).length;
    return [...t].length;
  },
);

/** text[start:stop:step] over characters; stop = 0 means "to the end". */
export const sliceText = textNode(
  "Slice",
  "Slice Text",
  "Slices text using Python's slice notation (start:stop:step); stop=0 slices to the end, step=-1 reverses.",
  [TEXT, prop("start", "int", 0), prop("stop", "int", 0), prop("step", "int", 1)],
  "str",
  (i) => pySlice([...text(i)], asInt(i.start, "start"), asInt(i.stop, "stop"), asInt(i.step, "step")).join(""),
);

/** Every match of pattern (or its capture `group`). */
export const regexMatch = textNode(
  "RegexMatch",
  "Find Regex Matches",
  "Find all matches of a regex pattern in text, or of one capture group. Patterns run on RE2 (linear time): no backreferences or lookaround.",
  [
    prop("text", "str", "", { description: "Text to search in" }),
    prop("pattern", "str", "", { description: "Regular expression pattern (RE2 syntax)" }),
    prop("group", "int", 0, { description: "Capture group to extract (0 for full match)" }),
  ],
  "list[str]",
  (i, ctx) => {
    const group = i.group === null || i.group === undefined ? 0 : asInt(i.group, "group");
    const out: string[] = [];
    for (const m of compileRegex(text(i, "pattern")).matchAll(text(i))) {
      const v: unknown = m[group];
      if (typeof v !== "string") continue;
      out.push(v);
      if (out.length > ctx.limits.listMaxItems) capList(ctx.limits, out.length, "the list of matches");
    }
    return out;
  },
);

/** Expands `$1`, `$<name>`, `$&` and `$$` in a replacement for one match (as `String.replace` would). */
function expand(replacement: string, match: RegExpMatchArray): string {
  return replacement.replace(/\$(\$|&|\d{1,2}|<[^>]*>)/g, (tok, ref: string) => {
    if (ref === "$") return "$";
    if (ref === "&") return match[0];
    if (ref.startsWith("<")) return match.groups?.[ref.slice(1, -1)] ?? "";
    const n = Number(ref);
    return n > 0 && n < match.length ? (match[n] ?? "") : tok;
  });
}

/** Matches of pattern replaced (the first `count` of them when count > 0); `$1` refers to a group. */
export const regexReplace = textNode(
  "RegexReplace",
  "Replace with Regex",
  "Replace text matching a regex pattern; $1 or $<name> in the replacement refer to groups. Patterns run on RE2 (linear time): no backreferences or lookaround.",
  [
    prop("text", "str", "", { description: "Text to perform replacements on" }),
    prop("pattern", "str", "", { description: "Regular expression pattern (RE2 syntax)" }),
    prop("replacement", "str", "", { description: "Replacement text" }),
    prop("count", "int", 0, { description: "Maximum replacements (0 for unlimited)" }),
  ],
  "str",
  (i, ctx) => {
    const count = asInt(i.count, "count");
    const replacement = text(i, "replacement");
    const input = text(i);
    const parts: string[] = [];
    let units = 0;
    let last = 0;
    let n = 0;
    for (const m of compileRegex(text(i, "pattern")).matchAll(input)) {
      if (count > 0 && n >= count) break;
      const index = m.index ?? 0;
      const piece = input.slice(last, index) + expand(replacement, m);
      // Checked as it grows: a short pattern with a long replacement multiplies the text.
      capStringLength(ctx.limits, (units += piece.length));
      parts.push(piece);
      last = index + m[0].length;
      n++;
    }
    parts.push(input.slice(last));
    return capString(ctx.limits, parts.join(""));
  },
);

/** text split on pattern (at most `maxsplit` times when > 0). */
export const regexSplit = textNode(
  "RegexSplit",
  "Split with Regex",
  "Split text using a regex pattern as delimiter. Patterns run on RE2 (linear time): no backreferences or lookaround.",
  [
    prop("text", "str", "", { description: "Text to split" }),
    prop("pattern", "str", "", { description: "Regular expression pattern to split on (RE2 syntax)" }),
    prop("maxsplit", "int", 0, { description: "Maximum number of splits (0 for unlimited)" }),
  ],
  "list[str]",
  (i, ctx) => {
    const input = text(i);
    const re = compileRegex(text(i, "pattern"));
    const maxsplit = asInt(i.maxsplit, "maxsplit");
    const parts: string[] = [];
    let last = 0;
    let splits = 0;
    for (const m of re.matchAll(input)) {
      if (maxsplit > 0 && splits >= maxsplit) break;
      const index = m.index ?? 0;
      // An empty match at the very start splits nothing, as with String.split.
      if (m[0] === "" && index === 0) continue;
      // Captured groups go into the result between the pieces, as with String.split and Python's re.split.
      parts.push(input.slice(last, index), ...m.slice(1).map((g) => g ?? ""));
      if (parts.length > ctx.limits.listMaxItems) capList(ctx.limits, parts.length);
      last = index + m[0].length;
      splits++;
    }
    parts.push(input.slice(last));
    return parts;
  },
);

/** Whether pattern matches at the start of text (Python's `re.match`). */
export const regexValidate = textNode(
  "RegexValidate",
  "Validate with Regex",
  "Check if text matches a regex pattern (anchored at the start, like Python's re.match). Patterns run on RE2 (linear time): no backreferences or lookaround.",
  [
    prop("text", "str", "", { description: "Text to validate" }),
    prop("pattern", "str", "", { description: "Regular expression pattern (RE2 syntax)" }),
  ],
  "bool",
  (i) => compileRegex(text(i, "pattern")).matcher(text(i)).lookingAt(),
);

/** The value a JSON text denotes; invalid JSON fails. */
export const parseJson = textNode(
  "ParseJSON",
  "Parse JSON String",
  "Parses a JSON string into a value.",
  [prop("text", "str", "", { description: "JSON string" })],
  "any",
  (i) => {
    const json = text(i);
    // Deeper values could be neither stored nor sent to clients (the codec's depth); deep enough ones overflow
    // the stack of whatever walks them next.
    if (jsonTooDeep(json)) throw new NodeError(`the JSON nests deeper than ${CODEC_LIMITS.maxDepth} levels`);
    return parseJsonText(json, "the text");
  },
);

/**
 * Joins every string arriving on `input_item` with `separator`, once upstream ends. (NodeTool's TypeScript
 * node re-emits the running join after every item; one value at the end is what a stream's consumer wants.)
 */
export const collectText: StreamingInputNodeDef = {
  kind: "streaming-input",
  type: "nodetool.text.Collect",
  title: "Collect Text",
  description: "Collects streaming text inputs into a single string, joined by a separator, when the stream ends.",
  properties: [
    prop("input_item", "str", "", { description: "Text to collect." }),
    prop("separator", "str", "", { description: "Separator between collected items." }),
  ],
  outputs: output("str"),
  consume: async (ctx, inputs, inbox) => {
    const items: string[] = [];
    let separator = asText(inputs.separator);
    let units = 0;
    for await (const { handle, value } of inbox) {
      if (handle === "input_item") {
        const item = asText(value);
        capStringLength(ctx.limits, (units += item.length), "the collected text");
        items.push(item);
      } else if (handle === "separator") separator = asText(value);
    }
    return { output: cappedJoin(ctx, items, separator) };
  },
};

export const TEXT_NODES: readonly NodeDef[] = [
  toString,
  concat,
  join,
  formatText,
  template,
  promptNode,
  replace,
  split,
  chunk,
  contains,
  compare,
  equals,
  toUppercase,
  toLowercase,
  toTitlecase,
  capitalizeText,
  lengthNode,
  sliceText,
  regexMatch,
  regexReplace,
  regexSplit,
  regexValidate,
  parseJson,
  collectText,
];
