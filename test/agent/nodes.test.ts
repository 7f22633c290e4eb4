/**
 * The node library, node by node: each definition is driven directly through `process` / `generate` /
 * `consume` with an in-process `NodeContext` that records what the node emits. Graph wiring is the engine's
 * business and is tested there.
 */
import t from "tap";
import {
  DEFAULT_NODE_LIMITS,
  NodeError,
  type NodeLimits,
  type Emission,
  type InboxItem,
  type NodeContext,
  type NodeDef,
  type NodeInputs,
  type NodeOutputs,
} from "../../agent/engine/types.js";
import { nodeCatalog, nodeLibrary } from "../../agent/nodes/index.js";

interface Recorded {
  chunks: { content: string; done: boolean }[];
  previews: unknown[];
  sleeps: number[];
}

interface FakeOptions {
  params?: Record<string, unknown>;
  data?: Record<string, unknown>;
  signal?: AbortSignal;
  /** Real, abortable waiting instead of recording and resolving at once. */
  realSleep?: boolean;
  limits?: NodeLimits;
}

function fakeContext(def: NodeDef, opts: FakeOptions = {}): { ctx: NodeContext; rec: Recorded } {
  const rec: Recorded = { chunks: [], previews: [], sleeps: [] };
  const signal = opts.signal ?? new AbortController().signal;
  const ctx: NodeContext = {
    signal,
    nodeId: "n1",
    nodeType: def.type,
    data: opts.data ?? {},
    params: opts.params ?? {},
    chunk: (content, o) => void rec.chunks.push({ content, done: o?.done ?? false }),
    progress: () => {},
    log: () => {},
    dynamicOutputs: {},
    preview: (value) => void rec.previews.push(value),
    limits: opts.limits ?? DEFAULT_NODE_LIMITS,
    sleep: (ms) => {
      rec.sleeps.push(ms);
      if (signal.aborted) return Promise.reject(signal.reason);
      if (!opts.realSleep) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, ms);
        signal.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
      });
    },
  };
  return { ctx, rec };
}

const catalog = nodeCatalog(nodeLibrary(true));

function def(type: string): NodeDef {
  const d = catalog.get(type);
  if (!d) throw new Error(`no node ${type}`);
  return d;
}

/** Declared defaults overlaid with `given`, as the engine builds a node's inputs. */
function inputsFor(d: NodeDef, given: NodeInputs): NodeInputs {
  const inputs: NodeInputs = {};
  for (const p of d.properties) if (p.default !== undefined) inputs[p.name] = structuredClone(p.default);
  return { ...inputs, ...given };
}

async function run(type: string, given: NodeInputs = {}, opts: FakeOptions = {}): Promise<NodeOutputs> {
  const d = def(type);
  if (d.kind !== "process") throw new Error(`${type} is ${d.kind}`);
  const { ctx } = fakeContext(d, { data: given, ...opts });
  return d.process(ctx, inputsFor(d, given));
}

async function out(type: string, given: NodeInputs = {}, opts: FakeOptions = {}): Promise<unknown> {
  return (await run(type, given, opts)).output;
}

async function generate(
  type: string,
  given: NodeInputs = {},
  opts: FakeOptions = {},
): Promise<{ emissions: Emission[]; rec: Recorded }> {
  const d = def(type);
  if (d.kind !== "generator") throw new Error(`${type} is ${d.kind}`);
  const { ctx, rec } = fakeContext(d, opts);
  const emissions: Emission[] = [];
  for await (const e of d.generate(ctx, inputsFor(d, given))) emissions.push(e);
  return { emissions, rec };
}

async function consume(type: string, given: NodeInputs, items: InboxItem[]): Promise<unknown> {
  const d = def(type);
  if (d.kind !== "streaming-input") throw new Error(`${type} is ${d.kind}`);
  const { ctx } = fakeContext(d);
  async function* inbox(): AsyncGenerator<InboxItem> {
    for (const item of items) {
      await Promise.resolve(); // arrive asynchronously, as from upstream nodes
      yield item;
    }
  }
  const result = await d.consume(ctx, inputsFor(d, given), inbox());
  if (Symbol.asyncIterator in result) throw new Error("expected a single result");
  return (result as NodeOutputs).output;
}

const values = (emissions: Emission[], handle: string) =>
  emissions.filter((e) => e.handle === handle).map((e) => e.value);

