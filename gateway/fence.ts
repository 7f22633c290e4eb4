/**
 * Attempt fencing over a job's events in stream order. The same rule runs live and on replay,
 * so both see the same events:
 *   - an event from an attempt older than the newest attempt seen so far is dropped;
 *   - nothing after the terminal `job_update` is delivered.
 */
import { isTerminalEvent, type JobEventHead } from "../protocol/index.js";

export class Fence {
  private maxAttempt = 0;
  ended = false;
  admit(ev: JobEventHead): boolean {
    if (this.ended || ev.attempt < this.maxAttempt) return false;
    this.maxAttempt = ev.attempt;
    if (isTerminalEvent(ev)) this.ended = true;
    return true;
  }
}
