/**
 * The proxy's metrics (proxy/metrics.ts): proxied requests in the latency histogram by upstream and status class,
 * refusals by status, upstream health, all on the registry `RunningProxy.metrics` hands to the CLI.
 */
import t from "tap";
import { httpsGet, startTestProxy, startUpstream, waitFor } from "../helpers/tls-tools.js";

/** The value of the sample of `name` whose labels include `labels` (in any order), or null. */
function sample(text: string, name: string, labels: Record<string, string>): number | null {
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return null;
}

t.test("proxy metrics - latency by upstream and status class, refusals, upstream health", async (t) => {
  const up = await startUpstream("gw");
  t.teardown(() => up.close());
  const { proxy } = await startTestProxy(t, [up.url]);

  t.equal((await httpsGet(proxy.httpsPort, "/a")).status, 200);
  t.equal((await httpsGet(proxy.httpsPort, "/b")).status, 200);
  t.equal((await httpsGet(proxy.httpsPort, "/", { headers: { host: "elsewhere.example" } })).status, 421);

  const origin = new URL(up.url).origin;
  // The histogram is observed when the response's close is seen, just after the client has its answer.
  const text = await waitFor(
    async () => {
      const m = await proxy.metrics.metrics();
      return sample(m, "nodeway_proxy_request_duration_seconds_count", { upstream: origin, status_class: "2xx" }) === 2
        ? m
        : null;
    },
    5000,
    "histogram samples",
  );
  t.equal(sample(text, "nodeway_proxy_requests_refused_total", { status: "421", role: "proxy" }), 1);
  t.equal(sample(text, "nodeway_proxy_upstream_healthy", { upstream: origin }), 1);
  t.match(text, /nodeway_process_cpu_seconds_total/, "process metrics too");
  t.equal(proxy.metrics.contentType.split(";")[0], "text/plain");
});
