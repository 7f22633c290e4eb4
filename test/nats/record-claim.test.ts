/**
 * An agent's claim against gateways of two versions: one that knows `record.claim` answers it in one request; one
 * from before it refuses it as a bad request (a fleet mid-upgrade), and the claim is then made by a read and a
 * compare-and-set. Any other refusal stays a refusal. The gateway here is a stand-in answering as gateways do.
 */
import t from "tap";
import type { NatsConnection } from "@nats-io/transport-node";
import { RecordClient, RecordRefusedError } from "../../nats/index.js";
import { ErrorCode, encodeJson, type JobRecord, type RecordReply, type RecordRequest } from "../../protocol/index.js";

const queued: JobRecord = {
  v: 1,
  id: "01jobjobjobjobjobjobjobjob",
  workflow_id: "w",
  status: "queued",
  pool: "cpu",
  attempt: 0,
  agent_id: null,
  params: {},
  created_at: "2026-12-04T00:00:00.000Z",
  started_at: null,
  finished_at: null,
  timeout_s: null,
  error: null,
  outputs: null,
};

type Ok = Extract<RecordReply, { ok: true }>;

/** A record store behind `ask`, as a gateway of the given version keeps it; every request is logged. */
class StandIn extends RecordClient {
  readonly asked: string[] = [];
  private text = encodeJson(queued);
  private revision = 4;
  constructor(
    private readonly knowsClaim: boolean,
    private readonly refuseClaim: string | null = null,
  ) {
    super(null as unknown as NatsConnection, "agent-1");
  }
  override async ask(req: RecordRequest): Promise<Ok> {
    this.asked.push(req.type);
    const lease = "token";
    switch (req.type) {
      case "record.claim": {
        if (!this.knowsClaim) throw new RecordRefusedError(ErrorCode.GW_ERR_BAD_REQUEST, "unknown record request type");
        if (this.refuseClaim) throw new RecordRefusedError(this.refuseClaim, "refused");
        const rec = { ...queued, status: "running" as const, attempt: req.attempt, agent_id: req.agent_id };
        this.text = encodeJson(rec);
        return { ok: true, record_json: this.text, revision: ++this.revision, lease };
      }
      case "record.get":
        return { ok: true, record_json: this.text, revision: this.revision };
      case "record.update":
        if (req.revision !== this.revision)
          throw new RecordRefusedError(ErrorCode.GW_ERR_CONFLICT, "wrong last sequence");
        this.text = req.record_json;
        return { ok: true, record_json: this.text, revision: ++this.revision, lease };
      default:
        throw new Error(`not asked in this test: ${req.type}`);
    }
  }
}

const claimOf = (r: JobRecord): JobRecord | null =>
  r.attempt >= 1 ? null : { ...r, status: "running", attempt: 1, agent_id: "a1", dispatch_seq: 7 };

t.test("record claim - one request to a gateway that knows record.claim", async (t) => {
  const gw = new StandIn(true);
  const store = gw.forJob(queued.id, "secret");
  const r = await store.claim(1, "a1", 7, claimOf);
  t.same(gw.asked, ["record.claim"], "one request");
  t.ok(r?.written, "the claim took the record");
  t.equal(r?.rec.status, "running");
  t.equal(store.lease, "token", "and holds the lease it was given");
});

t.test("record claim - a gateway from before record.claim gets a read, then a compare-and-set", async (t) => {
  const gw = new StandIn(false);
  const store = gw.forJob(queued.id, "secret");
  const r = await store.claim(1, "a1", 7, claimOf);
  t.same(gw.asked, ["record.claim", "record.get", "record.update"], "refused, then read and written");
  t.ok(r?.written, "the claim took the record");
  t.match(r?.rec, { status: "running", attempt: 1, agent_id: "a1", dispatch_seq: 7 }, "as the change made it");
  t.equal(store.lease, "token", "with the lease the write answered");
});

t.test("record claim - any other refusal is not retried the old way", async (t) => {
  const gw = new StandIn(true, ErrorCode.GW_ERR_FORBIDDEN);
  const store = gw.forJob(queued.id, "secret");
  await t.rejects(store.claim(1, "a1", 7, claimOf), { code: ErrorCode.GW_ERR_FORBIDDEN });
  t.same(gw.asked, ["record.claim"], "nothing written behind the refusal");
});
