/**
 * A task's progress in the terms of the PC's disk: how much of the disk the transfer has covered
 * (read, compared, skipped as free or zero, or written) against the disk's size, and apart from
 * that the bytes on the wire. With the chunk transport most of a disk never crosses the network
 * (reused, free or zero chunks), so "data sent" alone would make a finished disk look barely begun.
 */
import { transportOf, type TaskRecord } from '../../domain/database.js';
import { formatBytes } from '../format.js';

export interface CoverageWords {
  /** "covered 93.1 GiB of 477 GiB of the disk", or for an NBD deploy what the PC has read of the image's data. */
  readonly covered: string;
  /** "1.2 GiB on the wire", or null when the server has not counted it (NBD tasks). */
  readonly wire: string | null;
  /** "98.1 % of the data already there": chunks the other side held and that did not cross the wire. */
  readonly reused: string | null;
}

export function coverageWords(task: Pick<TaskRecord, 'kind' | 'progress' | 'transport'>): CoverageWords {
  const p = task.progress;
  const of = p.total > 0 ? formatBytes(p.total) : '?';
  const c = p.chunks;
  const data = c ? c.reused + c.sent : 0;
  const reused = c && data > 0 ? `${Math.floor((c.reused / data) * 1000) / 10} % of the data already ${task.kind === 'capture' ? 'stored' : 'on the disk'}` : null;
  const wire = p.wireBytes !== undefined ? `${formatBytes(p.wireBytes)} on the wire` : null;
  // An NBD deploy's client reads only the image's data and zeroes the holes itself, unseen by the
  // server: what the server can count is the data read, against the image's data.
  if (transportOf(task) === 'nbd' && task.kind === 'deploy') return { covered: `read ${formatBytes(p.bytes)} of ${of} of the image's data`, wire, reused };
  return { covered: `covered ${formatBytes(p.bytes)} of ${of} of the disk`, wire, reused };
}
