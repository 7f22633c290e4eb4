/**
 * NATS credentials (nats/settings.ts) and the least-privilege accounts of `deploy/nats/accounts.conf`,
 * run for real: a nats-server with that file, a gateway as its `gateway` user (password from a file) and an agent
 * as `agent-1` (the password in the URL, the way NATS users write it). Jobs run end to end (one with an output
 * large enough to become an asset, one on an operator label's pool, whose consumer the gateway makes when the agent
 * registers with it); the agent user cannot queue jobs or delete streams; wrong credentials stop a process at start
 * with a message that says so; no password reaches a log. The shipped file is `nodeway nats-accounts`'s output.
 */
import t from "tap";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { compileNatsConnection, renderAccounts } from "../../nats/index.js";
import { cmdNatsAccounts, placeholderOf } from "../../bin/cmd-accounts.js";
import { startGateway } from "../../gateway/index.js";
import { WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { NatsServer } from "../helpers/nats-server.js";
import { ROOT, runNodeway, startAgentProc } from "../helpers/procs.js";
import { createTestCa } from "../helpers/tls-tools.js";

const read = (files: Record<string, string>) => (path: string) => {
  if (!(path in files)) throw Object.assign(new Error("no such file"), { code: "ENOENT" });
  return files[path]!;
};

t.test(
  "nats auth - URLs, users, password files and credentials files are checked once; what is shown never holds a secret",
  async (t) => {
    const none = read({});
    t.same(compileNatsConnection({}, none), {
      servers: ["nats://127.0.0.1:4222"],
      shown: "nats://127.0.0.1:4222",
      auth: { kind: "none" },
      tls: null,
    });
    const inUrl = compileNatsConnection(
      { natsUrl: "nats://agent:s3cr%40t@nats-1:4222, nats://agent:s3cr%40t@nats-2:4222" },
      none,
    );
    t.same(inUrl.servers, ["nats://nats-1:4222", "nats://nats-2:4222"], "the credentials are taken out of the URLs");
    t.same(inUrl.auth, { kind: "password", user: "agent", pass: "s3cr@t" }, "and decoded");
    t.equal(
      inUrl.shown,
      "nats://nats-1:4222,nats://nats-2:4222 as agent",
      "what is logged names the user, not the password",
    );
    t.same(
      compileNatsConnection({ natsUrl: "tls://tok3n@nats-1:4222" }, none).auth,
      { kind: "token", token: "tok3n" },
      "a user without password is a token",
    );
    const fromFile = compileNatsConnection(
      { natsUrl: "nats-1:4222", natsUser: "gateway", natsPasswordFile: "/run/pw" },
      read({ "/run/pw": "hunter2\n" }),
    );
    t.same(fromFile.auth, { kind: "password", user: "gateway", pass: "hunter2" }, "the password file's first line");
    const creds =
      "-----BEGIN NATS USER JWT-----\neyJ…\n------END NATS USER JWT------\n-----BEGIN USER NKEY SEED-----\nSUA…\n------END USER NKEY SEED------\n";
    t.match(compileNatsConnection({ natsCredsFile: "/run/a.creds" }, read({ "/run/a.creds": creds })), {
      auth: { kind: "creds", creds },
      shown: /with credentials from \/run\/a\.creds/,
    });

    const refused: [Record<string, string>, Record<string, string>, RegExp][] = [
      [
        { natsUrl: "nats://a:1@x:4222,nats://b:2@y:4222" },
        {},
        /natsUrl: gives different credentials for different servers/,
      ],
      [{ natsUrl: "http://x" }, {}, /natsUrl: not a NATS URL/],
      [{ natsUrl: "http://user:pw@x" }, {}, /not a NATS URL: http:\/\/…@x$/],
      [{ natsUrl: "" }, {}, /needs at least one URL/],
      [{ natsUser: "gateway" }, {}, /natsUser: needs natsPasswordFile/],
      [{ natsPasswordFile: "/run/pw" }, { "/run/pw": "x" }, /natsPasswordFile: needs natsUser/],
      [
        { natsUser: "gateway", natsPasswordFile: "/run/missing" },
        {},
        /natsPasswordFile: cannot read \/run\/missing: ENOENT/,
      ],
      [
        { natsUser: "gateway", natsPasswordFile: "/run/pw" },
        { "/run/pw": "\nsecond-line" },
        /holds no password on its first line/,
      ],
      [
        { natsUser: "a b", natsPasswordFile: "/run/pw" },
        { "/run/pw": "x" },
        /natsUser: must be a non-empty name without spaces/,
      ],
      [{ natsCredsFile: "/run/a.creds" }, { "/run/a.creds": "not creds" }, /is not a NATS credentials file/],
      [
        { natsUrl: "nats://u:p@x:4222", natsUser: "gateway", natsPasswordFile: "/run/pw" },
        { "/run/pw": "x" },
        /one way to authenticate to NATS, not credentials in natsUrl and natsUser/,
      ],
      [
        { natsUser: "gateway", natsPasswordFile: "/run/pw", natsCredsFile: "/run/a.creds" },
        { "/run/pw": "x", "/run/a.creds": creds },
        /natsCredsFile: give one way/,
      ],
      [{ natsTlsCertFile: "/run/c.pem" }, { "/run/c.pem": "-----BEGIN CERTIFICATE-----" }, /natsTlsKeyFile/],
      [
        { natsTlsCaFile: "/run/ca.pem" },
        { "/run/ca.pem": "not pem" },
        /natsTlsCaFile: \/run\/ca\.pem holds no PEM certificate/,
      ],
      [{ natsTlsCaFile: "/run/none.pem" }, {}, /natsTlsCaFile: cannot read/],
    ];
    for (const [opts, files, why] of refused) {
      t.throws(() => compileNatsConnection(opts, read(files)), why, JSON.stringify(opts));
    }
  },
);

t.test(
  "nats auth - deploy/nats/accounts.conf: gateway and agents run jobs with least privilege, and the agent user can do no more",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nw-nats-auth-"));
    const gwPass = "gw-pass-0123456789abcdef";
    const agentPass = "agent-pass-0123456789abcdef";
    const conf = join(dir, "accounts.conf");
    writeFileSync(
      conf,
      readFileSync(join(ROOT, "deploy", "nats", "accounts.conf"), "utf8")
        // Every placeholder replaced: nats-server would read one left bare from its environment.
        .replace(/\$[A-Z0-9_]+_PASSWORD\b/g, (p) =>
          JSON.stringify(p === "$GATEWAY_PASSWORD" ? gwPass : p === "$AGENT_1_PASSWORD" ? agentPass : `${p}-unused`),
        ),
    );
    const ns = await NatsServer.start({ configFile: conf });
    t.teardown(() => ns.stop());
    const pwFile = join(dir, "gateway.pw");
    writeFileSync(pwFile, `${gwPass}\n`, { mode: 0o600 });

    const stderr: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      stderr.push(String(chunk));
      return write(chunk, ...rest);
    }) as typeof process.stderr.write;
    t.teardown(() => void (process.stderr.write = write));
    const gw = await startGateway({ natsUrl: ns.url, natsUser: "gateway", natsPasswordFile: pwFile, port: 0 });
    t.teardown(() => gw.stop());
    t.match(
      stderr.join(""),
      new RegExp(`connecting to NATS at ${ns.url.replace(/[.]/g, "\\.")} as gateway`),
      "the gateway logs whom it connects as",
    );

    const agentUrl = ns.url.replace("nats://", `nats://agent-1:${agentPass}@`);
    const agent = await startAgentProc(agentUrl, ["--name", "least", "--labels", "special"]);
    t.teardown(() => agent.kill("SIGKILL"));
    const ws = await WsClient.open(gw.url, "json");
    t.teardown(() => ws.close());
    const run = async (graph: unknown, extra: Record<string, unknown> = {}) => {
      const r = await ws.request("run_job", { graph, params: {}, ...extra });
      const jobId = String((r.result as { job_id: string }).job_id);
      return ws.waitTerminal(jobId, 30_000);
    };
    const hello = JSON.parse(readFileSync(join(ROOT, "examples", "hello-world.json"), "utf8")) as { graph: unknown };
    t.equal((await run(hello.graph)).status, "completed", "a job runs with the agent's narrow permissions");
    const big = {
      nodes: [
        { id: "b", type: "nodeway.test.Bytes", data: { size: 600 * 1024, png: true } },
        { id: "o", type: "nodetool.output.Output", data: { name: "image" } },
      ],
      edges: [{ id: "e", source: "b", sourceHandle: "output", target: "o", targetHandle: "value" }],
    };
    const asset = await run(big);
    t.equal(asset.status, "completed", "the agent may store an output as an asset");
    t.match((asset.result as { image: unknown[] }).image[0], { type: "image", uri: /^asset:\/\// });
    t.equal(
      (await run(hello.graph, { requirements: { pool: "special" } })).status,
      "completed",
      "and pull its operator label's pool, which the gateway made for it",
    );

    // The agent user itself, outside Nodeway: what it may not do.
    const nc = await connect({ servers: ns.url, user: "agent-1", pass: agentPass, inboxPrefix: "_INBOX_agent-1" });
    t.teardown(() => nc.close());
    const violations: string[] = [];
    void (async () => {
      for await (const s of nc.status())
        if (s.type === "error") violations.push(String((s as { error?: Error }).error?.message));
    })();
    nc.publish("nw.jobs.cpu", "a job from an agent");
    await nc.flush();
    // Assets are read through the gateways, for a job the agent holds (gateway/agent-assets.ts): never directly.
    const assetId = String((asset.result as { image: { asset_id: string }[] }).image[0]!.asset_id);
    const direct = await new Objm(nc)
      .open("nw_assets")
      .then((store) => store.getBlob(assetId))
      .then(
        (b) => `read ${b?.byteLength} bytes`,
        (err: Error) => err.message,
      );
    t.notMatch(direct, /^read/, `the agent user may not read an asset from the bucket (${direct})`);
    const back = await fetch(`${gw.url}/api/assets/${assetId}/content`).then((r) => r.arrayBuffer());
    t.equal(back.byteLength, 600 * 1024, "the asset it stored is whole (its chunks, and the entry a gateway wrote)");
    const jsm = await jetstreamManager(nc);
    const deleted = await jsm.streams.delete("NW_JOBS").then(
      () => "deleted",
      (err: Error) => err.message,
    );
    t.not(deleted, "deleted", `an agent cannot delete the job queue (${deleted})`);
    t.ok(
      violations.some((v) => /Permissions Violation for Publish to "nw\.jobs\.cpu"/.test(v)),
      "nor queue a job",
    );

    const wrongUrl = ns.url.replace("nats://", "nats://agent-1:wrong-password@");
    const wrong = runNodeway(["agent", "--nats", wrongUrl, "--name", "wrong"]);
    t.equal(await wrong.exited, 1, "wrong credentials stop the agent at start");
    t.match(wrong.stderr(), /NATS at nats:\/\/127\.0\.0\.1:\d+ as agent-1 refused the credentials/);
    for (const [who, text] of [
      ["gateway", stderr.join("")],
      ["agent", agent.stdout() + agent.stderr()],
      ["refused agent", wrong.stdout() + wrong.stderr()],
    ] as const) {
      t.notOk(
        text.includes(gwPass) || text.includes(agentPass) || text.includes("wrong-password"),
        `no password in the ${who}'s log`,
      );
    }
  },
);