t.test("nodes - the catalog maps every type and alias to its definition", async (t) => {
  const names = nodeLibrary(true).flatMap((d) => [d.type, ...(d.aliases ?? [])]);
  t.equal(new Set(names).size, names.length, "no name is claimed twice");
  t.equal(catalog.size, names.length);
  for (const name of names) t.ok(catalog.get(name), name);
  t.equal(catalog.get("nodetool.math.Add"), catalog.get("lib.math.Add"), "old math names are aliases");
  t.equal(
    catalog.get("nodetool.output.StringOutput"),
    catalog.get("nodetool.output.Output"),
    "legacy typed outputs are aliases",
  );
  for (const type of [
    "nodetool.input.StringInput",
    "nodetool.input.IntegerInput",
    "nodetool.input.FloatInput",
    "nodetool.input.BooleanInput",
    "nodetool.input.SelectInput",
    "nodetool.input.StringListInput",
    "nodetool.input.TextListInput",
    "nodetool.input.ImageInput",
    "nodetool.input.AudioInput",
    "nodetool.input.VideoInput",
    "nodetool.input.DocumentInput",
    "nodetool.output.Output",
    "nodetool.output.IntegerOutput",
    "nodetool.output.ListOutput",
    "nodetool.output.DictionaryOutput",
    "nodetool.output.ImageOutput",
    "nodetool.output.TextOutput",
    "nodetool.workflows.base_node.Preview",
    "nodetool.workflows.base_node.Comment",
    "nodetool.workflows.base_node.Group",
    "nodetool.constant.String",
    "nodetool.constant.Integer",
    "nodetool.constant.Float",
    "nodetool.constant.Bool",
    "nodetool.constant.List",
    "nodetool.constant.Dict",
    "nodetool.text.Concat",
    "nodetool.text.Join",
    "nodetool.text.FormatText",
    "nodetool.text.Template",
    "nodetool.text.Replace",
    "nodetool.text.Split",
    "nodetool.text.Chunk",
    "nodetool.text.Contains",
    "nodetool.text.Equals",
    "nodetool.text.Compare",
    "nodetool.text.ToUppercase",
    "nodetool.text.ToLowercase",
    "nodetool.text.ToTitlecase",
    "nodetool.text.CapitalizeText",
    "nodetool.text.Length",
    "nodetool.text.Slice",
    "nodetool.text.RegexMatch",
    "nodetool.text.RegexReplace",
    "nodetool.text.RegexSplit",
    "nodetool.text.RegexValidate",
    "nodetool.text.ParseJSON",
    "nodetool.text.ToString",
    "nodetool.text.Collect",
    "lib.math.Add",
    "lib.math.Subtract",
    "lib.math.Multiply",
    "lib.math.Divide",
    "lib.math.Modulus",
    "lib.math.Power",
    "lib.math.Sqrt",
    "lib.math.MathFunction",
    "nodetool.boolean.Compare",
    "nodetool.boolean.LogicalOperator",
    "nodetool.boolean.Not",
    "nodetool.boolean.ConditionalSwitch",
    "nodetool.boolean.IsNone",
    "nodetool.boolean.IsIn",
    "nodetool.boolean.All",
    "nodetool.boolean.Some",
    "nodetool.list.Length",
    "nodetool.list.GetElement",
    "nodetool.list.Slice",
    "nodetool.list.Append",
    "nodetool.list.Reverse",
    "nodetool.list.Sort",
    "nodetool.list.Sum",
    "nodetool.list.Average",
    "nodetool.list.Minimum",
    "nodetool.list.Maximum",
    "nodetool.list.GenerateSequence",
    "nodetool.control.If",
    "nodetool.control.ForEach",
    "nodetool.control.Collect",
    "nodetool.control.Reroute",
    "nodetool.control.Collection",
    "nodetool.control.Count",
    "nodetool.dictionary.GetValue",
    "nodetool.dictionary.MakeDictionary",
    "nodetool.dictionary.Combine",
    "nodeway.test.Tokens",
    "nodeway.test.Sleep",
    "nodeway.test.Fail",
  ]) {
    t.ok(catalog.has(type), `has ${type}`);
  }
});

