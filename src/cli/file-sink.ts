/** Writing an exported disk to a file (sparse: zero runs become holes), a block device, or stdout. */
import { open, type FileHandle } from 'node:fs/promises';
import type { ExportSink } from '../domain/commands.js';
import { PendingFile } from '../lib/durable-write.js';

const BLOCK = 4096;

function isZero(buf: Buffer): boolean {
  // Compare 8 bytes at a time; zero runs are the common case on disks.
  const words = Math.floor(buf.length / 8);
  for (let i = 0; i < words; i++) if (buf.readBigUInt64LE(i * 8) !== 0n) return false;
  for (let i = words * 8; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

export async function blockDeviceSize(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    // lseek(SEEK_END) is not exposed; reading the kernel's size attribute needs the device name.
    const { readFile, realpath } = await import('node:fs/promises');
    const real = await realpath(path);
    const dev = real.replace(/^\/dev\//, '');
    const sectors = Number((await readFile(`/sys/class/block/${dev}/size`, 'utf8')).trim());
    return sectors * 512;
  } finally {
    await fh.close();
  }
}

export class FileSink implements ExportSink {
  private position = 0;
  private size = 0;

  /** Null for stdout. */
  private readonly fh: FileHandle | null;

  private constructor(
    device: FileHandle | null,
    /** Set for a regular file: the temp file that finish() puts in place of the target. */
    private readonly temp: PendingFile | null,
  ) {
    this.fh = temp ? temp.handle : device;
  }

  /**
   * A regular file is written to a temp name beside it and replaced durably at the end (lib/durable-write):
   * a failed export leaves no half file, and the old file, if any, stays until the new one is whole.
   */
  static async open(target: string): Promise<FileSink> {
    if (target === '-') return new FileSink(null, null);
    const existing = await open(target, 'r').then(async (fh) => {
      const st = await fh.stat();
      await fh.close();
      return st;
    }).catch(() => null);
    if (existing && existing.isBlockDevice()) return new FileSink(await open(target, 'r+'), null);
    return new FileSink(null, await PendingFile.open(target, { mode: 0o644, tempPath: `${target}.netclone-partial` }));
  }

  begin(size: number): void {
    this.size = size;
  }

  async write(data: Buffer): Promise<void> {
    if (!this.fh) {
      if (!process.stdout.write(data)) await new Promise((r) => process.stdout.once('drain', r));
      this.position += data.length;
      return;
    }
    if (this.temp !== null) {
      // Skip zero blocks so the file stays sparse.
      for (let off = 0; off < data.length; off += BLOCK) {
        const block = data.subarray(off, Math.min(off + BLOCK, data.length));
        if (!isZero(block)) await this.fh.write(block, 0, block.length, this.position + off);
      }
    } else {
      await this.fh.write(data, 0, data.length, this.position);
    }
    this.position += data.length;
  }

  async hole(length: number): Promise<void> {
    if (!this.fh) {
      const zeros = Buffer.alloc(Math.min(length, 1024 * 1024));
      for (let left = length; left > 0; left -= zeros.length) await this.write(zeros.subarray(0, Math.min(left, zeros.length)));
      return;
    }
    if (this.temp === null) {
      const zeros = Buffer.alloc(Math.min(length, 1024 * 1024));
      for (let left = length; left > 0; left -= zeros.length) await this.write(zeros.subarray(0, Math.min(left, zeros.length)));
      return;
    }
    this.position += length;
  }

  async finish(): Promise<void> {
    if (this.temp !== null) {
      // Trailing holes were only skipped: the length comes from here.
      await this.temp.handle.truncate(this.size);
      await this.temp.commit();
      return;
    }
    if (!this.fh) return;
    await this.fh.sync();
    await this.fh.close();
  }

  async abort(): Promise<void> {
    if (this.temp !== null) return this.temp.abort();
    await this.fh?.close().catch(() => undefined);
  }
}
