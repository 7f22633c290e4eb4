/**
 * What a run writes to its temp folder (FrameIterator's copy of its input video, here) does not outlive a runner
 * that is killed before it can remove it: a stuck thread terminated after a cancel's grace, a runner process
 * killed by the OOM killer, and the agent itself killed (the next agent of the host removes what it left).
 * The agents get a private TMPDIR, so every file they leave is seen.
 */
import t from "tap";
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { dataUri, graphOf } from "../helpers/fake-media.js";
import { startAgentProc } from "../helpers/procs.js";
import { scratchDir, videoFile } from "../helpers/real-files.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";

const media = scratchDir();
t.teardown(media.remove);
// 10 fps, 30 frames: the FrameIterator stops at its first frame, held by the spin that frame's fps starts.
const video = videoFile(media.dir, "clip.mp4", { codec: ["-c:v", "libx264", "-pix_fmt", "yuv420p"], seconds: 3 });

/**
 * FrameIterator's first fps (10) is a Spin's seconds: the spin holds the runner's only thread for 10 s while the
 * iterator is suspended with its temp folder (the video's copy in it) on disk.
 */
const stuckGraph = graphOf(
  [
    ["frames", "nodetool.video.FrameIterator", { video: { type: "video", uri: dataUri(video, "video/mp4") } }],
    ["spin", "nodeway.test.Spin", {}],
  ],
  ["frames.fps>spin.seconds"],
);

/** Every file and folder under `dir`, relative to it. */
const filesUnder = (dir: string): string[] =>
  readdirSync(dir, { recursive: true, withFileTypes: true }).map((e) => relative(dir, join(e.parentPath, e.name)));
/** The files a media node left: its temp folders are `nodeway-frames-*` and `nodeway-media-*`. */
const mediaLeft = (dir: string) => filesUnder(dir).filter((p) => /nodeway-(frames|media)-/.test(p));
/** True once no media node's file is left under `dir`; else it throws naming them (a failed check shows it). */
function noMediaLeft(dir: string): true {
  const left = mediaLeft(dir);
  if (left.length > 0) throw new Error(`left: ${left.join(", ")}`);
  return true;
}

/** Starts the stuck graph under `strategy` and waits until the spin holds the runner; its job id and pid. */
async function stuckRun(ws: WsClient, strategy: string): Promise<{ jobId: string; pid: number }> {
  const r = await ws.request("run_job", { graph: stuckGraph, params: {}, execution_strategy: strategy });
  const jobId = String((r.result as { job_id: string }).job_id);
  const log = await check(
    () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
    30_000,
    { name: `${strategy}: the spin holds the runner` },
  );
  return { jobId, pid: Number(/pid (\d+)/.exec(String(log.content))![1]) };
}

t.test("runner temp - a thread terminated after a cancel's grace leaves no file of its run", async (t) => {
  const tmp = scratchDir();
  t.teardown(tmp.remove);
  const s = await startStack(t, { agentArgs: ["--strategies", "threaded"], agentEnv: { TMPDIR: tmp.dir } });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const { jobId } = await stuckRun(ws, "threaded");
  t.ok(
    mediaLeft(tmp.dir).some((p) => /\/input$/.test(p)),
    "while it runs, the video's copy is on disk",
  );
  await ws.request("cancel_job", { job_id: jobId });
  const end = await check(() => terminal(ws.events(jobId)), 30_000, { name: "cancelled" });
  t.equal(end.status, "cancelled", "the stuck job ends cancelled (its thread terminated)");
  await check(() => noMediaLeft(tmp.dir), 10_000, { name: "the terminated thread's files removed" });
  t.pass("nothing of the run is left in the temp folder");
});

t.test("runner temp - a runner process the OOM killer takes leaves no file of its run", async (t) => {
  const tmp = scratchDir();
  t.teardown(tmp.remove);
  const s = await startStack(t, { agentArgs: ["--strategies", "subprocess"], agentEnv: { TMPDIR: tmp.dir } });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const { jobId, pid } = await stuckRun(ws, "subprocess");
  t.ok(
    mediaLeft(tmp.dir).some((p) => /\/input$/.test(p)),
    "while it runs, the video's copy is on disk",
  );
  process.kill(pid, "SIGKILL");
  const end = await check(() => terminal(ws.events(jobId)), 30_000, { name: "crashed" });
  t.equal((end.error as { code?: string } | undefined)?.code, "JOB_ERR_RUNNER_CRASHED", "the job fails as crashed");
  await check(() => noMediaLeft(tmp.dir), 10_000, { name: "the killed process's files removed" });
  t.pass("nothing of the run is left in the temp folder");
});

t.test("runner temp - what a killed agent's runs left is removed when the next agent starts", async (t) => {
  const tmp = scratchDir();
  t.teardown(tmp.remove);
  const s = await startStack(t, { agentArgs: ["--strategies", "subprocess"], agentEnv: { TMPDIR: tmp.dir } });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const { pid } = await stuckRun(ws, "subprocess");
  await s.agents[0]!.kill("SIGKILL");
  process.kill(pid, "SIGKILL"); // its runner would end by itself (its lifeline); the test does not wait for that
  t.ok(
    mediaLeft(tmp.dir).some((p) => /\/input$/.test(p)),
    "the killed agent's run left the video's copy",
  );
  const next = await startAgentProc(s.ns.url, ["--name", "next", "--strategies", "subprocess"], { TMPDIR: tmp.dir });
  t.teardown(() => next.kill("SIGKILL"));
  t.same(mediaLeft(tmp.dir), [], "the next agent removed it at its start");
});
