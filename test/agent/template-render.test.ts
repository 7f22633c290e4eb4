/**
 * Template rendering (FormatText, Template): both placeholder forms as before, and a template of unclosed `{{` is
 * rendered in one pass, not scanned to its end from every `{{` (a 400 KB one took 15 s; found by fuzzing). The
 * check counts regex work indirectly: the run must finish while a quadratic one would not (10 MB of `{{`).
 */
import t from "tap";
import { renderTemplate } from "../../agent/nodes/template.js";
import { DEFAULT_NODE_LIMITS } from "../../agent/engine/types.js";

t.test("template - placeholders render as before; unclosed {{ stay text", async (t) => {
  const vars = { name: "Ada", n: 3, o: { k: "v" } };
  t.equal(renderTemplate("Hi {{ name }}, {name}! {{ o.k | upper }}", vars), "Hi Ada, Ada! V");
  t.equal(renderTemplate("{{ missing }} {missing} {n}", vars), "{{ missing }} {missing} 3");
  t.equal(renderTemplate("{{ name }} then {{ no close {name}", vars), "Ada then {{ no close Ada");
  t.equal(renderTemplate("{a}} {{x}", { a: 1, x: 2 }), "{a}} {{x}", "half-open forms stay as they are");
  const limits = { ...DEFAULT_NODE_LIMITS, nodeStringMaxBytes: 64 * 1024 * 1024 };
  const open = "{{".repeat(5_000_000);
  t.equal(renderTemplate(`{{ name }}${open} {name}`, vars, limits), `Ada${open} Ada`, "10 MB of unclosed {{: one pass");
});
