/**
 * The on-disk certificate store, shared safely by several proxies (Caddy's model: instances sharing storage act as
 * a cluster). Layout under `certDir` (all directories `0700`, every file `0600`):
 *
 *   acme/<ca>/account.key            ACME account key (PEM), one account per CA directory
 *   acme/<ca>/<name>/cert.pem        certificate chain, leaf first
 *   acme/<ca>/<name>/key.pem         its private key
 *   self-signed/<name>/{cert,key}.pem
 *   challenges/<token>               HTTP-01 key authorizations, so any proxy on the store can answer the CA
 *   locks/<name>.lock                held while one process issues or renews `name`
 *
 * Writes are atomic (temp file in the same directory, fsync, rename) so a reader never sees half a key, and a crash
 * leaves either the old or the new file.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { dirname, join } from "node:path";
import { StoreLockedError } from "./errors.js";

/** A lock older than this is presumed left behind by a crashed process. Renewals finish well within it. */
const LOCK_STALE_MS = 10 * 60_000;

/** A certificate and its key as PEM text. */
export interface CertPair {
  readonly certPem: string;
  readonly keyPem: string;
}

/** File-system store rooted at `root`. Paths are built only here. */
export class CertStore {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** Creates the root `0700` (and tightens it if it exists looser). */
  async init(): Promise<void> {
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
    await fs.chmod(this.root, 0o700);
  }

  /** Reads `<section>/<name>/{cert,key}.pem`; `null` when either is missing. */
  async readPair(section: string, name: string): Promise<CertPair | null> {
    const dir = join(this.root, section, safeName(name));
    try {
      const [certPem, keyPem] = await Promise.all([
        fs.readFile(join(dir, "cert.pem"), "utf8"),
        fs.readFile(join(dir, "key.pem"), "utf8"),
      ]);
      return { certPem, keyPem };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /**
   * Writes a pair. The key is written first: a reader that sees the new cert with the old key fails validation and
   * keeps what it has, while the reverse order could not be told apart from a good pair.
   */
  async writePair(section: string, name: string, pair: CertPair): Promise<void> {
    const dir = join(this.root, section, safeName(name));
    await writeAtomic(join(dir, "key.pem"), pair.keyPem);
    await writeAtomic(join(dir, "cert.pem"), pair.certPem);
  }

  /** Reads a single file relative to the root; `null` when absent. */
  async readFile(rel: string): Promise<string | null> {
    try {
      return await fs.readFile(join(this.root, rel), "utf8");
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /** Atomically writes a single `0600` file relative to the root. */
  async writeFile(rel: string, text: string): Promise<void> {
    await writeAtomic(join(this.root, rel), text);
  }

  /** Removes a file relative to the root; absent is fine. */
  async removeFile(rel: string): Promise<void> {
    await fs.rm(join(this.root, rel), { force: true });
  }

  /**
   * Takes the lock for `name` (O_EXCL create), runs `fn`, releases. A lock older than `LOCK_STALE_MS` is broken.
   * @throws StoreLockedError when another live holder has it: the caller skips this round and re-reads the store
   *   later, picking up whatever the holder produced.
   */
  async withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const path = join(this.root, "locks", `${safeName(name)}.lock`);
    await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const handle = await acquire(path);
    try {
      return await fn();
    } finally {
      await handle.close().catch(() => undefined);
      await fs.rm(path, { force: true }).catch(() => undefined);
    }
  }
}

async function acquire(path: string): Promise<fs.FileHandle> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await fs.open(path, "wx", 0o600);
      await handle.writeFile(JSON.stringify({ pid: process.pid, at: new Date().toISOString() }));
      return handle;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const st = await fs.stat(path).catch(() => null);
      if (st !== null && Date.now() - st.mtimeMs < LOCK_STALE_MS) break;
      // Stale (or vanished between open and stat): remove and try once more.
      await fs.rm(path, { force: true });
    }
  }
  throw new StoreLockedError(path);
}

/** temp file + fsync + rename, mode 0600, parent dirs 0700. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const handle = await fs.open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fs.rename(tmp, path);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

/** Host names and CA hosts become directory names; anything outside [a-z0-9.-] is replaced. */
export function safeName(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/^\*\./, "_wildcard_.")
    .replace(/[^a-z0-9._-]/g, "_");
  return s === "" || s === "." || s === ".." ? "_" : s;
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "ENOENT";
}
