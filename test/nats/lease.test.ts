/** Lease tokens: what `verify` accepts, checked in the order a stream of events asks (its last-attempt cache). */
import t from "tap";
import { LeaseSigner } from "../../nats/index.js";

const signer = () => new LeaseSigner(new Uint8Array(32).fill(3));

t.test("lease tokens - an attempt's own token passes for every event; any other is refused", async (t) => {
  const s = signer();
  const token = s.sign("job1", 1, "agentA");
  for (let i = 0; i < 3; i++) t.ok(s.verify("job1", 1, "agentA", token), `event ${i} of the attempt passes`);
  const flipped = (token[0] === "A" ? "B" : "A") + token.slice(1);
  t.notOk(s.verify("job1", 1, "agentA", flipped), "one character changed: refused");
  t.notOk(s.verify("job1", 1, "agentA", token.slice(1)), "one character short: refused");
  t.notOk(s.verify("job1", 1, "agentA", `${token}x`), "one character long: refused");
  t.notOk(s.verify("job1", 1, "agentA", ""), "empty: refused");
  t.notOk(s.verify("job1", 1, "agentA", undefined), "none: refused");
  t.notOk(s.verify("job1", 2, "agentA", token), "the same token for the next attempt: refused");
  t.notOk(s.verify("job1", 1, "agentB", token), "another agent showing it: refused");
  t.notOk(s.verify("job2", 1, "agentA", token), "another job: refused");
  t.ok(s.verify("job1", 1, "agentA", token), "and the attempt's own token still passes after those");
});

t.test("lease tokens - a forged token asked first does not make the real one fail or itself pass later", async (t) => {
  const s = signer();
  const real = s.sign("job9", 1, "agentA");
  const forged = "A".repeat(real.length);
  t.notOk(s.verify("job9", 1, "agentA", forged), "the forged token is refused");
  t.ok(s.verify("job9", 1, "agentA", real), "the real one passes");
  t.notOk(s.verify("job9", 1, "agentA", forged), "the forged one is still refused");
  const other = signer();
  t.ok(other.verify("job9", 1, "agentA", real), "another gateway with the same key accepts the real token");
  t.notOk(
    new LeaseSigner(new Uint8Array(32).fill(4)).verify("job9", 1, "agentA", real),
    "a gateway with another key refuses it",
  );
});
