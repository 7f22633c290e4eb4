/**
 * A ComfyUI that misbehaves (test/helpers/fake-comfyui.ts's modes, over real sockets) fails the prompt quickly and
 * says why, naming ComfyUI: answers larger than the agent reads (declared or not) are refused or cut without being
 * held whole, a file cut off says so, `POST /prompt` must say it queued the prompt, a prompt ComfyUI lost or never
 * ran fails (checked after a reconnect and by polling), a prompt that ran with no outputs is no success, and a
 * history entry that says only "error" says that.
 */
import t, { type Test } from "tap";
import { ComfyClient } from "../../agent/integrations/index.js";
import { check } from "../helpers/check.js";
import { FakeComfyUI, type FakeComfyOptions } from "../helpers/fake-comfyui.js";

/** How long any prompt here may take before the test gives up on it. */
const DEADLINE_MS = 20_000;
const MIB = 1024 * 1024;

const txt2img = () => ({
  "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "sd_xl_base_1.0.safetensors" } },
  "6": { class_type: "CLIPTextEncode", inputs: { text: "a cat", clip: ["4", 1] } },
  "3": { class_type: "KSampler", inputs: { steps: 3, seed: 1, model: ["4", 0], positive: ["6", 0] } },
  "9": { class_type: "SaveImage", inputs: { filename_prefix: "big", images: ["3", 0] } },
  "10": { class_type: "SaveImage", inputs: { filename_prefix: "thumb", images: ["3", 0] } },
});

const hooks = { progress: () => undefined, log: () => undefined, preview: () => undefined };

/** A fake ComfyUI and a client of it that is up (socket open, classes read). */
async function setup(
  t: Test,
  opts: FakeComfyOptions = {},
  pollMs?: number,
): Promise<{ fake: FakeComfyUI; client: ComfyClient; logs: string[] }> {
  const fake = await FakeComfyUI.start(opts);
  t.teardown(() => fake.stop());
  const logs: string[] = [];
  const client = new ComfyClient(fake.url, (l) => logs.push(l), pollMs ? { pollMs } : {});
  t.teardown(() => client.stop());
  await client.start();
  await check(() => client.up, 10_000, { name: "the client is up" });
  return { fake, client, logs };
}

/** How a prompt ends: its outputs, or its error's message. */
async function outcome(client: ComfyClient): Promise<{ error: string | null; ms: number }> {
  const started = Date.now();
  const signal = AbortSignal.timeout(DEADLINE_MS);
  try {
    await client.run(txt2img(), signal, hooks);
    return { error: null, ms: Date.now() - started };
  } catch (err) {
    return {
      error: signal.aborted ? `no end within ${DEADLINE_MS} ms` : (err as Error).message,
      ms: Date.now() - started,
    };
  }
}

async function viewError(client: ComfyClient): Promise<string> {
  const signal = AbortSignal.timeout(DEADLINE_MS);
  try {
    await client.view({ filename: "out.png", subfolder: "", type: "output" }, signal);
    return "viewed";
  } catch (err) {
    return signal.aborted ? `no end within ${DEADLINE_MS} ms` : (err as Error).message;
  }
}

t.test("comfyui - a file declared larger than an asset is refused unread", async (t) => {
  const { fake, client } = await setup(t, { mode: "huge-file" });
  t.equal(
    await viewError(client),
    "ComfyUI's answer to GET /view of output/out.png declares 2147483648 bytes, more than the 256 MiB this agent reads: not read",
  );
  await check(() => fake.sentBytes > 0, 5_000, { name: "the fake began to send" });
  const sent = fake.sentBytes;
  await check(() => fake.sentBytes === sent, 5_000, { name: "the fake stopped sending", intervalMs: 500 });
  t.ok(fake.sentBytes < 64 * MIB, `the connection closed after ${fake.sentBytes / MIB} MiB`);
});

t.test("comfyui - a file of no declared length is read no further than an asset's bound", async (t) => {
  const { fake, client } = await setup(t, { mode: "endless-file" });
  t.equal(
    await viewError(client),
    "ComfyUI's answer to GET /view of output/out.png runs past the 256 MiB this agent reads: not read",
  );
  const sent = fake.sentBytes;
  await check(() => fake.sentBytes === sent, 5_000, { name: "the fake stopped sending", intervalMs: 500 });
  t.ok(fake.sentBytes < 256 * MIB + 64 * MIB, `the connection closed after ${fake.sentBytes / MIB} MiB`);
});

t.test("comfyui - a file cut off says so, and how much came", async (t) => {
  const { client } = await setup(t, { mode: "cut-file" });
  t.match(
    await viewError(client),
    /^ComfyUI's answer to GET \/view of output\/out\.png was cut off after 40 bytes of the 100000 it declared \(.+\)$/,
  );
});

