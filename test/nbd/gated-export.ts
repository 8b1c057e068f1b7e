/** An in-memory export whose calls a test can hold or fail, to stop a transfer at a chosen point. */
import type { ReadPiece } from '../../src/nbd/export.js';
import { MemoryExport } from './memory-export.js';

/** A MemoryExport whose writes/reads can be held until the test releases them, and whose reads can fail. */
export class GatedExport extends MemoryExport {
  /** While set, every write waits for it. */
  writeGate: Promise<void> | undefined;
  /** A read at one of these offsets waits for its promise. */
  readonly readGates = new Map<number, Promise<void>>();
  /** While set, every read throws it. */
  failRead: Error | undefined;
  /** Called as each write arrives, before the gate. */
  onWrite: (() => void) | undefined;

  override async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.onWrite?.();
    if (this.writeGate) await this.writeGate;
    return super.write(offset, data, fua);
  }

  override async read(offset: number, length: number): Promise<ReadPiece[]> {
    if (this.failRead) throw this.failRead;
    const g = this.readGates.get(offset);
    if (g) await g;
    return super.read(offset, length);
  }
}

/** A promise the test resolves when it chooses (`open`). */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}
