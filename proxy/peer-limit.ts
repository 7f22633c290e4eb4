/**
 * Open connections per client IP on one listener. `maxConnections` alone let one address hold every connection a
 * listener takes; with this, one address holds at most `maxConnectionsPerIp`. Peers in `trustedProxies` (load
 * balancers carrying many clients) have no such cap.
 */
import type { Socket } from "node:net";

export class PeerLimit {
  private readonly open = new Map<string, number>();

  constructor(
    private readonly maxPerIp: number,
    private readonly exempt: ((ip: string) => boolean) | null,
  ) {}

  /** Counts `socket` against its address until it closes; false (nothing counted) when the address is at its cap. */
  admit(socket: Socket): boolean {
    const ip = socket.remoteAddress;
    if (ip === undefined || this.exempt?.(ip)) return true;
    const n = this.open.get(ip) ?? 0;
    if (n >= this.maxPerIp) return false;
    this.open.set(ip, n + 1);
    socket.once("close", () => this.release(ip));
    return true;
  }

  /** Addresses holding at least one connection (bounded by the listener's `maxConnections`). */
  get peers(): number {
    return this.open.size;
  }

  private release(ip: string): void {
    const left = (this.open.get(ip) ?? 1) - 1;
    if (left <= 0) this.open.delete(ip);
    else this.open.set(ip, left);
  }
}