t.test("nodes - every property is typed with a known type and a default that fits it", async (t) => {
  const known = new Set([
    "str",
    "int",
    "float",
    "bool",
    "enum",
    "list",
    "list[str]",
    "dict",
    "any",
    "image",
    "audio",
    "video",
    "document",
    "language_model",
    // NodeTool's richer types, which its gallery graphs use: the console draws them, the agent checks their shape.
    "list[image]",
    "list[audio_chunk]",
    "dataframe",
    "record_type",
    "folder",
    "collection",
    "chunk",
    "color",
    "font",
    "image_model",
    "video_model",
    "tts_model",
    "asr_model",
    "hf.automatic_speech_recognition",
  ]);
  for (const d of nodeLibrary(true)) {
    t.ok(d.description.length > 0, `${d.type} has a description`);
    for (const p of d.properties) {
      const where = `${d.type}.${p.name}`;
      t.ok(known.has(p.type), `${where} type ${p.type}`);
      t.not(p.default, undefined, `${where} has a default`);
      if (p.type === "enum") t.ok(p.values?.includes(p.default), `${where} default is one of its values`);
      if (p.type === "int") t.ok(Number.isInteger(p.default), `${where} default is an integer`);
      if (p.type.startsWith("list")) t.ok(Array.isArray(p.default), `${where} default is a list`);
      if (["image", "audio", "video", "document"].includes(p.type))
        t.match(p.default, { type: p.type, uri: "" }, `${where} default is an empty ${p.type} reference (NodeTool's)`);
    }
    t.equal(new Set(d.properties.map((p) => p.name)).size, d.properties.length, `${d.type} has no duplicate property`);
  }
});

t.test("nodes - StringInput reads the param named by its name and falls back to its value", async (t) => {
  t.same(await run("nodetool.input.StringInput", { name: "who", value: "saved" }, { params: { who: "param" } }), {
    output: "param",
  });
  t.same(await run("nodetool.input.StringInput", { name: "who", value: "saved" }, { params: { other: 1 } }), {
    output: "saved",
  });
  t.equal(
    await out("nodetool.input.StringInput", { name: "who", value: "abcdef", max_length: 3 }),
    "abc",
    "max_length truncates",
  );
});

t.test("nodes - numeric inputs are clamped to min and max", async (t) => {
  t.equal(await out("nodetool.input.IntegerInput", { name: "n", min: 1, max: 10 }, { params: { n: 99 } }), 10);
  t.equal(await out("nodetool.input.IntegerInput", { name: "n", min: 1, max: 10 }, { params: { n: -5 } }), 1);
  t.equal(
    await out("nodetool.input.IntegerInput", { name: "n", min: 1, max: 10 }, { params: { n: "7" } }),
    7,
    "numeric text is accepted",
  );
  t.equal(await out("nodetool.input.FloatInput", { name: "x", min: 0, max: 1 }, { params: { x: 1.5 } }), 1);
  t.equal(await out("nodetool.input.FloatInput", { name: "x", value: 0.25 }), 0.25);
  await t.rejects(run("nodetool.input.IntegerInput", { name: "n" }, { params: { n: 2.5 } }), {
    name: "NodeError",
    message: /param "n" must be an integer/,
  });
  await t.rejects(run("nodetool.input.FloatInput", { name: "x" }, { params: { x: "lots" } }), {
    name: "NodeError",
    message: /param "x" must be a number/,
  });
});

t.test("nodes - BooleanInput and the list inputs coerce text params", async (t) => {
  t.equal(await out("nodetool.input.BooleanInput", { name: "b", value: true }, { params: { b: "false" } }), false);
  t.equal(await out("nodetool.input.BooleanInput", { name: "b" }, { params: { b: true } }), true);
  t.same(await out("nodetool.input.StringListInput", { name: "l" }, { params: { l: "a,b" } }), ["a", "b"]);
  t.same(await out("nodetool.input.StringListInput", { name: "l" }, { params: { l: '["x","y"]' } }), ["x", "y"]);
  t.same(await out("nodetool.input.TextListInput", { name: "l", value: ["saved"] }), ["saved"]);
});

t.test("nodes - SelectInput fails naming the value and the options when the value is not an option", async (t) => {
  const given = { name: "color", value: "red", options: ["red", "green"] };
  t.equal(await out("nodetool.input.SelectInput", given, { params: { color: "green" } }), "green");
  const err = await run("nodetool.input.SelectInput", given, { params: { color: "blue" } }).catch((e: unknown) => e);
  t.ok(err instanceof NodeError);
  t.match((err as Error).message, /"blue"/);
  t.match((err as Error).message, /\["red","green"\]/);
  t.equal(await out("nodetool.input.SelectInput", { name: "c", value: "any" }), "any", "no options constrain nothing");
});

