/**
 * Lease tokens: a gateway that lets an agent claim a job's attempt gives it a token binding job, attempt and the
 * agent's principal (HMAC-SHA256 under a key only gateways can read, `nw_jobs` key `s.lease`). The agent sends it
 * with every event of the attempt (header `Nw-Lease`); the gateway's fence admits an agent's event only with a
 * token for its own principal (the subject's last token, which NATS lets only that agent publish) and the event's
 * attempt. Stateless, so the check is the same live, on replay and for a gateway that joined a job midway.
 */
import { createHmac, randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { jobKeys } from "../protocol/index.js";

/** Bytes of HMAC kept in a token (128 bits). */
const TOKEN_BYTES = 16;
/** Tokens kept after a verify (job, attempt, principal → token): every event of an attempt carries the same one. */
const VERIFIED_MAX = 4_096;

export class LeaseSigner {
  /** The tokens of the attempts verified last, so that an attempt's events cost one HMAC, not one each. */
  private readonly verified = new Map<string, string>();
  /** The attempt verified last and its token: a stream of one job's events skips even the map. */
  private last = { jobId: "", attempt: Number.NaN, principal: "", token: "" };

  constructor(private readonly key: Uint8Array) {
    if (key.byteLength < 32) throw new Error("a lease key has at least 32 bytes");
  }

  /** The token of `principal` holding `attempt` of `jobId`. */
  sign(jobId: string, attempt: number, principal: string): string {
    return createHmac("sha256", this.key)
      .update(`${jobId}\n${attempt}\n${principal}`)
      .digest()
      .subarray(0, TOKEN_BYTES)
      .toString("base64url");
  }

  /**
   * The claim secret of a job's dispatch: any gateway can make it again (a retried submit re-dispatches), no agent
   * can make it (attempt -1 and a principal no agent may have keep it apart from lease tokens).
   */
  claimSecret(jobId: string): string {
    return this.sign(jobId, -1, "!claim");
  }

  /** True when `token` is `sign(jobId, attempt, principal)`. */
  verify(jobId: string, attempt: number, principal: string, token: string | undefined | null): boolean {
    if (!token || token.length > 64) return false;
    const l = this.last;
    if (l.jobId !== jobId || l.attempt !== attempt || l.principal !== principal)
      this.last = { jobId, attempt, principal, token: this.expected(jobId, attempt, principal) };
    return sameToken(token, this.last.token);
  }

  /** The token `verify` wants, from the cache of attempts verified lately or made (and kept) now. */
  private expected(jobId: string, attempt: number, principal: string): string {
    const key = `${jobId}\n${attempt}\n${principal}`;
    let want = this.verified.get(key);
    if (want === undefined) {
      want = this.sign(jobId, attempt, principal);
      if (this.verified.size >= VERIFIED_MAX) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(key, want);
    }
    return want;
  }
}

/** Compares two tokens in time that depends on their length only (no early exit on the first differing char). */
function sameToken(got: string, want: string): boolean {
  if (got.length !== want.length) return false;
  let diff = 0;
  for (let i = 0; i < want.length; i++) diff |= got.charCodeAt(i) ^ want.charCodeAt(i);
  return diff === 0;
}

/** The gateways' shared lease key from `nw_jobs`, made by the first gateway that finds none. */
export async function loadLeaseSigner(jobsKv: Pick<KV, "get" | "create">): Promise<LeaseSigner> {
  const key = jobKeys.leaseKey();
  for (let i = 0; i < 5; i++) {
    const e = await jobsKv.get(key);
    if (e?.operation === "PUT" && e.length > 0) return new LeaseSigner(Buffer.from(e.string(), "base64"));
    // Two gateways starting together: one create wins, the other reads the winner's key next round.
    await jobsKv.create(key, randomBytes(32).toString("base64")).catch(() => undefined);
  }
  throw new Error(`nw_jobs has no readable lease key (${key})`);
}
