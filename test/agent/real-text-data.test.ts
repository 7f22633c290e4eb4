/**
 * The text and data nodes on files as users' tools write them, made here as bytes: UTF-8 with a BOM, UTF-16 (Excel's
 * "Unicode text", PowerShell), Windows-1252, CRLF, quoted commas, quotes and line breaks, `;` separators, ragged
 * rows, JSON with a BOM, JSON Lines, Python's NaN, a PNG where text is wanted, and a 50 MB CSV. Run in-process.
 */
import t from "tap";
import { DEFAULT_NODE_LIMITS, type NodeContext, type ProcessNodeDef } from "../../agent/engine/types.js";
import { importCsv as importCsvDef, jsonToDataframe as jsonDef } from "../../agent/nodes/data.js";
import { errorOf, nodeContext } from "../helpers/node-context.js";
import { lengthNode, parseJson, split } from "../../agent/nodes/text.js";

const importCsv = importCsvDef as ProcessNodeDef;
const jsonToDataframe = jsonDef as ProcessNodeDef;

const assets = new Map<string, Uint8Array>();
const ctx = nodeContext("text", {
  assets: { get: async (uri: string) => assets.get(uri) ?? new Uint8Array() },
});
const run = async (def: ProcessNodeDef, inputs: Record<string, unknown>) => (await def.process(ctx, inputs)).output;
type Df = { columns: { name: string; data_type: string }[]; data: unknown[][] };
const csv = async (v: unknown) => (await run(importCsv, { csv_data: v })) as Df;
const names = (df: Df) => df.columns.map((c) => c.name);

const CSV = 'name,city\r\nJosé,"Paris, FR"\r\n"two\nlines","say ""hi"""\r\n';
const WANT = [
  ["José", "Paris, FR"],
  ["two\nlines", 'say "hi"'],
];
const utf16le = (s: string) => new Uint8Array(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(s, "utf16le")]));
const utf16be = (s: string) => new Uint8Array(Buffer.from(utf16le(s)).swap16());

t.test("real text - a CSV in each encoding reads the same, BOM dropped", async (t) => {
  const cases: [string, unknown][] = [
    ["a string with a BOM", `\uFEFF${CSV}`],
    ["UTF-8 bytes with a BOM", new Uint8Array(Buffer.from(`\uFEFF${CSV}`))],
    ["UTF-16LE with a BOM", utf16le(CSV)],
    ["UTF-16BE with a BOM", utf16be(CSV)],
    ["Windows-1252 bytes (é as 0xE9)", new Uint8Array(Buffer.from(CSV, "latin1"))],
    [
      "an uploaded document asset",
      {
        type: "document",
        uri: "asset://01hzzzzzzzzzzzzzzzzzzzzzzz",
        asset_id: "01hzzzzzzzzzzzzzzzzzzzzzzz",
        data: null,
      },
    ],
    ["a document holding its bytes", { type: "document", uri: "", asset_id: null, data: utf16le(CSV) }],
  ];
  assets.set("asset://01hzzzzzzzzzzzzzzzzzzzzzzz", utf16le(CSV));
  for (const [what, v] of cases) {
    const df = await csv(v);
    t.same([names(df), df.data], [["name", "city"], WANT], what);
  }
});

t.test("real text - CSV shapes pandas reads", async (t) => {
  const semi = await csv("a;b;c\r\n1;2,5;x\r\n");
  t.same([names(semi), semi.data], [["a", "b", "c"], [[1, "2,5", "x"]]], "European Excel's ; separator");
  const header = await csv("a,b\n");
  t.same([names(header), header.data], [["a", "b"], []], "a header alone: no rows");
  t.equal(await errorOf(csv("")), "the CSV data is empty (no header row)", "an empty file");
  t.same((await csv("a,b\n1\n")).data, [[1, null]], "a short row is filled with null");
  t.equal(await errorOf(csv("a,b\n1,2,3\n")), "CSV row 2 has 3 fields, the header has 2", "a long row is refused");
  t.match(await errorOf(csv('a,b\n"open,2\n3,4\n')), /^CSV row 2: a quoted field is never closed/, "unclosed quote");
  t.same(names(await csv("a,a,\n1,2,3\n")), ["a", "a.1", "Unnamed: 2"], "repeated and empty names as pandas");
  t.same((await csv("id\n12345678901234567890\n")).data, [["12345678901234567890"]], "a 20-digit ID keeps its digits");
  t.same((await csv("a,b\n1,")).data, [[1, null]], "a last line without its line end, ending in a separator");
  t.same(names(await csv("\u200Bname,\u202Ename\n1,2\n")), ["\u200Bname", "\u202Ename"], "zero-width and RTL kept");
  t.equal(
    await errorOf(csv(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]))),
    "csv_data is a PNG image (12 bytes), not text",
    "a PNG where text is wanted",
  );
});

