/**
 * Compare-and-set on job records. Gateway and agent both write records, and both through this one function, so
 * a terminal state can never be overwritten by either. The store is the KV client or an `AckedKv` over it (the
 * gateway), or a `JobRecordClient` (an agent: its requests go to a gateway, which checks and writes them).
 */
import type { KvEntry } from "@nats-io/kv";
import { encodeJson, jobKeys, parseJson, type JobRecord } from "../protocol/index.js";

/** A KV entry as reading a record needs it. */
export type KvReadEntry = Pick<KvEntry, "operation" | "revision" | "length" | "string">;

/** What reading and compare-and-set writing a record need: `KV` and `AckedKv` both fit. */
export interface RecordStore {
  get(key: string): Promise<KvReadEntry | null>;
  update(key: string, data: string, version: number): Promise<number>;
}

/** The record and its revision, or null when there is none (never created, deleted or expired). */
export async function readJobRecord(
  kv: RecordStore,
  jobId: string,
): Promise<{ rec: JobRecord; revision: number; bytes: number } | null> {
  const e = await kv.get(jobKeys.record(jobId));
  if (e?.operation !== "PUT" || e.length === 0) return null;
  return { rec: parseJson(e.string()) as JobRecord, revision: e.revision, bytes: e.length };
}

/**
 * Applies `change` with compare-and-set on the revision, re-reading when another writer got there first.
 * `change` returns null to refuse (the record moved somewhere this writer may not follow).
 * `known` is a record and revision the caller already holds (the queued record a dispatch carries, the record
 * an agent wrote when it claimed the job): the first round tries it without a read, and the revision check
 * makes that exactly as safe as reading, since the write only lands if nothing changed since.
 * Returns `{ rec, written, revision }`: the record now stored, whether this call wrote it, and its revision;
 * null when there is none.
 */
export async function casJobRecord(
  kv: RecordStore,
  jobId: string,
  change: (rec: JobRecord) => JobRecord | null,
  known?: { rec: JobRecord; revision: number },
): Promise<{ rec: JobRecord; written: boolean; revision: number } | null> {
  for (let tries = 0; tries < 50; tries++) {
    const cur = known ?? (await readJobRecord(kv, jobId));
    const guessed = known !== undefined;
    known = undefined;
    if (!cur) return null;
    const next = change(cur.rec);
    if (!next) {
      // A refusal is only final when it was made on what is stored, not on a possibly stale copy.
      if (guessed) continue;
      return { rec: cur.rec, written: false, revision: cur.revision };
    }
    try {
      // Bytes as data: URIs, as JSON clients get them.
      const revision = await kv.update(jobKeys.record(jobId), encodeJson(next), cur.revision);
      return { rec: next, written: true, revision };
    } catch (err) {
      // "wrong last sequence": another writer won this round; look again.
      if (/wrong last sequence/i.test(String((err as Error).message))) continue;
      throw err;
    }
  }
  throw new Error(`job ${jobId}: record kept changing under compare-and-set`);
}
