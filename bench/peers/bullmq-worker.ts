/**
 * The BullMQ peer's worker (its own process, as our agent is): a `Worker` with concurrency argv[4] on queue
 * argv[3] of the Redis at 127.0.0.1:argv[2], whose processor returns the greeting our hello-world graph makes
 * (StringInput → FormatText "Hello, {{ name }}!" → Output).
 */
import { Worker } from "bullmq";

const [port, queue, concurrency] = [Number(process.argv[2]), process.argv[3]!, Number(process.argv[4] ?? 32)];
const connection = { host: "127.0.0.1", port, maxRetriesPerRequest: null };

const worker = new Worker(
  queue,
  async function greet(job: { data: { name?: string } }) {
    return { greeting: `Hello, ${job.data.name ?? "world"}!` };
  },
  { connection, concurrency },
);
worker.on("error", (err) => process.stderr.write(`bullmq worker error: ${err.message}\n`));
await worker.waitUntilReady();
process.stdout.write("bullmq worker ready\n");
for (const sig of ["SIGTERM", "SIGINT"] as const)
  process.on(sig, () => void worker.close().then(() => process.exit(0)));
