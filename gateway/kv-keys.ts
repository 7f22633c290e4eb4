/**
 * Lists a KV bucket's keys from the stream's subject index (one STREAM.INFO request with a subjects filter).
 *
 * Not `kv.keys()`: that runs a push consumer which, while the bucket is being written (agent heartbeats, job
 * records of running jobs), can keep yielding updates (the same key again and again) and not end for many
 * seconds — which stalled job submits behind the node-catalog refresh. Deleted keys still have a subject
 * (their delete marker); callers read each key and skip what is not a value, as they did before.
 */
import type { JetStreamManager } from "@nats-io/jetstream";

export async function bucketKeys(jsm: JetStreamManager, bucket: string, filter = ">"): Promise<string[]> {
  const prefix = `$KV.${bucket}.`;
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: prefix + filter });
  return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length));
}
