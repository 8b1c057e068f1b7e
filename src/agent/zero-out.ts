/**
 * Zeroing what a deploy must make zero (issue 11: "zeroed (BLKZEROOUT, else written)"). On a block
 * device, runs of zeros go to the disk as BLKZEROOUT through util-linux's `blkdiscard -z` (Node cannot
 * issue the ioctl): an SSD or a thin-provisioned disk then zeroes without the bytes crossing the bus.
 * Adjacent ranges are gathered into one call, and a run shorter than BLKZEROOUT_MIN_BYTES is written
 * instead: each call costs a process and a flush, more than writing a few MiB (an image captured
 * without a layout can hold thousands of scattered all-zero chunks). When the device or the kernel
 * cannot do it, or on a regular file, the zeros are written.
 */
import type { FileHandle } from 'node:fs/promises';
import { runTool, ToolMissingError } from '../lib/tool.js';

/** Zeros written at once when BLKZEROOUT is not used. */
const WRITE_PIECE = 1024 * 1024;
/** The shortest run of zeros worth a blkdiscard process. */
export const BLKZEROOUT_MIN_BYTES = 8 * 1024 * 1024;

export class ZeroWriter {
  private start = 0;
  private end = 0;
  /** Bytes zeroed by BLKZEROOUT and by writing zeros. */
  zeroedOut = 0;
  written = 0;
  private blkzeroout: boolean;
  private readonly zeros = Buffer.alloc(WRITE_PIECE);

  constructor(
    private readonly fh: FileHandle,
    private readonly device: string,
    /** True when `device` is a block device (BLKZEROOUT is tried); false for a regular file. */
    isBlockDevice: boolean,
    private readonly warn: (message: string) => void,
    private readonly minZeroOut = BLKZEROOUT_MIN_BYTES,
  ) {
    this.blkzeroout = isBlockDevice;
  }

  /** Bytes [offset, offset + length) must read as zeros. */
  async zero(offset: number, length: number): Promise<void> {
    if (length === 0) return;
    if (this.end === offset && this.end > this.start) {
      this.end += length;
      return;
    }
    await this.flush();
    this.start = offset;
    this.end = offset + length;
  }

  /** Zeroes what was gathered. */
  async flush(): Promise<void> {
    const { start, end } = this;
    this.start = this.end = 0;
    if (end <= start) return;
    if (this.blkzeroout && end - start >= this.minZeroOut && (await this.zeroOut(start, end - start))) return;
    for (let at = start; at < end; ) {
      const n = Math.min(WRITE_PIECE, end - at);
      const { bytesWritten } = await this.fh.write(this.zeros, 0, n, at);
      at += bytesWritten;
    }
    this.written += end - start;
  }

  /** BLKZEROOUT over the range; false (and no more tries) when the tool, device or kernel cannot. */
  private async zeroOut(offset: number, length: number): Promise<boolean> {
    // The kernel wants whole 512-byte sectors; every range a deploy zeroes is whole chunks or pieces of sectors' size.
    if (offset % 512 !== 0 || length % 512 !== 0) return false;
    try {
      // Earlier writes through our file handle must reach the device before the ioctl zeroes under them.
      await this.fh.datasync();
      const r = await runTool('blkdiscard', ['-z', '-o', String(offset), '-l', String(length), this.device]);
      if (r.code === 0) {
        this.zeroedOut += length;
        return true;
      }
      this.warn(`blkdiscard -z (BLKZEROOUT) on ${this.device} failed (exit ${r.code}: ${r.stderr.trim()}); writing zeros instead`);
    } catch (err) {
      if (!(err instanceof ToolMissingError)) throw err;
      this.warn('blkdiscard is not in this imaging client; writing zeros instead of BLKZEROOUT');
    }
    this.blkzeroout = false;
    return false;
  }
}
