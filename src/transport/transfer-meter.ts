/**
 * The one place a transfer's bytes are counted. Every export a grant hands out (a task's or an
 * nbd:// URL's) runs through a meter, which counts from the NBD stream itself: the data bytes
 * that crossed the wire, and how much of the disk the transfer covered.
 */
import type { NbdExport } from '../nbd/export.js';
import { observeExport } from '../nbd/filters/observe.js';

/** Which way the transfer goes: a deploy's bytes are the ones clients read, a capture's the ones they write. */
export type TransferKind = 'deploy' | 'capture';

/** What one counted request added. */
export interface MeterStep {
  /** Data bytes that crossed the wire (holes read and ranges zeroed excluded). */
  readonly wire: number;
  /** Bytes of the disk covered: the wire bytes, plus ranges zeroed or trimmed. */
  readonly covered: number;
}

export type MeterListener = (step: MeterStep, meter: TransferMeter) => void;

export class TransferMeter {
  private wire = 0;
  private covered = 0;

  constructor(
    readonly kind: TransferKind,
    /** Called after each counted request, with what it added; the totals are on the meter. */
    private readonly listener?: MeterListener,
  ) {}

  /** Data bytes that crossed the wire so far. */
  get wireBytes(): number {
    return this.wire;
  }

  /** Bytes of the disk covered so far (data and zeroed ranges). */
  get coveredBytes(): number {
    return this.covered;
  }

  /**
   * `exp` with this meter in its stream. Only the transfer's own direction counts: the reads of a
   * capture (a client looking at what it wrote) are not what the capture moves, and a deploy's
   * export is read-only.
   */
  measure(exp: NbdExport): NbdExport {
    const count = (wire: number, covered: number): void => {
      this.wire += wire;
      this.covered += covered;
      this.listener?.({ wire, covered }, this);
    };
    if (this.kind === 'deploy') return observeExport(exp, { onRead: (n) => count(n, n) });
    return observeExport(exp, { onWrite: (n) => count(n, n), onZero: (n) => count(0, n) });
  }

  /**
   * Bytes counted outside an NBD stream: the chunk transport's request and response bodies
   * (chunk-transfer.ts), which cover no disk range by themselves (the agent reports what it examined).
   */
  add(wire: number, covered = 0): void {
    this.wire += wire;
    this.covered += covered;
    this.listener?.({ wire, covered }, this);
  }

  /** For log lines and events: "12345 bytes written over NBD (67890 bytes of disk covered)". */
  describe(): string {
    const verb = this.kind === 'deploy' ? 'read' : 'written';
    const covered = this.covered === this.wire ? '' : ` (${this.covered} bytes of disk covered)`;
    return `${this.wire} bytes ${verb} over NBD${covered}`;
  }
}