t.test("comfyui - a file that keeps coming over a slow link is read past the API's 10 s deadline", async (t) => {
  const { client } = await setup(t, { mode: "slow-file" });
  const started = Date.now();
  const signal = AbortSignal.timeout(40_000);
  const bytes = await client.view({ filename: "out.png", subfolder: "", type: "output" }, signal);
  t.equal(bytes.length, 16 * 64 * 1024, "all 1 MiB read");
  t.ok(Date.now() - started > 10_000, `over ${Math.round((Date.now() - started) / 1000)} s`);
});

t.test("comfyui - a file whose bytes stop coming fails after the idle limit, saying so", async (t) => {
  const fake = await FakeComfyUI.start({ mode: "stalled-file" });
  t.teardown(() => fake.stop());
  const client = new ComfyClient(fake.url, () => undefined, { fileIdleMs: 1_500 });
  t.teardown(() => client.stop());
  await client.start();
  await check(() => client.up, 10_000, { name: "the client is up" });
  const started = Date.now();
  t.match(
    await viewError(client),
    /^ComfyUI's answer to GET \/view of output\/out\.png was cut off after 40 bytes of the 100000 it declared \(no byte for 1500 ms\)$/,
  );
  t.ok(Date.now() - started < 8_000, "soon after the bytes stopped");
});

t.test("comfyui - a JSON answer without end is read no further than its bound", async (t) => {
  const { fake, client } = await setup(t, { mode: "endless-json" });
  const r = await outcome(client);
  t.equal(r.error, "ComfyUI's answer to POST /prompt runs past the 32 MiB this agent reads: not read");
  t.ok(fake.sentBytes < 96 * MIB, `the fake sent ${fake.sentBytes / MIB} MiB`);
});

t.test("comfyui - POST /prompt must say it queued the prompt, with no node errors", async (t) => {
  const { fake, client } = await setup(t);
  fake.mode = "prompt-not-json";
  t.equal((await outcome(client)).error, "ComfyUI's answer to POST /prompt is not JSON: <<<garbage not json>>>");
  fake.mode = "prompt-node-errors";
  const r = await outcome(client);
  t.equal(
    r.error,
    "ComfyUI refused the prompt — node 9 (SaveImage): Required input is missing: images",
    "node_errors quoted",
  );
  const queued = fake.requests.filter((q) => q.path === "/prompt").at(-1)?.body as { prompt_id: string };
  t.ok(
    fake.requests.some(
      (q) => q.method === "POST" && q.path === "/queue" && JSON.stringify(q.body).includes(queued.prompt_id),
    ),
    "the prompt ComfyUI queued all the same was taken out",
  );
  fake.mode = null;
  t.equal((await outcome(client)).error, null, "the next prompt runs");
});

t.test("comfyui - a prompt ComfyUI lost in a restart fails after the reconnect", async (t) => {
  const { client } = await setup(t, { mode: "forget-prompt" });
  const r = await outcome(client);
  t.match(r.error, /^ComfyUI lost prompt [-0-9a-f]+: it is neither queued, running nor in its history/);
  t.ok(r.ms < 10_000, `failed in ${r.ms} ms`);
});

t.test("comfyui - a prompt that never runs nor ends fails at the next poll", async (t) => {
  const { client } = await setup(t, { mode: "vanish" }, 200);
  const r = await outcome(client);
  t.match(r.error, /^ComfyUI lost prompt [-0-9a-f]+: it is neither queued, running nor in its history/);
  t.ok(r.ms < 5_000, `failed in ${r.ms} ms`);
});

t.test("comfyui - polling fails no prompt that is queued, running or done", async (t) => {
  const { client, logs } = await setup(t, { stepMs: 5 }, 10);
  const runs = await Promise.all(Array.from({ length: 6 }, () => outcome(client)));
  t.same(
    runs.map((r) => r.error),
    runs.map(() => null),
    "every prompt completed",
  );
  t.same(
    logs.filter((l) => /unreadable/.test(l)),
    [],
    "and no poll failed",
  );
});

t.test("comfyui - a prompt whose output nodes reported nothing is no success", async (t) => {
  const { client } = await setup(t, { mode: "no-outputs" });
  const want =
    "ComfyUI reported no outputs for the prompt, though its output node(s) 9 (SaveImage), 10 (SaveImage) ran";
  t.equal((await outcome(client)).error, want, "told on the socket");
  const dropped = await setup(t, { mode: "no-outputs", dropSocketAfterFirstStep: true });
  t.equal((await outcome(dropped.client)).error, want, "read from the history after a reconnect");
});

t.test("comfyui - a history entry that says only 'error' says that", async (t) => {
  const { client } = await setup(t, { mode: "bare-error" });
  t.match(
    (await outcome(client)).error,
    /^ComfyUI's history says prompt [-0-9a-f]+ failed, and not which node nor why \(see ComfyUI's log\)$/,
  );
});
