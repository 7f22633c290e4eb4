/**
 * A docker run's socket directory lies in a parent directory of the agent's own, mode 0700, with a name made at
 * random: the container reaches its socket through its mount, and no other user of the host can list the parent,
 * reach a run's directory or connect to its socket and pose as its runner.
 */
import t from "tap";
import { spawnSync } from "node:child_process";
import { lstatSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import Docker from "dockerode";
import { WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { spinGraph, submit, terminal } from "../helpers/strategy-jobs.js";

const docker = new Docker();
const NOBODY = 65534;

/** What a process of user `nobody` gets trying `what` on `path`: "ok" or the error's code. */
function asNobody(what: "connect" | "list", path: string): string {
  const script =
    what === "connect"
      ? `const s = require("node:net").connect(${JSON.stringify(path)}); s.on("connect", () => { console.log("ok"); s.destroy(); }); s.on("error", (e) => console.log(e.code));`
      : `try { require("node:fs").readdirSync(${JSON.stringify(path)}); console.log("ok"); } catch (e) { console.log(e.code); }`;
  const r = spawnSync(process.execPath, ["-e", script], {
    uid: NOBODY,
    gid: NOBODY,
    encoding: "utf8",
    timeout: 10_000,
  });
  return r.stdout.trim() || `no answer (${r.stderr.trim()})`;
}

t.test(
  "docker - a run's socket is in a 0700 parent of the agent's: another user can neither list it nor connect",
  { skip: process.getuid?.() !== 0 ? "needs root to act as another user" : false },
  async (t) => {
    const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "docker"] });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const jobId = await submit(ws, spinGraph(300), "docker");
    t.teardown(async () => {
      for (const c of await docker
        .listContainers({ all: true, filters: { label: [`nodeway.run=${jobId}`] } })
        .catch(() => [])) {
        await docker
          .getContainer(c.Id)
          .remove({ force: true })
          .catch(() => undefined);
      }
    });
    await check(
      () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
      60_000,
      { name: "spin started" },
    );
    const [c] = await docker.listContainers({ filters: { label: [`nodeway.run=${jobId}`] } });
    const mount = (await docker.getContainer(c!.Id).inspect()).Mounts.find((m) => m.Destination === "/run/nodeway");
    t.ok(mount, "the run's directory is mounted");
    const runDir = mount!.Source;
    const parent = dirname(runDir);
    const st = lstatSync(parent);
    t.ok(st.isDirectory() && !st.isSymbolicLink(), `${parent} is a directory`);
    t.equal((st.mode & 0o777).toString(8), "700", "the parent's mode is 0700");
    t.equal(st.uid, process.getuid!(), "owned by the agent's user");
    t.match(basename(parent), /^nodeway-runs-[A-Za-z0-9]{6}$/, "named at random");
    t.equal(asNobody("list", parent), "EACCES", "another user cannot list the runs");
    t.equal(asNobody("list", runDir), "EACCES", "nor a run's directory");
    t.equal(
      asNobody("connect", join(runDir, "runner.sock")),
      "EACCES",
      "nor connect to a run's socket knowing its path",
    );
    await ws.request("cancel_job", { job_id: jobId });
    const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: "cancelled" });
    t.equal(end.status, "cancelled", "the run itself reached its socket, and ends");
    await check(
      () => {
        try {
          lstatSync(runDir);
          return null;
        } catch {
          return true;
        }
      },
      20_000,
      { name: "the run's directory is removed" },
    );
  },
);
