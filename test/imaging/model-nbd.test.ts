/**
 * The data path through real clients: a seeded operation stream replayed by qemu-io over our NBD
 * server into a capture (aio writes in flight at once, write -z, discard, pattern reads checked by
 * qemu-io itself), compared with the model after commit; and the exact sequences the trust issue
 * measured on main (stale bytes in a zeroed chunk, overlapping aio writes into a stored chunk).
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { join } from 'node:path';
import { ImageStore } from '../../src/imaging/image-store.js';
import { CaptureExport } from '../../src/transport/capture-export.js';
import { nullLogger } from '../../src/lib/log.js';
import { startServer, run, type Started } from '../nbd/helpers.js';
import { tempDir, readAll } from './helpers.js';
import { applyToModel, describeOp, firstDifference, generate, type Op } from './model.js';

const KiB = 1024;
const MiB = 1024 * KiB;


/** qemu-io can only write patterns: every write gets a fill byte derived from its seed. */
function withPatterns(ops: readonly Op[]): Op[] {
  return ops.map((op) => (op.kind === 'write' && op.fill === null ? { ...op, fill: 1 + (op.seed % 255) } : op));
}

/** qemu-io commands for the stream; bursts of writes go as aio_write, drained by aio_flush. */
function qemuIoCommands(ops: readonly Op[], model: Buffer): string[] {
  const cmds: string[] = [];
  let aio = 0;
  for (const op of ops) {
    switch (op.kind) {
      case 'write':
        if (op.length <= 8192) {
          cmds.push(`aio_write -P ${op.fill} ${op.offset} ${op.length}`);
          aio++;
        } else cmds.push(`write -P ${op.fill} ${op.offset} ${op.length}`);
        break;
      case 'zero':
        cmds.push(`write -z ${op.offset} ${op.length}`);
        break;
      case 'trim':
        cmds.push(`discard ${op.offset} ${op.length}`);
        break;
      case 'flush':
        cmds.push('aio_flush', 'flush');
        aio = 0;
        break;
      case 'read': {
        // qemu-io checks a read against one pattern: only ask where the model holds one byte value.
        if (aio > 0) {
          cmds.push('aio_flush');
          aio = 0;
        }
        const want = model.subarray(op.offset, op.offset + op.length);
        if (want.every((b) => b === want[0])) cmds.push(`read -P ${want[0]} ${op.offset} ${op.length}`);
        break;
      }
    }
    applyToModel(model, op);
  }
  cmds.push('aio_flush', 'flush');
  return cmds;
}

describe('capture data path through qemu-io', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  let s: Started;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('model-nbd'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), chunkSize: 64 * KiB });
    s = await startServer({});
  });
  afterEach(async () => {
    await s.server.close();
    await store.close();
    await cleanup();
  });

  const captureExport = (name: string, size: number, maxPartialChunks?: number): CaptureExport => {
    const exp = new CaptureExport(store.beginCapture(name, { size, source: 'qemu-io', maxPartialChunks }), { logger: nullLogger() });
    s.resolver.exports.set(name, exp);
    return exp;
  };

  for (const seed of [7, 4242]) {
    it(`seed ${seed}: a generated qemu-io stream commits exactly the model's bytes`, async () => {
      const stream = generate(seed, 600, 64 * KiB, 512);
      const ops = withPatterns(stream.ops);
      const model = Buffer.alloc(stream.size);
      const cmds = qemuIoCommands(ops, model);
      const exp = captureExport(`q${seed}`, stream.size, 3);
      const r = await run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), s.url(`q${seed}`)]);
      expect(r.stdout).not.toMatch(/Pattern verification failed|error|failed/i);
      expect(r.code).toBe(0);
      await exp.whenDone();
      const got = await readAll(store, `q${seed}`);
      const d = firstDifference(got, model);
      expect(d, d >= 0 ? `first difference at ${d}; stream: ${ops.slice(0, 40).map(describeOp).join('; ')}` : '').toBe(-1);
      expect((await store.verify(`q${seed}`)).ok).toBe(true);
    });
  }

  it('a whole-chunk zero over buffered bytes, then a partial write, keeps zeros where they belong (no stale bytes)', async () => {
    // The measurement used 1 MiB chunks: chunk 1 is [1M, 2M).
    await store.close();
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
    const size = 4 * MiB;
    const exp = captureExport('stale', size);
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xaa 1M 512k', '-c', 'write -z 1M 1M', '-c', 'write -P 0x55 1056768 4k', '-c', 'write -z 0 1M', '-c', 'write -z 2M 2M', '-c', 'flush', s.url('stale')]);
    expect(r.code).toBe(0);
    await exp.whenDone();
    const want = Buffer.alloc(size);
    want.fill(0x55, 1056768, 1056768 + 4096);
    const got = await readAll(store, 'stale');
    expect(got.subarray(MiB, 2 * MiB).filter((b) => b === 0xaa).length).toBe(0);
    expect(firstDifference(got, want)).toBe(-1);
  });

  it('eight overlapping aio writes into an already stored chunk all survive, in reads and in the committed version', async () => {
    await store.close();
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
    const size = 8 * MiB;
    // Two RAM slots: filling chunks 1..7 after chunk 0 evicts (stores) chunk 0 before the aio writes.
    const exp = captureExport('aio', size, 2);
    const cmds = ['write -P 0x5a 0 1M', 'write -P 0x11 1M 7M', 'flush'];
    for (let i = 0; i < 8; i++) cmds.push(`aio_write -P ${0x61 + i} ${i * 1024} 1k`);
    cmds.push('aio_flush');
    for (let i = 0; i < 8; i++) cmds.push(`read -P ${0x61 + i} ${i * 1024} 1k`);
    cmds.push('flush');
    const r = await run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), s.url('aio')]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(r.code).toBe(0);
    await exp.whenDone();
    const want = Buffer.alloc(size, 0x11);
    want.fill(0x5a, 0, MiB);
    for (let i = 0; i < 8; i++) want.fill(0x61 + i, i * 1024, (i + 1) * 1024);
    expect(firstDifference(await readAll(store, 'aio'), want)).toBe(-1);
  });
});