t.test("nodes - Output is an output node and Preview only previews", async (t) => {
  t.equal(def("nodetool.output.Output").kind, "output");
  t.same(
    def("nodetool.output.Output").properties.map((p) => p.name),
    ["name", "value", "description"],
  );
  const preview = def("nodetool.workflows.base_node.Preview");
  if (preview.kind !== "process") throw new Error("Preview must be a process node");
  const { ctx, rec } = fakeContext(preview);
  t.same(await preview.process(ctx, { value: { a: 1 }, name: "" }), {});
  t.same(rec.previews, [{ a: 1 }]);
  t.equal(def("nodetool.workflows.base_node.Comment").kind, "ignored");
  t.equal(def("nodetool.workflows.base_node.Group").kind, "ignored");
});

t.test("nodes - constants output their value", async (t) => {
  t.equal(await out("nodetool.constant.String", { value: "hi" }), "hi");
  t.equal(await out("nodetool.constant.Integer", { value: 3 }), 3);
  t.equal(await out("nodetool.constant.Float", { value: 0.5 }), 0.5);
  t.equal(await out("nodetool.constant.Bool", { value: true }), true);
  t.same(await out("nodetool.constant.List", { value: [1, "a"] }), [1, "a"]);
  t.same(await out("nodetool.constant.Dict", { value: { k: 1 } }), { k: 1 });
  t.same(await out("nodetool.constant.Dict"), {}, "defaults apply");
});

t.test("nodes - FormatText fills {{ name|upper }} from a dynamic input", async (t) => {
  t.ok(def("nodetool.text.FormatText").isDynamic);
  t.equal(await out("nodetool.text.FormatText", { template: "Hello, {{ name|upper }}!", name: "ada" }), "Hello, ADA!");
});

t.test("nodes - FormatText applies NodeTool's filters in order", async (t) => {
  const render = (template: string, vars: NodeInputs) => out("nodetool.text.FormatText", { template, ...vars });
  t.equal(await render("{{ s|trim|title }}", { s: "  hello world " }), "Hello World");
  t.equal(await render("{{ s|capitalize }}", { s: "hELLO" }), "Hello");
  t.equal(await render("{{ s|truncate(5) }}", { s: "abcdefgh" }), "abcde...");
  t.equal(await render("{{ s|default('none') }}", { s: "" }), "none");
  t.equal(await render("{{ missing|default('x') }}", {}), "x", "default covers an absent variable");
  t.equal(await render("{{ xs|join(', ') }}", { xs: ["a", "b"] }), "a, b");
  t.equal(await render("{{ s|replace('a','o') }}", { s: "banana" }), "bonono");
  t.equal(await render("{{ xs|length }} {{ xs|first }} {{ xs|last }}", { xs: [3, 1, 2] }), "3 3 2");
  t.equal(await render("{{ xs|sort|join('') }}", { xs: [3, 1, 2] }), "123");
  t.equal(await render("{{ user.name }}", { user: { name: "Ada" } }), "Ada", "dotted names look into objects");
  t.equal(
    await render("{{ missing }} and {other}", {}),
    "{{ missing }} and {other}",
    "absent variables stay as written",
  );
  t.equal(await render("{name}: {{name}}", { name: "x" }), "x: x", "single-brace form works too");
  t.equal(await render("{{ a }}", { a: "{{ b }}", b: "no" }), "{{ b }}", "substituted values are not expanded again");
  await t.rejects(render("{{ s|shout }}", { s: "x" }), {
    name: "NodeError",
    message: /unknown template filter "shout"/,
  });
});

t.test("nodes - Template and Prompt render with their dynamic inputs", async (t) => {
  t.equal(
    await out("nodetool.text.Template", { string: "{{ a }}-{b}", values: { a: "1", b: "2" }, b: "3" }),
    "1-3",
    "dynamic inputs win over values",
  );
  const r = await run("nodetool.text.Prompt", { prompt: "Describe {{ subject|lower }}", subject: "CATS" });
  t.same(r, { subject: "CATS", output: "Describe cats" }, "variables are forwarded on their own handles");
});

