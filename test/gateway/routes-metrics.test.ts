/**
 * /metrics after the move to prom-client: the samples dashboards read keep their names and labels, and every
 * route reports how long it took to answer, by route pattern and status class.
 */
import t from "tap";
import { startStack } from "../helpers/stack.js";
import { metrics } from "../helpers/clients.js";

t.test("metrics - names kept, and request durations by route and status class", async (t) => {
  const s = await startStack(t, { agents: 0 });
  t.equal((await fetch(`${s.url}/api/workflows`)).status, 200);
  t.equal((await fetch(`${s.url}/api/jobs/nope`)).status, 404);
  const m = await metrics(s.url);
  for (const name of [
    'nodeway_jobs{state="queued"}',
    'nodeway_jobs{state="timed_out"}',
    "nodeway_jobs_created_total",
    "nodeway_events_in_total",
    'nodeway_ws_follows{via="topic"}',
    'nodeway_ws_follows{via="direct"}',
    "nodeway_hub_listeners",
    "nodeway_ws_topic_memberships",
    'nodeway_replays_total{source="memory"}',
    'nodeway_replays_total{source="jetstream"}',
    "nodeway_replay_cache_bytes",
    "nodeway_events_out_total",
    "nodeway_ws_sockets_open",
    "nodeway_ws_bad_frames_total",
    "nodeway_unauthorized_total",
  ]) {
    t.type(m[name], "number", `${name} is there, labels as before`);
  }
  t.ok(m.nodeway_http_requests_total! >= 2, "requests counted");
  t.ok(
    m['nodeway_http_request_duration_seconds_count{route="GET /api/workflows",status_class="2xx"}']! >= 1,
    "a 2xx timed under its route",
  );
  t.ok(
    m['nodeway_http_request_duration_seconds_count{route="GET /api/jobs/:id",status_class="4xx"}']! >= 1,
    "a 4xx under the route's pattern",
  );
  t.type(m.nodeway_process_cpu_user_seconds_total, "number", "process metrics too");
});
