/**
 * The config file (NODEWAY_CONFIG, else `$NODEWAY_HOME/config.json`) is checked whole when a command starts: one
 * that is not JSON, not an object of known sections, or has a section that is not an object is refused, and the
 * message names the file and what is wrong (`null` gave "Cannot read properties of null", `[1,2]` passed).
 */
import t from "tap";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GATEWAY_OPTION_KEYS } from "../../gateway/index.js";
import { commandFlags, parseArgs, settingsFor } from "../../bin/settings.js";

const dir = mkdtempSync(join(tmpdir(), "nw-settings-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const noArgs = parseArgs([], commandFlags(GATEWAY_OPTION_KEYS, new Set()));
const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The gateway's settings with `text` as the config file. */
function withConfig(name: string, text: string): Record<string, unknown> {
  const file = join(dir, name);
  writeFileSync(file, text);
  return settingsFor("gateway", GATEWAY_OPTION_KEYS, noArgs, { env: { NODEWAY_CONFIG: file } });
}

t.test("settings - a config file that is not an object of sections is refused, naming the file", async (t) => {
  for (const [name, text, kind] of [
    ["null.json", "null", "null"],
    ["list.json", "[1,2]", "a list"],
    ["string.json", '"str"', "a string"],
    ["number.json", "5", "a number"],
  ] as const) {
    t.throws(
      () => withConfig(name, text),
      {
        message: `config file ${join(dir, name)}: must hold a JSON object of sections (gateway, agent, proxy), got ${kind}`,
      },
      `${text} is refused`,
    );
  }
});

t.test("settings - a section that is not an object is refused, naming the file and the section", async (t) => {
  t.throws(() => withConfig("proxy-list.json", '{"proxy":[]}'), {
    message: `config file ${join(dir, "proxy-list.json")}: "proxy" must be an object of settings, got a list`,
  });
  t.throws(
    () => withConfig("gateway-null.json", '{"gateway":null}'),
    /gateway-null\.json: "gateway" must be an object of settings, got null/,
  );
  t.throws(
    () => withConfig("agent-string.json", '{"agent":"x"}'),
    /agent-string\.json: "agent" must be an object of settings, got a string/,
    "another command's section is checked too",
  );
});

t.test("settings - a config file with a JSON syntax error names the file", async (t) => {
  t.throws(() => withConfig("cut.json", '{"gateway":'), {
    message: new RegExp(`^config file ${literal(join(dir, "cut.json"))}: not valid JSON \\(.+\\)$`),
  });
});

t.test("settings - a config file that cannot be read names the file", async (t) => {
  const sub = mkdtempSync(join(dir, "a-directory-"));
  t.throws(() => settingsFor("gateway", GATEWAY_OPTION_KEYS, noArgs, { env: { NODEWAY_CONFIG: sub } }), {
    message: new RegExp(`^cannot read config file ${literal(sub)}: EISDIR`),
  });
});

t.test("settings - an unknown section is refused like an unknown setting", async (t) => {
  t.throws(() => withConfig("typo.json", '{"gatway":{"port":1}}'), {
    message: `config file ${join(dir, "typo.json")}: unknown section "gatway" (the sections are gateway, agent, proxy)`,
  });
  t.throws(() => withConfig("key.json", '{"gateway":{"prot":1}}'), /key\.json: unknown setting "gateway\.prot"/);
});

t.test("settings - a good config file, and none at all, still give their settings", async (t) => {
  t.same(withConfig("good.json", '{"gateway":{"port":1234},"agent":{},"proxy":{"httpsPort":0}}'), { port: 1234 });
  t.same(
    settingsFor("gateway", GATEWAY_OPTION_KEYS, noArgs, { env: { NODEWAY_CONFIG: join(dir, "absent.json") } }),
    {},
    "a missing file is no config",
  );
});