t.test("nodes - Concat joins a, b and dynamic inputs; Join joins a list", async (t) => {
  t.equal(await out("nodetool.text.Concat", { a: "x", b: "y" }), "xy");
  t.equal(await out("nodetool.text.Concat", { a: "x", b: "y", c: ["1", "2"] }), "xy12", "lists are flattened");
  t.equal(await out("nodetool.text.Join", { strings: ["a", 1, "b"], separator: "-" }), "a-1-b");
});

t.test("nodes - Replace, Split and Chunk", async (t) => {
  t.equal(await out("nodetool.text.Replace", { text: "a-b-c", old: "-", new: "+" }), "a+b+c");
  t.same(await out("nodetool.text.Split", { text: "a,b,,c" }), ["a", "b", "", "c"]);
  t.same(await out("nodetool.text.Chunk", { text: "a b c d e", length: 2, overlap: 1 }), [
    "a b",
    "b c",
    "c d",
    "d e",
    "e",
  ]);
  await t.rejects(run("nodetool.text.Chunk", { text: "a", length: 2, overlap: 2 }), {
    name: "NodeError",
    message: /invalid chunk parameters/,
  });
});

t.test("nodes - Contains, Equals and Compare honour case and whitespace options", async (t) => {
  t.equal(await out("nodetool.text.Contains", { text: "Hello World", substring: "world" }), false);
  t.equal(
    await out("nodetool.text.Contains", { text: "Hello World", substring: "world", case_sensitive: false }),
    true,
  );
  t.equal(await out("nodetool.text.Contains", { text: "abc", search_values: ["a", "z"], match_mode: "all" }), false);
  t.equal(await out("nodetool.text.Contains", { text: "abc", search_values: ["x", "z"], match_mode: "none" }), true);
  t.equal(
    await out("nodetool.text.Equals", { text_a: " A ", text_b: "a", case_sensitive: false, trim_whitespace: true }),
    true,
  );
  t.equal(await out("nodetool.text.Equals", { text_a: "A", text_b: "a" }), false);
  t.equal(await out("nodetool.text.Compare", { text_a: "apple", text_b: "banana" }), "less");
  t.equal(await out("nodetool.text.Compare", { text_a: "b", text_b: "a" }), "greater");
});

t.test("nodes - case changes, Length and Slice", async (t) => {
  t.equal(await out("nodetool.text.ToUppercase", { text: "abc" }), "ABC");
  t.equal(await out("nodetool.text.ToLowercase", { text: "ABC" }), "abc");
  t.equal(await out("nodetool.text.ToTitlecase", { text: "hello wORLD" }), "Hello World");
  t.equal(await out("nodetool.text.CapitalizeText", { text: "hELLO" }), "Hello");
  t.equal(await out("nodetool.text.Length", { text: "héllo" }), 5);
  t.equal(await out("nodetool.text.Length", { text: "one two  three", measure: "words" }), 3);
  t.equal(await out("nodetool.text.Length", { text: "a\nb\n", measure: "lines" }), 3);
  t.equal(await out("nodetool.text.Slice", { text: "abcdef", start: 1, stop: 4 }), "bcd");
  t.equal(await out("nodetool.text.Slice", { text: "abcdef", start: -2 }), "ef", "stop 0 slices to the end");
  t.equal(await out("nodetool.text.Slice", { text: "abcdef", step: -1 }), "fedcba");
  t.equal(await out("nodetool.text.Slice", { text: "abcdef", step: 2 }), "ace");
  await t.rejects(run("nodetool.text.Slice", { text: "abc", step: 0 }), { name: "NodeError" });
});

