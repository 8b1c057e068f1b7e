/**
 * The CLI's text form of a task names its transport and, for the chunk transport, the agent's progress
 * line; that of an image shows what it knows of its disk (issue 12) and the smallest disk it fits.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { render } from '../../src/cli/render.js';
import { describeImage } from '../../src/imaging/image-details.js';
import { importStream } from '../../src/imaging/image-import.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir } from '../imaging/helpers.js';
import { BITLOCKER_NOTE, commitWithLayout, windowsLikeDisk, windowsLikeLayout } from '../lib/layout-image.js';
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

describe('netclone image show (text)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('render'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), workers: 1 });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  /** What `image show` prints for `name`: the details travel to the CLI as JSON over the control socket. */
  const shown = async (name: string): Promise<string> => render('image', JSON.parse(JSON.stringify(await describeImage(store, name))));

  it('shows the layout of a version the agent captured, how each partition was captured, and the smallest disk it fits', async () => {
    const layout = windowsLikeLayout();
    await commitWithLayout(store, 'pc', windowsLikeDisk(layout), layout);
    const out = await shown('pc');
    expect(out).toContain('layout (GPT, disk GUID 9D3C6A1E-5B2F-4C8D-A1E7-0F2B3C4D5E6F, 39.0 MiB free space not stored):\n');
    expect(out).toMatch(/^ {2}#\s+TYPE\s+NAME\/LABEL\s+FS\s+SIZE\s+USED\s+SHRINKS TO\s+CAPTURED$/m);
    expect(out).toMatch(/^ {2}1\s+EFI System\s+EFI system partition \/ SYSTEM\s+vfat\s+4\.0 MiB\s+1\.0 MiB\s+-\s+used blocks$/m);
    expect(out).toMatch(/^ {2}3\s+Microsoft basic data\s+Basic data partition \/ Windows\s+ntfs\s+40\.0 MiB\s+10\.0 MiB\s+12\.0 MiB\s+used blocks$/m);
    expect(out).toMatch(new RegExp(`^ {2}4\\s+Microsoft basic data\\s+Data\\s+bitlocker\\s+4\\.0 MiB\\s+-\\s+-\\s+whole: ${BITLOCKER_NOTE.replace(/[()]/g, '\\$&')}$`, 'm'));
    expect(out).toMatch(/^ {2}5\s+Linux swap\s+swap0\s+swap\s+4\.0 MiB\s+-\s+-\s+swap: recreated on restore$/m);
    expect(out).toMatch(/^ {2}6\s+Windows recovery environment\s+Recovery\s+ntfs\s+8\.0 MiB\s+3\.0 MiB\s+4\.0 MiB\s+used blocks$/m);
    expect(out).toContain('\n  filesystem UUIDs, partition GUIDs:\n     1  UUID 1234-ABCD  GUID 00000001-1111-2222-3333-444455556666\n     2  GUID 00000002-1111-2222-3333-444455556666\n');
    expect(out).toContain('\n     3  UUID 0123456789ABCDEF  GUID 00000003-1111-2222-3333-444455556666\n');
    expect(out).toContain('\nfits disks ≥ 34.0 MiB (35668480 bytes)\n');
    expect(out).not.toContain('partitions (');
  });

  it('a version without a layout shows the table read from its disk and fits disks of its own size', async () => {
    const disk = Buffer.alloc(4 * 1024 * 1024);
    disk[446 + 4] = 0x83;
    disk.writeUInt32LE(2048, 446 + 8);
    disk.writeUInt32LE(4096, 446 + 12);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    await importStream(store, 'plain', Readable.from([disk]), disk.length, { source: 'import' });
    const out = await shown('plain');
    expect(out).toMatch(/^partitions \(MBR\):\n {3}1 {2}Linux\s+2\.0 MiB/m);
    expect(out).toContain('\nfits disks ≥ 4.0 MiB (4194304 bytes) (captured without a layout: restored at its own size)\n');
    expect(out).not.toContain('layout (');
  });
});
