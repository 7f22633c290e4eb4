/**
 * User-supplied graphs and params are walked over own properties only, and keys that reach a prototype
 * (`__proto__`, `constructor`, `prototype`) are refused wherever they are: JSON text with such a key (which
 * `JSON.parse` makes an own property) is refused with PROTO_ERR_FORBIDDEN_KEY, and Object.prototype stays clean.
 */
import t, { type Test } from "tap";
import {
  ErrorCode,
  GraphError,
  ProtocolError,
  parseJson,
  prepareGraph,
  validateGraph,
  validateParams,
} from "../../protocol/index.js";
import { checkForbiddenKeys } from "../../protocol/graph-check.js";
import type { Graph, NodeMetadata } from "../../protocol/graph.js";

const clean = (t: Test) => {
  for (const k of ["polluted", "inputs", "value", "name", "bypassed"])
    t.notOk(k in {}, `Object.prototype has no "${k}"`);
};

const forbidden = (t: Test, fn: () => unknown, what: string, path?: RegExp) => {
  try {
    fn();
    t.fail(`${what}: accepted`);
  } catch (err) {
    t.ok(err instanceof GraphError || err instanceof ProtocolError, `${what}: a GraphError or ProtocolError`);
    t.equal((err as GraphError).code, ErrorCode.PROTO_ERR_FORBIDDEN_KEY, `${what}: PROTO_ERR_FORBIDDEN_KEY`);
    if (path) t.match((err as Error).message, path, `${what}: the message says where`);
  }
};

const node = (data: string) => `{"id": "a", "type": "nodetool.input.StringInput", "data": ${data}}`;

t.test(
  "graph-check - a graph with __proto__, constructor or prototype keys anywhere (JSON text) is refused",
  async (t) => {
    const graphs: [string, RegExp][] = [
      [
        `{"nodes": [${node('{"name": "q", "__proto__": {"polluted": true}}')}], "edges": []}`,
        /graph\.nodes\.0\.data has the forbidden key "__proto__"/,
      ],
      [
        `{"nodes": [${node('{"name": "q", "value": {"deep": [{"constructor": {"prototype": {"polluted": 1}}}]}}')}], "edges": []}`,
        /forbidden key "constructor"/,
      ],
      [`{"nodes": [], "edges": [], "__proto__": {"nodes": []}}`, /^graph has the forbidden key "__proto__"/],
      [
        `{"nodes": [{"id": "a", "type": "t", "ui_properties": {"__proto__": {"bypassed": true}}}], "edges": []}`,
        /ui_properties/,
      ],
    ];
    for (const [text, where] of graphs) {
      const g: unknown = JSON.parse(text);
      forbidden(t, () => validateGraph(g), text.slice(0, 60), where);
    }
    // Nesting deeper than any stack: the walk is iterative, and names only the last steps.
    let deep = '{"__proto__": 1}';
    for (let i = 0; i < 100_000; i++) deep = `[${deep}]`;
    forbidden(
      t,
      () => checkForbiddenKeys(JSON.parse(`{"nodes": [], "edges": ${deep}}`), "graph"),
      "100,000 levels deep",
      /^…\.0\.0\.0\.0\.0\.0 has/,
    );
    clean(t);
  },
);

t.test("graph-check - params with forbidden keys are refused; inherited names are not params", async (t) => {
  const graph = JSON.parse(
    `{"nodes": [${node('{"name": "q"}')}, {"id": "b", "type": "nodetool.input.StringInput", "data": {"name": "toString"}}], "edges": []}`,
  ) as Graph;
  const catalog = new Map<string, NodeMetadata>([
    [
      "nodetool.input.StringInput",
      {
        node_type: "nodetool.input.StringInput",
        title: "",
        description: "",
        namespace: "",
        properties: [{ name: "value", type: "str" }],
        outputs: [],
        is_dynamic: false,
        is_streaming: false,
      },
    ],
  ]);
  forbidden(
    t,
    () =>
      validateParams(
        graph,
        JSON.parse('{"q": "x", "toString": "y", "__proto__": {"polluted": true}}') as Record<string, unknown>,
        catalog,
      ),
    "__proto__ param",
    /^params has/,
  );
  forbidden(
    t,
    () =>
      validateParams(
        graph,
        JSON.parse('{"q": {"constructor": 1}, "toString": "y"}') as Record<string, unknown>,
        catalog,
      ),
    "nested constructor param",
    /params\.q/,
  );
  // `toString` is on every object's prototype: an input of that name without a value is still missing.
  try {
    validateParams(graph, { q: "x" }, catalog);
    t.fail("an input named toString without a value was taken as given");
  } catch (err) {
    t.equal((err as GraphError).code, ErrorCode.GRAPH_ERR_MISSING_PARAM, "an input named toString must be given");
  }
  t.same(
    validateParams(graph, { q: "x", toString: "y" }, catalog),
    { q: "x", toString: "y" },
    "and is taken when given",
  );
  clean(t);
});

t.test("graph-check - bypass is read from a node's own ui_properties only", async (t) => {
  const proto = { bypassed: true };
  const ui = Object.create(proto) as Record<string, unknown>;
  const g: Graph = { nodes: [{ id: "a", type: "t", ui_properties: ui }], edges: [] };
  t.equal(prepareGraph(g).nodes.length, 1, "an inherited bypassed is not the node's");
});

t.test("codec - parseJson refuses a forbidden key spelled with \\u escapes", async (t) => {
  for (const text of [
    '{"\\u005f_proto__": {"polluted": true}}',
    '{"a": {"\\u0063onstructor": 1}}',
    '{"proto\\u0074ype": 1}',
  ]) {
    forbidden(t, () => parseJson(text), text);
  }
  t.same(parseJson('{"text": "caf\\u00e9 \\u0041"}'), { text: "café A" }, "escapes in values are fine");
  clean(t);
});
