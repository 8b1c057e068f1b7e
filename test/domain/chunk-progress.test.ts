/** The chunk transport's one-line progress (issue 11): what the task page and the API show. */
import { describe, expect, it } from 'vitest';
import { progressLine } from '../../src/domain/tasks.js';
import type { TaskProgress } from '../../src/domain/database.js';

const progress = (p: Partial<TaskProgress>): TaskProgress => ({ bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null, ...p });

describe('progressLine', () => {
  it('says examined, sent and reused as in the issue', () => {
    const line = progressLine({ kind: 'capture', progress: progress({ bytes: 120e9, wireBytes: 1.3e9, chunks: { reused: 989, sent: 11, zero: 5, total: 1005 } }) });
    expect(line).toBe('examined 120 GB, sent 1.3 GB, 98.9 % reused');
  });

  it('says fetched for a deploy, leaves out reuse before any data chunk, and is null without counters (NBD)', () => {
    expect(progressLine({ kind: 'deploy', progress: progress({ bytes: 512, wireBytes: 0, chunks: { reused: 0, sent: 0, zero: 1, total: 1 } }) })).toBe('examined 512 B, fetched 0 B');
    expect(progressLine({ kind: 'deploy', progress: progress({ bytes: 2_500_000, wireBytes: 999_999, chunks: { reused: 1, sent: 2, zero: 0, total: 3 } }) })).toBe('examined 2.5 MB, fetched 1 MB, 33.3 % reused');
    expect(progressLine({ kind: 'capture', progress: progress({ bytes: 10 }) })).toBeNull();
  });
});