t.test(
  "nats auth - TLS to NATS: a NATS that verifies its clients takes a gateway and an agent with certificates from its CA, and refuses one without",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nw-nats-tls-"));
    const ca = createTestCa("Nodeway NATS Test CA");
    const server = ca.issue(["127.0.0.1", "localhost"]);
    const client = ca.issue(["nodeway-client"], { clientAuth: true });
    const file = (name: string, text: string) => {
      const p = join(dir, name);
      writeFileSync(p, text, { mode: 0o600 });
      return p;
    };
    const caFile = file("ca.pem", ca.certPem);
    const conf = file(
      "tls.conf",
      `tls {\n  cert_file: "${file("server.pem", server.certPem)}"\n  key_file: "${file("server-key.pem", server.keyPem)}"\n  ca_file: "${caFile}"\n  verify: true\n}\n`,
    );
    const certFile = file("client.pem", client.certPem);
    const keyFile = file("client-key.pem", client.keyPem);
    const ns = await NatsServer.start({ configFile: conf });
    t.teardown(() => ns.stop());
    const tlsUrl = ns.url.replace("nats://", "tls://");

    const gw = await startGateway({
      natsUrl: tlsUrl,
      natsTlsCaFile: caFile,
      natsTlsCertFile: certFile,
      natsTlsKeyFile: keyFile,
      port: 0,
    });
    t.teardown(() => gw.stop());
    t.match(gw.config.nats.shown, /\(TLS trusting .*ca\.pem, client certificate .*client\.pem\)$/);
    const agent = await startAgentProc(tlsUrl, [
      "--nats-tls-ca-file",
      caFile,
      "--nats-tls-cert-file",
      certFile,
      "--nats-tls-key-file",
      keyFile,
    ]);
    t.teardown(() => agent.kill("SIGKILL"));
    const ws = await WsClient.open(gw.url, "json");
    t.teardown(() => ws.close());
    const hello = JSON.parse(readFileSync(join(ROOT, "examples", "hello-world.json"), "utf8")) as { graph: unknown };
    const r = await ws.request("run_job", { graph: hello.graph, params: {} });
    t.equal(
      (await ws.waitTerminal(String((r.result as { job_id: string }).job_id), 30_000)).status,
      "completed",
      "a job runs over TLS both ways",
    );

    // NATS does not answer a client without a certificate (its handshake times out): the agent keeps trying, as for
    // a NATS not up yet, and says why.
    const noCert = runNodeway(["agent", "--nats", tlsUrl, "--nats-tls-ca-file", caFile, "--name", "no-cert"]);
    t.teardown(() => noCert.kill("SIGKILL"));
    await check(
      () =>
        /NATS at tls:\/\/127\.0\.0\.1:\d+ \(TLS trusting .*\) did not answer .*trying again \(a NATS that verifies clients never answers one without natsTlsCertFile\)/.test(
          noCert.stderr(),
        ) || null,
      30_000,
      { name: "the waiting agent says why" },
    );
    t.pass("an agent without a client certificate says why it waits");
    const untrusted = runNodeway(["agent", "--nats", tlsUrl, "--name", "untrusting"]);
    t.equal(await untrusted.exited, 1, "one that does not trust the server's CA too");
    t.match(untrusted.stderr(), /cannot connect to NATS at tls:\/\/127\.0\.0\.1:\d+: .*certificate/i);
  },
);

