/**
 * `nodeway run` on a real terminal (a pty from util-linux `script`): progress drawn in place, a run that goes on
 * through a connection cut twice with every token once and in order, and Ctrl-C that asks before cancelling (the
 * job keeps running) while a second Ctrl-C cancels it.
 */
import t from "tap";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { check } from "../helpers/check.js";
import { api, tokensWorkflow } from "../helpers/clients.js";
import { NODEWAY } from "../helpers/procs.js";
import { startStack } from "../helpers/stack.js";
import { CutProxy } from "../client/cut-proxy.js";

const s = await startStack(t);
const dir = mkdtempSync(join(tmpdir(), "nw-cli-pty-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A command line run by `sh` on a pty of 100 columns; what the terminal shows, what to type, how it ended. */
function onPty(command: string) {
  const p = spawn("script", ["-qfec", `stty cols 100 rows 40; exec ${command}`, "/dev/null"], {
    env: { ...process.env, TERM: "xterm" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let shown = "";
  p.stdout.on("data", (d: Buffer) => (shown += d.toString()));
  p.stderr.on("data", (d: Buffer) => (shown += d.toString()));
  const exited = new Promise<number>((r) => p.once("exit", (code, sig) => r(code ?? (sig ? 128 : -1))));
  t.teardown(() => void (p.exitCode === null && p.kill("SIGKILL")));
  return { shown: () => shown, type: (keys: string) => p.stdin.write(keys), exited };
}

const run = (file: string, gateway: string) => `${process.execPath} ${NODEWAY} run ${file} --gateway ${gateway}`;
const jobIdIn = (text: string) => /job (\w{26}) (?:queued|running)/.exec(text)?.[1] ?? null;

t.test(
  "cli pty - the run resumes after two cuts: progress redrawn in place, every token once",
  { timeout: 90_000 },
  async (t) => {
    const n = 500;
    const proxy = await CutProxy.start(s.url);
    t.teardown(() => proxy.stop());
    const wf = join(dir, "tokens-pty.json");
    writeFileSync(wf, JSON.stringify(tokensWorkflow(n, 50)));
    const out = join(dir, "tokens-pty.out");
    const term = onPty(`${run(wf, proxy.url)} > ${out}`);
    const jobId = await check(() => jobIdIn(term.shown()), 20_000, { name: "the job shown" });
    const tokensOut = () => (readFileSync(out, "utf8").match(/tok\d+ /g) ?? []).length;
    for (const at of [60, 200]) {
      await check(() => tokensOut() >= at, 20_000, { name: `${at} tokens before the cut` });
      await proxy.cut();
      await check(() => /reconnecting/.test(term.shown()), 10_000, { name: "the cut is said" });
      const job = async () => (await api(s.url, "GET", `/api/jobs/${jobId}`)).body;
      t.equal((await job()).status, "running", "the job runs on while the CLI is cut off");
      await proxy.restore();
    }
    t.equal(await term.exited, 0, "exits 0 when the job completed");
    const text = readFileSync(out, "utf8");
    const want = Array.from({ length: n }, (_, i) => `tok${i} `).join("");
    t.ok(text.startsWith(`${want}\n`), "stdout has every token once, in order, across both cuts");
    t.match(JSON.parse(text.slice(text.indexOf("{"))), { status: "completed", job_id: jobId });
    const shown = term.shown();
    t.equal((shown.match(/resuming job \w+ after seq \d+/g) ?? []).length, 2, "both resumes are said, with their seq");
    t.match(shown, /\x1b\[J/, "the progress block is redrawn in place");
    t.match(shown, /✓ Tokens\s+completed/, "with the node's state");
    t.match(shown, new RegExp(`job ${jobId} completed`));
  },
);

t.test(
  "cli pty - Ctrl-C asks and the job keeps running; a second Ctrl-C cancels it",
  { timeout: 90_000 },
  async (t) => {
    const wf = join(dir, "tokens-slow.json");
    writeFileSync(wf, JSON.stringify(tokensWorkflow(5_000, 40)));
    const term = onPty(run(wf, s.url));
    const jobId = await check(() => jobIdIn(term.shown()), 20_000, { name: "the job shown" });
    await check(() => /tok5 /.test(term.shown()), 20_000, { name: "tokens on the terminal" });
    term.type("\x03");
    await check(() => /Cancel job \w+\? \[y\]es/.test(term.shown()), 10_000, { name: "the question" });
    const status = async () => String((await api(s.url, "GET", `/api/jobs/${jobId}`)).body.status);
    t.equal(await status(), "running", "one Ctrl-C does not cancel");
    const seen = term.shown().length;
    await check(() => /tok\d+ /.test(term.shown().slice(seen)), 10_000, { name: "tokens still coming" });
    term.type("\x03");
    t.equal(await term.exited, 130, "the second Ctrl-C cancels, and the CLI exits 130");
    t.match(term.shown(), /cancelling job/);
    t.match(term.shown(), /"status": "cancelled"/, "the run's result says cancelled");
    t.equal(await status(), "cancelled", "the job is cancelled");
  },
);

t.test("cli pty - Ctrl-C then y cancels; d leaves the job running", { timeout: 90_000 }, async (t) => {
  const wf = join(dir, "tokens-slow2.json");
  writeFileSync(wf, JSON.stringify(tokensWorkflow(5_000, 40)));
  const status = async (id: string) => String((await api(s.url, "GET", `/api/jobs/${id}`)).body.status);
  for (const [key, want, code] of [
    ["y", "cancelled", 130],
    ["d", "running", 130],
  ] as const) {
    const term = onPty(run(wf, s.url));
    const jobId = await check(() => jobIdIn(term.shown()), 20_000, { name: "the job shown" });
    await check(() => /tok3 /.test(term.shown()), 20_000, { name: "tokens on the terminal" });
    term.type("\x03");
    await check(() => /Cancel job/.test(term.shown()), 10_000, { name: "the question" });
    term.type(`${key}\n`);
    t.equal(await term.exited, code, `${key}: exits ${code}`);
    await check(async () => (await status(jobId)) === want, 10_000, { name: `${key}: the job is ${want}` });
    t.pass(`${key}: the job is ${want}`);
    if (key === "d") {
      t.match(term.shown(), new RegExp(`nodeway logs ${jobId} --follow`), "d says how to follow it");
      await api(s.url, "POST", `/api/jobs/${jobId}/cancel`);
    }
  }
});