t.test("nodes - regex nodes match, replace, split and validate", async (t) => {
  t.same(await out("nodetool.text.RegexMatch", { text: "a1 b22 c333", pattern: "\\d+" }), ["1", "22", "333"]);
  t.same(await out("nodetool.text.RegexMatch", { text: "k=v x=y", pattern: "(\\w)=(\\w)", group: 2 }), ["v", "y"]);
  t.same(
    await out("nodetool.text.RegexMatch", { text: "ab", pattern: "(?P<x>a)" }),
    ["a"],
    "Python group syntax is accepted",
  );
  t.equal(await out("nodetool.text.RegexReplace", { text: "a1b2c3", pattern: "\\d", replacement: "#" }), "a#b#c#");
  t.equal(
    await out("nodetool.text.RegexReplace", { text: "a1b2c3", pattern: "(\\d)", replacement: "<$1>", count: 2 }),
    "a<1>b<2>c3",
  );
  t.same(await out("nodetool.text.RegexSplit", { text: "a, b;c", pattern: "[,;]\\s*" }), ["a", "b", "c"]);
  t.same(await out("nodetool.text.RegexSplit", { text: "a,b,c", pattern: ",", maxsplit: 1 }), ["a", "b,c"]);
  t.equal(await out("nodetool.text.RegexValidate", { text: "abc123", pattern: "[a-z]+" }), true);
  t.equal(
    await out("nodetool.text.RegexValidate", { text: "123abc", pattern: "[a-z]+" }),
    false,
    "anchored at the start like re.match",
  );
  for (const type of [
    "nodetool.text.RegexMatch",
    "nodetool.text.RegexReplace",
    "nodetool.text.RegexSplit",
    "nodetool.text.RegexValidate",
  ]) {
    await t.rejects(
      run(type, { text: "x", pattern: "(" }),
      { name: "NodeError", message: /invalid regular expression "\("/ },
      type,
    );
  }
});

t.test("nodes - ParseJSON parses and fails with a NodeError on invalid JSON; ToString converts", async (t) => {
  t.same(await out("nodetool.text.ParseJSON", { text: '{"a":[1,2]}' }), { a: [1, 2] });
  await t.rejects(run("nodetool.text.ParseJSON", { text: "{nope" }), { name: "NodeError", message: /invalid JSON/ });
  t.equal(await out("nodetool.text.ToString", { value: 42 }), "42");
  t.equal(await out("nodetool.text.ToString", { value: { a: 1 } }), '{"a":1}');
  t.equal(await out("nodetool.text.ToString", { value: null }), "");
  t.equal(await out("nodetool.text.ToString", { value: "hi", mode: "repr" }), '"hi"');
});

t.test("nodes - text Collect joins every string that arrived once upstream ends", async (t) => {
  t.equal(def("nodetool.text.Collect").kind, "streaming-input");
  const items = ["a", "b", "c"].map((value) => ({ handle: "input_item", value }));
  t.equal(await consume("nodetool.text.Collect", { separator: " " }, items), "a b c");
  t.equal(await consume("nodetool.text.Collect", {}, []), "", "an empty stream gives empty text");
});

t.test("nodes - math nodes compute; division by zero fails as NodeTool's Python does", async (t) => {
  t.equal(await out("lib.math.Add", { a: 2, b: 3 }), 5);
  t.equal(await out("nodetool.math.Subtract", { a: 2, b: 3 }), -1, "old name runs the same node");
  t.equal(await out("lib.math.Multiply", { a: 2, b: "3" }), 6);
  t.equal(await out("lib.math.Divide", { a: 1, b: 4 }), 0.25);
  await t.rejects(out("lib.math.Divide", { a: 1, b: 0 }), { name: "NodeError", message: /division by zero/ });
  await t.rejects(out("lib.math.Divide", { a: -1, b: 0 }), { name: "NodeError", message: /division by zero/ });
  await t.rejects(out("lib.math.Modulus", { a: 1, b: 0 }), { name: "NodeError", message: /modulo by zero/ });
  t.equal(await out("lib.math.Modulus", { a: 7, b: 3 }), 1);
  t.equal(await out("lib.math.Power", { base: 2, exponent: 10 }), 1024);
  t.equal(await out("lib.math.Sqrt", { x: 9 }), 3);
  t.equal(await out("lib.math.MathFunction", { input: -8, operation: "cube_root" }), -2);
  t.equal(await out("lib.math.MathFunction", { input: 3 }), -3, "negate is the default");
  await t.rejects(run("lib.math.MathFunction", { input: 1, operation: "frobnicate" }), { name: "NodeError" });
  await t.rejects(run("lib.math.Add", { a: "two", b: 1 }), {
    name: "NodeError",
    message: /a must be a number, got "two"/,
  });
});

