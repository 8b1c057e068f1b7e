/**
 * What the web app needs from the image store, and nothing more. The appliance passes
 * the real store (or a thin adapter over it); tests may pass the real store too.
 */
import { isValidImageName } from '../imaging/names.js';
import type { ImageSummary } from '../imaging/types.js';

export interface CatalogVersion {
  readonly version: number;
  /** Logical disk size in bytes. */
  readonly size: number;
  readonly created: string;
  /** Where the capture came from (host MAC / name, or an import path). */
  readonly source: string;
  readonly digest: string;
  /** Bytes in chunks that hold data (holes excluded). */
  readonly dataBytes: number;
  /** Compressed bytes on disk of the distinct chunks this version names. */
  readonly storedBytes: number;
}

/** One line of the image list: the store's own summary. */
export type CatalogImageSummary = ImageSummary;

export interface CatalogPartition {
  readonly index: number;
  readonly typeName: string;
  readonly name: string;
  readonly sizeBytes: number;
  readonly filesystem: string | null;
}

export interface CatalogImageDetail {
  readonly name: string;
  readonly versions: readonly CatalogVersion[];
  readonly latestVersion: number;
  readonly size: number;
  /** Non-hole bytes of the latest version. */
  readonly dataBytes: number;
  /** Unique chunk bytes on disk referenced by any version of this image. */
  readonly storedBytes: number;
  /** dataBytes / stored bytes of the latest version. */
  readonly compressionRatio: number;
  /** Stored bytes saved by sharing chunks inside and across versions. */
  readonly dedupSavings: number;
  readonly partitionTable: { readonly scheme: string; readonly partitions: readonly CatalogPartition[] } | null;
  readonly partitionError: string | null;
}

export interface CatalogVerifyResult {
  readonly ok: boolean;
  readonly version: number;
  readonly checkedChunks: number;
  readonly damaged: ReadonlyArray<{ readonly offset: number; readonly reason: string }>;
}

/**
 * The image store as the web app uses it. `ImageStore` from src/imaging satisfies it as is;
 * errors it throws are mapped by name and message (ImageNotFoundError → 404).
 */
export interface ImageCatalog {
  list(): Promise<readonly CatalogImageSummary[]>;
  show(name: string): Promise<CatalogImageDetail>;
  verify(name: string, opts?: { version?: number }): Promise<CatalogVerifyResult>;
  removeVersion(name: string, version: number): Promise<void>;
  renameImage(from: string, to: string): Promise<void>;
}

export class CatalogError extends Error {
  constructor(readonly status: 400 | 404 | 409, message: string) {
    super(message);
    this.name = 'CatalogError';
  }
}

/** Validate an image name at the web border with a message a technician can act on. */
export function requireImageName(name: string): string {
  if (typeof name !== 'string' || !isValidImageName(name)) {
    throw new CatalogError(400, `"${String(name).slice(0, 80)}" is not a valid image name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return name;
}

export interface VerifyState {
  readonly state: 'running' | 'ok' | 'failed';
  readonly version: number | null;
  readonly message: string;
  readonly startedAt: string;
  readonly finishedAt: string | null;
}

/**
 * Last verify result per image, in memory: a verify is cheap to repeat and a stale
 * "ok" after a restart would be worse than no answer.
 */
export class VerifyTracker {
  private readonly results = new Map<string, VerifyState>();

  constructor(private readonly catalog: ImageCatalog, private readonly onDone: (name: string, state: VerifyState) => void = () => undefined) {}

  get(name: string): VerifyState | undefined {
    return this.results.get(name);
  }

  /** Start a verify unless one is running; returns its state at once. */
  start(name: string, version?: number): VerifyState {
    const current = this.results.get(name);
    if (current?.state === 'running') return current;
    const startedAt = new Date().toISOString();
    const running: VerifyState = { state: 'running', version: version ?? null, message: 'verifying…', startedAt, finishedAt: null };
    this.results.set(name, running);
    const promise = this.catalog.verify(name, version === undefined ? {} : { version }).then(
      (r) => ({ ...running, version: r.version, state: r.ok ? 'ok' : 'failed', message: verifyMessage(r), finishedAt: new Date().toISOString() }) as VerifyState,
      (err: unknown) => ({ ...running, state: 'failed', message: err instanceof Error ? err.message : String(err), finishedAt: new Date().toISOString() }) as VerifyState,
    );
    this.pending.set(name, promise);
    void promise.then((done) => {
      this.pending.delete(name);
      this.results.set(name, done);
      this.onDone(name, done);
    });
    return running;
  }

  private readonly pending = new Map<string, Promise<VerifyState>>();

  /** For tests and scripts that want the outcome: resolves when the running verify ends. */
  async settled(name: string): Promise<VerifyState | undefined> {
    const p = this.pending.get(name);
    if (p) await p;
    return this.results.get(name);
  }

  rename(from: string, to: string): void {
    const r = this.results.get(from);
    this.results.delete(from);
    if (r) this.results.set(to, r);
  }
}

export function verifyMessage(r: CatalogVerifyResult): string {
  if (r.ok) return `version ${r.version}: all ${r.checkedChunks} chunks read back intact`;
  const first = r.damaged[0];
  return `version ${r.version}: ${r.damaged.length} damaged chunk${r.damaged.length === 1 ? '' : 's'} (first at byte ${first?.offset ?? '?'}: ${first?.reason ?? 'unknown'}); capture the image again or restore the store from a backup`;
}
