/** The CLI's text form of a task names its transport and, for the chunk transport, the agent's progress line. */
import { describe, expect, it } from 'vitest';
import { render } from '../../src/cli/render.js';
import type { TaskRecord } from '../../src/domain/database.js';

function task(over: Partial<TaskRecord>): TaskRecord {
  return {
    id: 't1', kind: 'capture', mac: '52:54:00:00:00:01', image: 'office', state: 'running',
    createdAt: '2026-12-04T10:00:00.000Z', updatedAt: '2026-12-04T10:00:00.000Z', startedAt: null, finishedAt: null,
    reason: null, diskSerial: null, after: 'reboot', tokenHash: '', clientIp: null, disk: null,
    progress: { bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null }, result: null, log: [],
    ...over,
  };
}

describe('netclone task show (text)', () => {
  it('says the chunk transport and shows what was examined, sent and reused', () => {
    const out = render('task', task({ transport: 'chunks', progress: { bytes: 120e9, total: 500e9, percent: 24, mbps: 300, etaSeconds: 100, summary: 'examined 120 GB, sent 1.3 GB, 98.9 % reused' } }));
    expect(out).toContain('task t1: capture of office on 52:54:00:00:00:01 over chunks\n');
    expect(out).toMatch(/^progress: 24% .*; examined 120 GB, sent 1\.3 GB, 98\.9 % reused$/m);
  });

  it('a record from before the chunk transport moved its disk over NBD and has no summary', () => {
    const out = render('task', task({}));
    expect(out).toContain(' over nbd\n');
    expect(out).not.toContain('reused');
  });
});
