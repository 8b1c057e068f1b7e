/**
 * Where the store's space goes, counted over every version of every image at once (issue 13).
 *
 * Chunks are shared across images, not only across one image's versions, so per-image figures that
 * count an image alone double-count what images share (two images holding the same 9 MiB each showed
 * "stored 9 MiB, dedup saves 0 B", and the list summed to more than the store holds). Here:
 * - the store holds `storedBytes`: the distinct chunk files every version names, once;
 * - against `logicalBytes`: the data all versions hold, every version counted in full;
 * - `referencedBytes` sits between: the chunk files every version names, counted per use, so
 *   logical − referenced is what compression saves and referenced − stored what dedup saves;
 * - each image is charged its `attributedBytes`: its chunks, a chunk shared by k images charged 1/k
 *   to each, so the images' shares add up to exactly the store's storedBytes. `exclusiveBytes` is
 *   what removing the image (and a gc) would free.
 *
 * Pure: versions are fed in, one image at a time, each image's versions in ascending order.
 */
import { chunkLength, manifestEntries, type Manifest } from './manifest.js';

export interface VersionSpace {
  readonly version: number;
  /** The version before it (ascending), or null for the image's first. */
  readonly previousVersion: number | null;
  /** Disk bytes of the chunks whose content the previous version does not hold anywhere (all data for the first). */
  readonly changedBytes: number;
  /** Chunk file bytes of those new chunks, each once: what this version added to the image. */
  readonly changedStoredBytes: number;
}

export interface ImageSpace {
  readonly name: string;
  readonly versions: readonly VersionSpace[];
  readonly logicalBytes: number;
  readonly referencedBytes: number;
  /** Its share of the store: shared chunks split evenly between the images that name them. */
  readonly attributedBytes: number;
  /** Chunk bytes no other image names. */
  readonly exclusiveBytes: number;
  /** Chunk bytes it names that other images name too (each chunk once). */
  readonly sharedBytes: number;
  /** referencedBytes − attributedBytes. */
  readonly dedupSavings: number;
}

export interface StoreSpace {
  readonly images: readonly ImageSpace[];
  readonly versionCount: number;
  readonly storedBytes: number;
  readonly referencedBytes: number;
  readonly logicalBytes: number;
  readonly dedupSavings: number;
  readonly compressionSavings: number;
}

interface ChunkUse {
  readonly size: number;
  first: string;
  /** Images after the first, in feeding order; absent while only one image names the chunk. */
  more?: string[];
}

interface ImageTally {
  readonly name: string;
  readonly versions: VersionSpace[];
  logicalBytes: number;
  referencedBytes: number;
}

export class SpaceTally {
  private readonly chunks = new Map<string, ChunkUse>();
  private readonly images: ImageTally[] = [];
  private current: ImageTally | null = null;
  private previous: { version: number; hashes: Set<string> } | null = null;
  private versionCount = 0;

  /** One version of `image`; versions of one image must come together and in ascending order. */
  addVersion(image: string, m: Manifest): void {
    if (this.current?.name !== image) {
      if (this.images.some((i) => i.name === image)) throw new Error(`versions of image ${image} must be added together`);
      this.current = { name: image, versions: [], logicalBytes: 0, referencedBytes: 0 };
      this.images.push(this.current);
      this.previous = null;
    }
    const img = this.current;
    const h = m.header;
    if (this.previous && h.version <= this.previous.version) throw new Error(`versions of image ${image} must be added in ascending order`);
    const hashes = new Set<string>();
    let changedBytes = 0;
    let changedStoredBytes = 0;
    for (const e of manifestEntries(m)) {
      const hash = e.hash.toString('hex');
      img.referencedBytes += e.size;
      if (!this.previous?.hashes.has(hash)) {
        changedBytes += chunkLength(h.size, h.chunkSize, e.index);
        if (!hashes.has(hash)) changedStoredBytes += e.size;
      }
      hashes.add(hash);
      const use = this.chunks.get(hash);
      if (!use) this.chunks.set(hash, { size: e.size, first: image });
      else if (use.first !== image && use.more?.[use.more.length - 1] !== image) (use.more ??= []).push(image);
    }
    img.logicalBytes += h.dataBytes;
    img.versions.push({ version: h.version, previousVersion: this.previous?.version ?? null, changedBytes, changedStoredBytes });
    this.previous = { version: h.version, hashes };
    this.versionCount++;
  }

  result(): StoreSpace {
    const attributed = new Map<string, number>();
    const exclusive = new Map<string, number>();
    const shared = new Map<string, number>();
    const add = (m: Map<string, number>, k: string, n: number): void => {
      m.set(k, (m.get(k) ?? 0) + n);
    };
    let storedBytes = 0;
    for (const use of this.chunks.values()) {
      storedBytes += use.size;
      if (!use.more) {
        add(attributed, use.first, use.size);
        add(exclusive, use.first, use.size);
        continue;
      }
      const owners = [use.first, ...use.more];
      for (const o of owners) {
        add(attributed, o, use.size / owners.length);
        add(shared, o, use.size);
      }
    }
    let referencedBytes = 0;
    let logicalBytes = 0;
    const images = this.images.map((i): ImageSpace => {
      referencedBytes += i.referencedBytes;
      logicalBytes += i.logicalBytes;
      // Whole bytes for people; the shares still add up to the store's total within a byte per image.
      const share = Math.round(attributed.get(i.name) ?? 0);
      return {
        name: i.name,
        versions: i.versions,
        logicalBytes: i.logicalBytes,
        referencedBytes: i.referencedBytes,
        attributedBytes: share,
        exclusiveBytes: exclusive.get(i.name) ?? 0,
        sharedBytes: shared.get(i.name) ?? 0,
        dedupSavings: i.referencedBytes - share,
      };
    });
    return {
      images,
      versionCount: this.versionCount,
      storedBytes,
      referencedBytes,
      logicalBytes,
      dedupSavings: referencedBytes - storedBytes,
      compressionSavings: logicalBytes - referencedBytes,
    };
  }
}
