/**
 * Where each chunk of an image goes on the disk a deploy writes (issue 12). Without a layout, chunk i
 * goes to i × chunkSize as it always did. With one, chunks that held only free space go nowhere, and
 * onto a disk of another size the restore plan moves regions: a chunk then becomes pieces at their
 * new places, and the parts of it that belong to dropped regions (the old GPT backup, a gap) go
 * nowhere. A chunk split that way is "partial": the disk can never hold all of it.
 */
import type { DiskLayout } from '../imaging/disk-layout.js';
import { freeChunkTest } from '../imaging/disk-layout.js';
import type { RestorePlan } from '../imaging/layout-plan.js';
import type { ChunkPiece } from './disk-chunks.js';

export class Placement {
  private readonly free: (index: number) => boolean;

  constructor(
    readonly size: number,
    readonly chunkSize: number,
    layout: Pick<DiskLayout, 'freeChunks'> | null,
    /** null: every chunk in place (no layout, or a same-size restore that moves nothing). */
    readonly plan: Pick<RestorePlan, 'segments'> | null,
  ) {
    this.free = layout ? freeChunkTest(layout) : () => false;
  }

  /** True when chunk `index` held only free space at capture: nothing to write or verify. */
  isFree(index: number): boolean {
    return this.free(index);
  }

  /** The pieces of chunk `index` on the disk: [] for none, null for the whole chunk in place. */
  pieces(index: number): readonly ChunkPiece[] | null {
    if (this.free(index)) return [];
    if (this.plan === null) return null;
    const offset = index * this.chunkSize;
    const end = Math.min(offset + this.chunkSize, this.size);
    const out: ChunkPiece[] = [];
    for (const s of this.segmentsOver(offset, end)) {
      const from = Math.max(s.from, offset);
      const to = Math.min(s.from + s.length, end);
      if (to > from) out.push({ at: from - offset, diskOffset: s.to + (from - s.from), length: to - from });
    }
    if (out.length === 1 && out[0].at === 0 && out[0].length === end - offset && out[0].diskOffset === offset) return null;
    return out;
  }

  /** True when some of chunk `index` (not free) has no place on the disk. */
  isPartial(index: number): boolean {
    const p = this.pieces(index);
    if (p === null || this.free(index)) return false;
    const length = Math.min(this.chunkSize, this.size - index * this.chunkSize);
    return p.reduce((n, x) => n + x.length, 0) < length;
  }

  private segmentsOver(from: number, to: number): RestorePlan['segments'] {
    const segs = (this.plan as Pick<RestorePlan, 'segments'>).segments;
    // Segments are sorted by `from` and do not overlap: find the first that ends after `from`.
    let lo = 0;
    let hi = segs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (segs[mid].from + segs[mid].length <= from) lo = mid + 1;
      else hi = mid;
    }
    const out = [];
    for (let i = lo; i < segs.length && segs[i].from < to; i++) out.push(segs[i]);
    return out;
  }
}
