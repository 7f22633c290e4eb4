/**
 * What an agent says it offers (agent/capabilities.ts): the Docker engine where the engine client would look for
 * it, GPUs from nvidia-smi's CSV, providers from the agent's own environment.
 */
import t from "tap";
import { createServer } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chmodSync, writeFileSync } from "node:fs";
import {
  detectDocker,
  detectFfmpeg,
  detectProviders,
  findFfmpeg,
  findOnPath,
  runGpuIds,
  parseNvidiaSmi,
} from "../../agent/capabilities.js";

t.test(
  "capabilities - docker is found through DOCKER_HOST as the engine client finds it, else the default socket",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nodeway-cap-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const sock = join(dir, "engine.sock");
    const server = createServer();
    await new Promise<void>((r) => server.listen(sock, r));
    t.teardown(() => server.close());
    const none = join(dir, "missing.sock");
    t.equal(detectDocker({}, sock), true, "default socket present");
    t.equal(detectDocker({}, none), false, "default socket absent");
    t.equal(detectDocker({ DOCKER_HOST: `unix://${sock}` }, none), true, "unix:// socket that exists");
    t.equal(detectDocker({ DOCKER_HOST: `unix://${none}` }, sock), false, "DOCKER_HOST wins over the default socket");
    t.equal(detectDocker({ DOCKER_HOST: "tcp://10.0.0.5:2376" }, none), true, "tcp:// counts as configured");
    t.equal(detectDocker({ DOCKER_HOST: "ssh://builder@host" }, none), true, "ssh:// counts as configured");
    t.equal(
      detectDocker({ DOCKER_HOST: "not a url" }, sock),
      false,
      "a DOCKER_HOST the client cannot use is no engine",
    );
    t.equal(detectDocker({ DOCKER_HOST: "" }, sock), true, "an empty DOCKER_HOST is unset, as for the client");
  },
);

t.test("capabilities - nvidia-smi CSV: every GPU that parses, none that does not", async (t) => {
  const gpus = parseNvidiaSmi(
    "0, NVIDIA H200, 143771, GPU-aaaa\n1, NVIDIA H200, 143771, GPU-bbbb\nNo devices were found\n\n",
  );
  t.same(gpus, [
    { index: 0, name: "NVIDIA H200", memory_total_mb: 143771, uuid: "GPU-aaaa" },
    { index: 1, name: "NVIDIA H200", memory_total_mb: 143771, uuid: "GPU-bbbb" },
  ]);
  t.same(parseNvidiaSmi("x, y, z\n"), [], "unparseable lines are skipped");
});

t.test(
  "capabilities - the GPUs a gpu-pool docker run gets: every one detected by UUID, or those configured if the host has them",
  async (t) => {
    const detected = parseNvidiaSmi(
      "0, NVIDIA H200, 143771, GPU-aaaa\n1, NVIDIA H200, 143771, GPU-bbbb\n2, NVIDIA L4, 23034\n",
    );
    t.same(
      runGpuIds(null, detected),
      ["GPU-aaaa", "GPU-bbbb", "2"],
      "unset: all detected, by UUID where nvidia-smi gave one",
    );
    t.same(runGpuIds(null, []), [], "unset and none detected: none");
    t.same(runGpuIds(["1", "GPU-aaaa"], detected), ["1", "GPU-aaaa"], "configured by index or UUID");
    t.same(runGpuIds([], detected), [], "none configured: none given");
    t.same(runGpuIds(["7"], []), ["7"], "nothing detected to check against: taken as configured");
    t.throws(
      () => runGpuIds(["1", "3", "GPU-cccc"], detected),
      /gpus: names 3, GPU-cccc, which this host's GPUs are not \(0 GPU-aaaa; 1 GPU-bbbb; 2\)/,
      "an id the host lacks is refused at start-up",
    );
  },
);

t.test("capabilities - providers come from the agent's environment only", async (t) => {
  t.same(detectProviders({ OPENAI_API_KEY: "sk-x", OLLAMA_HOST: "http://127.0.0.1:11434" }), ["openai", "ollama"]);
  t.same(detectProviders({}), []);
});

t.test("capabilities - ffmpeg is found on PATH with ffprobe beside it, and reports its version", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nodeway-cap-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const real = await detectFfmpeg();
  t.ok(real, "this host's ffmpeg (the Debian package)");
  t.match(real, { ffmpeg: /\/ffmpeg$/, ffprobe: /\/ffprobe$/, version: /^\S+$/ }, "its paths and version");
  t.equal(await detectFfmpeg({ PATH: dir }), null, "a PATH without it: none");
  t.equal(findFfmpeg({}), null, "no PATH: none");

  // An ffmpeg without ffprobe is not enough: FrameIterator and AddAudio probe their inputs.
  const fake = join(dir, "ffmpeg");
  writeFileSync(fake, "#!/bin/sh\necho 'ffmpeg version 9.9-test Copyright'\n");
  chmodSync(fake, 0o755);
  t.equal(findOnPath("ffmpeg", { PATH: `relative/bin:${dir}` }), fake, "found, relative PATH entries skipped");
  t.equal(findFfmpeg({ PATH: dir }), null, "ffmpeg alone is not offered");
  writeFileSync(join(dir, "ffprobe"), "#!/bin/sh\n");
  chmodSync(join(dir, "ffprobe"), 0o755);
  t.same(await detectFfmpeg({ PATH: dir }), { ffmpeg: fake, ffprobe: join(dir, "ffprobe"), version: "9.9-test" });
  writeFileSync(join(dir, "notexec"), "");
  t.equal(findOnPath("notexec", { PATH: dir }), null, "a file that is not executable is not a tool");
});