t.test("nats auth - nodeway nats-accounts writes the shipped file's shape, and a password file per user", async (t) => {
  const users = ["gateway", "agent-1", "agent-2"];
  const shipped = readFileSync(join(ROOT, "deploy", "nats", "accounts.conf"), "utf8");
  const passwords = Object.fromEntries(users.map((u) => [u, placeholderOf(u)]));
  const { conf } = renderAccounts({ agents: ["agent-1", "agent-2"], passwords });
  t.ok(shipped.includes(conf), "deploy/nats/accounts.conf is the generator's output for agent-1 and agent-2");
  const dir = mkdtempSync(join(tmpdir(), "nw-accounts-"));
  const out = join(dir, "accounts.conf");
  const stdout: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => (stdout.push(String(chunk)), true)) as typeof write;
  try {
    await cmdNatsAccounts(["--agents", "gpu-1,gpu-2", "--out", out]);
  } finally {
    process.stdout.write = write;
  }
  t.match(stdout.join(""), /passwords in .*accounts\.conf\.passwords\/<user>\.pw/, "it says where the passwords went");
  const text = readFileSync(out, "utf8");
  for (const u of ["gateway", "gpu-1", "gpu-2"]) {
    const pw = readFileSync(join(`${out}.passwords`, `${u}.pw`), "utf8").trim();
    t.ok(pw.length >= 24 && text.includes(`"${pw}"`), `${u}'s generated password is in its own file and the config`);
  }
  t.match(text, /"nw\.events\.\*\.gpu-2"/, "each agent publishes only its own events");
  const gpu1 = readFileSync(join(`${out}.passwords`, "gpu-1.pw"), "utf8");
  stdout.length = 0;
  process.stdout.write = ((chunk: string | Uint8Array) => (stdout.push(String(chunk)), true)) as typeof write;
  try {
    await cmdNatsAccounts(["--agents", "gpu-1,gpu-2,gpu-3", "--out", out]);
  } finally {
    process.stdout.write = write;
  }
  t.equal(
    readFileSync(join(`${out}.passwords`, "gpu-1.pw"), "utf8"),
    gpu1,
    "adding an agent keeps the others' passwords",
  );
  t.match(readFileSync(out, "utf8"), /"nw\.events\.\*\.gpu-3"/, "and confines the new one");
  t.notMatch(text, /"_INBOX\.>"/, "and no agent reads _INBOX.>");
  await t.rejects(
    cmdNatsAccounts(["--agents", "gw", "--out", out]),
    /not "gw"/,
    "the gateway's own token is no agent name",
  );
  await t.rejects(cmdNatsAccounts(["--agents", "a,a", "--out", out]), /given twice/);
  await t.rejects(cmdNatsAccounts(["--out", out]), /--agents/);
});
