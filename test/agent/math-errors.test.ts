/**
 * `lib.math.*` fails where NodeTool's Python raises: division and modulo by zero (ZeroDivisionError), a result
 * with no real value (math domain error: √−1, log 0, 0 to a negative power) and one too large for a float (math
 * range error). JSON has no NaN or Infinity: before, such a job completed with `null`.
 */
import t from "tap";
import type { ProcessNodeDef } from "../../agent/engine/types.js";
import { MATH_NODES } from "../../agent/nodes/math.js";
import { WsClient, type Msg } from "../helpers/clients.js";
import { graphOf, runGraph } from "../helpers/fake-media.js";
import { runProcess } from "../helpers/node-context.js";
import { startStack } from "../helpers/stack.js";

/** The node's output for `inputs` over its defaults. */
async function run(name: string, inputs: Record<string, unknown>): Promise<unknown> {
  const def = MATH_NODES.find((d) => d.type === `lib.math.${name}`) as ProcessNodeDef;
  return (await runProcess(def, inputs)).output;
}

t.test("math errors - what Python raises fails the node, naming why", async (t) => {
  const fails: [string, Record<string, unknown>, RegExp][] = [
    ["Divide", { a: 1, b: 0 }, /^Divide: division by zero$/],
    ["Divide", { a: -1, b: 0 }, /^Divide: division by zero$/],
    ["Divide", { a: 0, b: 0 }, /^Divide: division by zero$/],
    ["Modulus", { a: 1, b: 0 }, /^Modulus: modulo by zero$/],
    ["Sqrt", { x: -1 }, /^Sqrt: math domain error: no real result for x = -1$/],
    ["Power", { base: 0, exponent: -1 }, /^Power: math domain error: no real result for base = 0, exponent = -1$/],
    ["Power", { base: -8, exponent: 1 / 3 }, /^Power: math domain error/],
    [
      "Power",
      { base: 10, exponent: 400 },
      /^Power: math range error: the result for base = 10, exponent = 400 is too large/,
    ],
    ["Multiply", { a: 1e200, b: 1e200 }, /^Multiply: math range error/],
    ["Add", { a: 1.7e308, b: 1.7e308 }, /^Add: math range error/],
    ["MathFunction", { input: 0, operation: "log" }, /^Math Function: math domain error: .*operation = "log"/],
    ["MathFunction", { input: -1, operation: "log" }, /^Math Function: math domain error/],
    ["MathFunction", { input: -4, operation: "square_root" }, /^Math Function: math domain error/],
    ["MathFunction", { input: 2, operation: "arcsin" }, /^Math Function: math domain error/],
  ];
  for (const [name, inputs, message] of fails)
    await t.rejects(run(name, inputs), { name: "NodeError", message }, `${name} ${JSON.stringify(inputs)}`);

  t.equal(await run("Divide", { a: 1, b: 4 }), 0.25, "and what Python computes still computes");
  t.equal(await run("Modulus", { a: 7, b: 3 }), 1);
  // Python's % takes the divisor's sign (values from CPython 3.12).
  t.equal(await run("Modulus", { a: -7, b: 3 }), 2, "-7 % 3 == 2");
  t.equal(await run("Modulus", { a: 7, b: -3 }), -2, "7 % -3 == -2");
  t.equal(await run("Modulus", { a: -7, b: -3 }), -1, "-7 % -3 == -1");
  t.equal(await run("Modulus", { a: -5.5, b: 2 }), 0.5, "-5.5 % 2 == 0.5");
  t.equal(await run("Modulus", { a: 6, b: -3 }), 0, "6 % -3 == 0");
  t.equal(await run("Modulus", { a: -1e-300, b: 1e300 }), 1e300, "-1e-300 % 1e300 == 1e300 (rounded)");
  t.equal(await run("Sqrt", { x: 9 }), 3);
  t.equal(await run("Power", { base: 0, exponent: 0 }), 1);
  t.equal(await run("Power", { base: -8, exponent: 3 }), -512);
  t.equal(await run("MathFunction", { input: 1, operation: "log" }), 0);
  t.equal(await run("MathFunction", { input: -8, operation: "cube_root" }), -2);
});

t.test("math errors - a job dividing by zero fails instead of completing with null", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const errorOf = (end: Msg) => String((end.error as { message?: string } | undefined)?.message ?? "");
  for (const [type, data, message] of [
    ["lib.math.Divide", { a: 1, b: 0 }, /division by zero/],
    ["lib.math.Sqrt", { x: -1 }, /math domain error/],
  ] as const) {
    const job = await runGraph(
      ws,
      graphOf(
        [
          ["m", type, data],
          ["o", "nodetool.output.Output", { name: "r" }],
        ],
        ["m.output>o.value"],
      ),
    );
    t.equal(job.end.status, "failed", `${type} ${JSON.stringify(data)}: ${JSON.stringify(job.end.result ?? null)}`);
    t.match(errorOf(job.end), message);
  }
});