t.test("real text - JSON with a BOM, JSON Lines, NaN, bytes", async (t) => {
  t.same(await run(parseJson, { text: '\uFEFF{"a": 1}' }), { a: 1 }, "a BOM is ignored");
  t.same(await run(parseJson, { text: '{"a": NaN, "b": -Infinity, "c": "NaN"}' }), { a: null, b: null, c: "NaN" });
  t.same(await run(parseJson, { text: new Uint8Array(Buffer.from('{"a": "é"}')) }), { a: "é" }, "bytes are text");
  t.match(await errorOf(run(parseJson, { text: "{nope" })), /^invalid JSON in the text: /);
  const lines = (await run(jsonToDataframe, { text: '{"a": 1}\r\n{"a": 2, "b": "x"}\n' })) as Df;
  t.same(
    [names(lines), lines.data],
    [
      ["a", "b"],
      [
        [1, null],
        [2, "x"],
      ],
    ],
    "JSON Lines",
  );
  const bom = (await run(jsonToDataframe, { text: utf16le('[{"a": 1}]') })) as Df;
  t.same(bom.data, [[1]], "UTF-16 JSON");
  t.same(await run(split as ProcessNodeDef, { text: utf16le("a,b"), delimiter: "," }), ["a", "b"], "Split on bytes");
  t.equal(await run(lengthNode as ProcessNodeDef, { text: "a\u200Bb\u202Ec", measure: "characters" }), 5);
});

t.test("real text - a 50 MB CSV fails fast at the row cap; under it, parses in bounded time", async (t) => {
  const row = '12345,hello world,3.14159,"quoted, field"\n';
  const big = `id,text,num,q\n${row.repeat(Math.ceil(50e6 / row.length))}`;
  let t0 = Date.now();
  t.match(await errorOf(csv(big)), /more than 1000000 rows, over the agent's nodeListMaxItems/);
  t.ok(Date.now() - t0 < 6000, `refused in ${Date.now() - t0} ms`);
  const wide = `id,text\n${`1,${"x".repeat(90)}\n`.repeat(520_000)}`;
  t0 = Date.now();
  t.equal((await csv(wide)).data.length, 520_000, `${(wide.length / 1e6).toFixed(0)} MB read in ${Date.now() - t0} ms`);
  const over = { ...ctx, limits: { ...DEFAULT_NODE_LIMITS, stringMaxBytes: 1_000_000 } } as NodeContext;
  t.match(await errorOf(Promise.resolve(importCsv.process(over, { csv_data: wide }))), /nodeStringMaxBytes/);
});

t.test("real text - a document reference that is not the agent's to read is refused, naming it", async (t) => {
  const doc = (uri: string) => ({ type: "document", uri });
  const noAssets = nodeContext("text", { assets: undefined });
  const parse = (text: unknown, c = ctx) => errorOf(Promise.resolve(parseJson.process(c, { text })));
  t.equal(
    await parse(doc("http://169.254.169.254/latest/meta-data/")),
    "text must be text or a text/document asset (asset://<id> or data: URI), got http://169.254.169.254/latest/meta-data/",
    "an http URL is not fetched",
  );
  t.match(
    await parse(doc("file:///etc/passwd")),
    /^text must be text or a text\/document asset.*got file:\/\/\/etc\/passwd$/,
  );
  t.equal(
    await parse({ type: "text" }),
    "text must be text or a text/document asset (asset://<id> or data: URI), got an empty reference",
  );
  t.equal(await parse(doc("data:text/plain,%E0%A4%A")), "text is a data: URI with a malformed %-escape");
  t.equal(await parse(doc("data:text/plain")), "text is a data: URI without a comma before its data");
  t.equal(
    await parse(doc("asset://01hzx5k3m2n4p6q8r0s2t4v6w8"), noAssets),
    "text is an asset (asset://01hzx5k3m2n4p6q8r0s2t4v6w8), but this agent gives nodes no asset access",
  );
  t.same(await run(parseJson, { text: doc("data:application/json,%7B%22a%22%3A1%7D") }), { a: 1 }, "%-escaped data");
  const b64 = `data:application/json;base64,${Buffer.from('{"a":2}').toString("base64")}`;
  t.same(await run(parseJson, { text: doc(b64) }), { a: 2 }, "base64 data");
});