t.test("nodes - boolean nodes", async (t) => {
  t.equal(await out("nodetool.boolean.Compare", { a: 3, b: 2, comparison: ">" }), true);
  t.equal(await out("nodetool.boolean.Compare", { a: 2, b: 2, comparison: "<=" }), true);
  t.equal(await out("nodetool.boolean.Compare", { a: "x", b: "x" }), true, "== works on non-numbers");
  await t.rejects(run("nodetool.boolean.Compare", { a: 1, b: 2, comparison: "<>" }), { name: "NodeError" });
  t.equal(await out("nodetool.boolean.LogicalOperator", { a: true, b: false, operation: "xor" }), true);
  t.equal(await out("nodetool.boolean.LogicalOperator", { a: true, b: true, operation: "nand" }), false);
  t.equal(await out("nodetool.boolean.Not", { value: false }), true);
  t.equal(await out("nodetool.boolean.ConditionalSwitch", { condition: true, if_true: "yes", if_false: "no" }), "yes");
  t.equal(await out("nodetool.boolean.IsNone", { value: null }), true);
  t.equal(await out("nodetool.boolean.IsNone", { value: 0 }), false);
  t.equal(await out("nodetool.boolean.IsIn", { value: [1], options: [[1], 2] }), true);
  t.equal(await out("nodetool.boolean.All", { values: [true, 1] }), true);
  t.equal(await out("nodetool.boolean.All", { values: [] }), true);
  t.equal(await out("nodetool.boolean.Some", { values: [false, 0] }), false);
});

t.test("nodes - list nodes", async (t) => {
  const xs = [5, 10, 9, 1];
  t.equal(await out("nodetool.list.Length", { values: xs }), 4);
  t.equal(await out("nodetool.list.GetElement", { values: xs, index: -1 }), 1);
  await t.rejects(run("nodetool.list.GetElement", { values: xs, index: 4 }), {
    name: "NodeError",
    message: /out of range/,
  });
  t.same(await out("nodetool.list.Slice", { values: xs, start: 1 }), [10, 9, 1]);
  t.same(await out("nodetool.list.Slice", { values: xs, step: -2 }), [1, 10]);
  t.same(await out("nodetool.list.Append", { values: xs, value: 0 }), [...xs, 0]);
  t.same(await out("nodetool.list.Reverse", { values: xs }), [1, 9, 10, 5]);
  t.same(await out("nodetool.list.Sort", { values: xs }), [1, 5, 9, 10], "numbers sort numerically");
  t.same(await out("nodetool.list.Sort", { values: ["b", "a"], order: "descending" }), ["b", "a"]);
  t.equal(await out("nodetool.list.Sum", { values: xs }), 25);
  t.equal(await out("nodetool.list.Average", { values: [1, 2] }), 1.5);
  t.equal(await out("nodetool.list.Minimum", { values: xs }), 1);
  t.equal(await out("nodetool.list.Maximum", { values: xs }), 10);
  await t.rejects(run("nodetool.list.Sum", { values: [] }), { name: "NodeError", message: /empty/ });
  await t.rejects(run("nodetool.list.Average", { values: [1, "x"] }), {
    name: "NodeError",
    message: /values\[1\] must be a number/,
  });
});

t.test("nodes - GenerateSequence is a generator emitting each number", async (t) => {
  t.equal(def("nodetool.list.GenerateSequence").kind, "generator");
  t.same(
    values((await generate("nodetool.list.GenerateSequence", { start: 0, stop: 5, step: 2 })).emissions, "output"),
    [0, 2, 4],
  );
  t.same(
    values((await generate("nodetool.list.GenerateSequence", { start: 3, stop: 0, step: -1 })).emissions, "output"),
    [3, 2, 1],
  );
  await t.rejects(generate("nodetool.list.GenerateSequence", { stop: 3, step: 0 }), { name: "NodeError" });
});

t.test("nodes - If sends the value only on the branch taken", async (t) => {
  t.same(await run("nodetool.control.If", { condition: true, value: "v" }), { if_true: "v" });
  t.same(await run("nodetool.control.If", { condition: false, value: "v" }), { if_false: "v" });
  t.same(
    def("nodetool.control.If").outputs.map((o) => o.name),
    ["if_true", "if_false"],
  );
});

t.test("nodes - ForEach and Collection emit each item with its index", async (t) => {
  const { emissions } = await generate("nodetool.control.ForEach", { input_list: ["a", "b", "c"] });
  t.same(emissions, [
    { handle: "output", value: "a" },
    { handle: "index", value: 0 },
    { handle: "output", value: "b" },
    { handle: "index", value: 1 },
    { handle: "output", value: "c" },
    { handle: "index", value: 2 },
  ]);
  t.same(
    values((await generate("nodetool.control.ForEach", { input_list: [1, 2, 3], limit: 2 })).emissions, "output"),
    [1, 2],
    "limit caps the items",
  );
  t.same(values((await generate("nodetool.control.Collection", { items: ["x", "y"] })).emissions, "index"), [0, 1]);
});

