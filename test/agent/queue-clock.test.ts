/** QueueClock: a dispatch's queue age from the server's store time, with this host's clock lag taken out. */
import t from "tap";
import { EARLY_START_MAX_AGE_MS, QueueClock } from "../../agent/job-runner.js";

t.test("queue clock - in sync, the age is our time minus the store time", async (t) => {
  const c = new QueueClock();
  t.equal(c.ageMs(10_000, 10_250), 250);
  t.equal(c.behindMs, 0, "no lag seen");
});

t.test(
  "queue clock - a clock 5 s behind: learned from the first negative reading, a 4 s old dispatch reads as 4 s old",
  async (t) => {
    const lags: number[] = [];
    const c = new QueueClock((ms) => lags.push(ms));
    const hostMs = 1_000_000;
    const ours = (real: number) => real - 5_000;
    // A registration stored just now (server time = host time) and read back at once.
    t.equal(c.ageMs(hostMs, ours(hostMs + 2)), 0, "the calibration reading itself is age 0");
    t.equal(c.behindMs, 4_998, "lag learned (within the round trip)");
    t.same(lags, [4_998], "reported once");
    const age = c.ageMs(hostMs + 10_000 - 4_000, ours(hostMs + 10_000));
    t.ok(
      age >= EARLY_START_MAX_AGE_MS,
      `a dispatch stored 4 s ago is not fresh (${age} ms); uncorrected it read ${ours(hostMs + 10_000) - (hostMs + 6_000)} ms`,
    );
    t.ok(Math.abs(age - 4_000) <= 2, "and reads as 4 s old");
    t.ok(c.ageMs(hostMs + 20_000, ours(hostMs + 20_003)) < EARLY_START_MAX_AGE_MS, "a fresh one is still fresh");
  },
);

t.test("queue clock - a clock ahead makes dispatches look older, never younger", async (t) => {
  const c = new QueueClock();
  t.equal(
    c.ageMs(10_000, 10_000 + 3_000 + 10),
    3_010,
    "3 s ahead: a 10 ms old dispatch reads as 3 s old (claimed first: slower, not wrong)",
  );
  t.equal(c.behindMs, 0);
});

t.test("queue clock - jitter of a few ms is corrected silently; the lag only grows", async (t) => {
  const lags: number[] = [];
  const c = new QueueClock((ms) => lags.push(ms));
  c.ageMs(10_000, 9_997);
  t.equal(c.behindMs, 3);
  c.ageMs(10_000, 9_999);
  t.equal(c.behindMs, 3, "a smaller lag does not shrink it");
  t.same(lags, [], "nothing reported below 100 ms");
  c.ageMs(10_000, 9_800);
  c.ageMs(10_000, 9_750);
  t.same(lags, [200], "reported at 200 ms, not again for 250 ms (less than double)");
  c.ageMs(10_000, 9_500);
  t.same(lags, [200, 500], "reported again once it has doubled");
});