t.test("nodes - control Collect and Count fold the stream when upstream ends", async (t) => {
  const items = [1, "two", { three: 3 }].map((value) => ({ handle: "input_item", value }));
  t.same(await consume("nodetool.control.Collect", {}, items), [1, "two", { three: 3 }]);
  t.same(await consume("nodetool.control.Collect", {}, []), []);
  t.equal(await consume("nodetool.control.Count", {}, items), 3);
  t.equal(await out("nodetool.control.Reroute", { input_value: "same" }), "same");
});

t.test("nodes - dictionary nodes", async (t) => {
  t.equal(await out("nodetool.dictionary.GetValue", { dictionary: { a: 1 }, key: "a" }), 1);
  t.equal(await out("nodetool.dictionary.GetValue", { dictionary: { a: 1 }, key: "b", default: "d" }), "d");
  t.same(await out("nodetool.dictionary.MakeDictionary", { x: 1, y: "two" }), { x: 1, y: "two" });
  t.ok(def("nodetool.dictionary.MakeDictionary").isDynamic);
  t.same(await out("nodetool.dictionary.Combine", { dict_a: { a: 1, b: 1 }, dict_b: { b: 2 } }), { a: 1, b: 2 });
});

t.test("nodes - Tokens emits one chunk per token, a done chunk, and the joined text", async (t) => {
  const { emissions, rec } = await generate("nodeway.test.Tokens", { count: 3, rate: 1e6 });
  t.same(rec.chunks, [
    { content: "tok0 ", done: false },
    { content: "tok1 ", done: false },
    { content: "tok2 ", done: false },
    { content: "", done: true },
  ]);
  t.same(values(emissions, "chunk"), ["tok0 ", "tok1 ", "tok2 "]);
  t.same(values(emissions, "output"), ["tok0 tok1 tok2 "]);
  t.same(rec.sleeps, [], "a very high rate does not sleep");
  t.same((await generate("nodeway.test.Tokens", { count: 5, rate: 0 })).rec.sleeps, [], "rate 0 does not sleep");
  t.same(values((await generate("nodeway.test.Tokens", { count: 0 })).emissions, "output"), [""]);
});

t.test("nodes - Tokens paces against its start time instead of accumulating waits", async (t) => {
  // The fake sleep returns at once, so each wait is measured from the start: 100, 200, 300 ms at 10 tokens/s.
  const { rec } = await generate("nodeway.test.Tokens", { count: 3, rate: 10 });
  t.equal(rec.sleeps.length, 3);
  for (const [i, ms] of rec.sleeps.entries())
    t.ok(Math.abs(ms - (i + 1) * 100) < 20, `wait ${i} is ${ms.toFixed(1)} ms`);
});

t.test("nodes - Tokens and Sleep stop when the run is cancelled", async (t) => {
  const ac = new AbortController();
  const reason = new Error("job_cancelled");
  const tokens = def("nodeway.test.Tokens");
  if (tokens.kind !== "generator") throw new Error("Tokens must be a generator");
  const { ctx } = fakeContext(tokens, { signal: ac.signal, realSleep: true });
  const seen: unknown[] = [];
  const done = (async () => {
    for await (const e of tokens.generate(ctx, { count: 1000, rate: 100 })) {
      seen.push(e.value);
      if (seen.length === 2) ac.abort(reason);
    }
  })();
  await t.rejects(done, reason);
  t.ok(seen.length < 4, `stopped after ${seen.length} emissions`);

  const ac2 = new AbortController();
  const pending = run("nodeway.test.Sleep", { seconds: 30 }, { signal: ac2.signal, realSleep: true });
  setTimeout(() => ac2.abort(reason), 5);
  await t.rejects(pending, reason);
  t.same(await run("nodeway.test.Sleep", { seconds: 0.001 }, { realSleep: true }), { output: 0.001 });
});

t.test("nodes - Fail throws a NodeError with its message", async (t) => {
  await t.rejects(run("nodeway.test.Fail", { message: "boom" }), { name: "NodeError", message: "boom" });
});
