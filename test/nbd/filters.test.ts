/**
 * The filter base (nbdkit's model): a pass-through export hands every call to the next export
 * with its arguments and returns that export's result, offers writev exactly when the next export
 * does, and a filter that overrides one call still passes every other one through.
 */
import { describe, expect, it } from 'vitest';
import { ExportError, type BlockSizes, type DetachInfo, type ExportCapabilities, type Extent, type NbdExport, type PeerInfo, type ReadPiece, type WriteZeroesOptions } from '../../src/nbd/export.js';
import { PassThroughExport } from '../../src/nbd/filters/pass-through.js';
import { observeExport } from '../../src/nbd/filters/observe.js';

interface Call {
  readonly name: string;
  readonly args: readonly unknown[];
}

const CAPS: ExportCapabilities = { readOnly: false, multiConn: true, trim: true, writeZeroes: true, fastZero: false, cache: true, blockStatus: true };
const SIZES: BlockSizes = { minimum: 1, preferred: 4096, maximum: 1 << 20 };
const PEER: PeerInfo = { connectionId: 7, address: '10.0.0.5', port: 40000 };
const DETACH: DetachInfo = { clean: true, discReceived: true, wrote: false, reason: 'disc' };
const PIECES: ReadPiece[] = [
  { kind: 'data', offset: 0, data: Buffer.from('abcd') },
  { kind: 'hole', offset: 4, length: 12 },
];
const EXTENTS: Extent[] = [{ length: 512, flags: 3 }];

/** Records every call; results are fixed values a test can compare by identity. */
class RecordingExport implements NbdExport {
  readonly calls: Call[] = [];
  description = 'recording export';
  size = 1 << 20;
  capabilities = CAPS;
  blockSizes = SIZES;
  /** The next call of this name rejects with this error. */
  failNext: { name: string; error: Error } | null = null;

  private record(name: string, ...args: unknown[]): void {
    this.calls.push({ name, args });
  }

  private async settle<T>(name: string, value: T): Promise<T> {
    const f = this.failNext;
    if (f && f.name === name) {
      this.failNext = null;
      throw f.error;
    }
    return value;
  }

  attach(peer: PeerInfo): void {
    this.record('attach', peer);
  }
  detach(peer: PeerInfo, info: DetachInfo): void {
    this.record('detach', peer, info);
  }
  read(offset: number, length: number): Promise<ReadPiece[]> {
    this.record('read', offset, length);
    return this.settle('read', PIECES);
  }
  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.record('write', offset, Buffer.from(data), fua);
    return this.settle('write', undefined);
  }
  writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    this.record('writeZeroes', offset, length, options);
    return this.settle('writeZeroes', undefined);
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    this.record('trim', offset, length, fua);
    return this.settle('trim', undefined);
  }
  flush(): Promise<void> {
    this.record('flush');
    return this.settle('flush', undefined);
  }
  cache(offset: number, length: number): Promise<void> {
    this.record('cache', offset, length);
    return this.settle('cache', undefined);
  }
  blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.record('blockStatus', offset, length);
    return this.settle('blockStatus', EXTENTS);
  }
}

class VectoredRecordingExport extends RecordingExport {
  writev(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
    this.calls.push({ name: 'writev', args: [offset, slices.map((s) => Buffer.from(s)), fua] });
    return Promise.resolve();
  }
}

/** Makes every call a test can make on an export, and checks what came back is the inner export's own result. */
async function callEverything(exp: NbdExport): Promise<void> {
  exp.attach(PEER);
  expect(await exp.read(512, 16)).toBe(PIECES);
  await exp.write(1024, Buffer.from('hello'), true);
  await exp.writeZeroes(2048, 4096, { fua: false, fastZero: true, mayTrim: false });
  await exp.trim(8192, 1024, true);
  await exp.flush();
  await exp.cache(0, 65536);
  expect(await exp.blockStatus(0, 512)).toBe(EXTENTS);
  exp.detach(PEER, DETACH);
}

const EVERYTHING: Call[] = [
  { name: 'attach', args: [PEER] },
  { name: 'read', args: [512, 16] },
  { name: 'write', args: [1024, Buffer.from('hello'), true] },
  { name: 'writeZeroes', args: [2048, 4096, { fua: false, fastZero: true, mayTrim: false }] },
  { name: 'trim', args: [8192, 1024, true] },
  { name: 'flush', args: [] },
  { name: 'cache', args: [0, 65536] },
  { name: 'blockStatus', args: [0, 512] },
  { name: 'detach', args: [PEER, DETACH] },
];

describe('PassThroughExport', () => {
  it('forwards every call with its arguments and returns the next export’s results', async () => {
    const inner = new RecordingExport();
    const filter = new PassThroughExport(inner);
    await callEverything(filter);
    expect(inner.calls).toEqual(EVERYTHING);
  });

  it('reads the next export’s properties at each access, so a change there shows through', () => {
    const inner = new RecordingExport();
    const filter = new PassThroughExport(inner);
    expect(filter.description).toBe('recording export');
    expect(filter.size).toBe(1 << 20);
    expect(filter.capabilities).toBe(CAPS);
    expect(filter.blockSizes).toBe(SIZES);
    inner.size = 4096;
    inner.description = 'grown';
    expect(filter.size).toBe(4096);
    expect(filter.description).toBe('grown');
  });

  it('has no writev when the next export has none, so the server assembles the payload and calls write()', () => {
    const filter = new PassThroughExport(new RecordingExport());
    expect(filter.writev).toBeUndefined();
    expect('writev' in filter).toBe(false);
  });

  it('forwards writev when the next export has one, with the slices as given', async () => {
    const inner = new VectoredRecordingExport();
    const filter = new PassThroughExport(inner);
    expect(typeof filter.writev).toBe('function');
    await filter.writev?.(4096, [Buffer.from('ab'), Buffer.from('cd')], false);
    expect(inner.calls).toEqual([{ name: 'writev', args: [4096, [Buffer.from('ab'), Buffer.from('cd')], false] }]);
  });

  it('passes the next export’s errors through unchanged', async () => {
    const inner = new RecordingExport();
    const filter = new PassThroughExport(inner);
    const error = new ExportError('ENOSPC', 'disk full');
    inner.failNext = { name: 'write', error };
    await expect(filter.write(0, Buffer.alloc(1), false)).rejects.toBe(error);
    inner.failNext = { name: 'blockStatus', error };
    await expect(filter.blockStatus(0, 1)).rejects.toBe(error);
  });

  it('stacks: a pass-through over a pass-through still reaches the export with every call', async () => {
    const inner = new VectoredRecordingExport();
    const filter = new PassThroughExport(new PassThroughExport(inner));
    expect(typeof filter.writev).toBe('function');
    await callEverything(filter);
    expect(inner.calls).toEqual(EVERYTHING);
  });
});

describe('a filter that overrides one call', () => {
  /** Refuses reads past the first KiB; everything else is the base's. */
  class FirstKibOnly extends PassThroughExport {
    refused = 0;
    override read(offset: number, length: number): Promise<ReadPiece[]> {
      if (offset + length > 1024) {
        this.refused++;
        return Promise.reject(new ExportError('EPERM', 'only the first KiB'));
      }
      return super.read(offset, length);
    }
  }

  it('changes that call and passes the rest through', async () => {
    const inner = new VectoredRecordingExport();
    const filter = new FirstKibOnly(inner);
    await callEverything(filter);
    expect(inner.calls).toEqual(EVERYTHING);
    await expect(filter.read(1000, 100)).rejects.toThrow('only the first KiB');
    expect(filter.refused).toBe(1);
    expect(inner.calls).toHaveLength(EVERYTHING.length);
    await filter.writev?.(0, [Buffer.from('x')], true);
    expect(inner.calls.at(-1)).toEqual({ name: 'writev', args: [0, [Buffer.from('x')], true] });
  });

  it('that watches vectored writes falls back to one joined write() when it calls the base for an export without writev', async () => {
    class JoinsAlways extends PassThroughExport {
      writeSlices(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
        return this.vectoredWrite(offset, slices, fua);
      }
    }
    const inner = new RecordingExport();
    await new JoinsAlways(inner).writeSlices(100, [Buffer.from('ab'), Buffer.from('c')], true);
    expect(inner.calls).toEqual([{ name: 'write', args: [100, Buffer.from('abc'), true] }]);
  });
});

describe('observeExport (a filter on the base)', () => {
  function counting(inner: NbdExport): { exp: NbdExport; counts: Record<string, number[]>; lifecycle: string[] } {
    const counts: Record<string, number[]> = { read: [], write: [], zero: [] };
    const lifecycle: string[] = [];
    const exp = observeExport(inner, {
      onRead: (n) => counts.read.push(n),
      onWrite: (n) => counts.write.push(n),
      onZero: (n) => counts.zero.push(n),
      onAttach: (p) => lifecycle.push(`attach ${p.connectionId}`),
      onDetach: (p, i) => lifecycle.push(`detach ${p.connectionId} ${i.reason}`),
    });
    return { exp, counts, lifecycle };
  }

  it('counts data read (not holes), written, and zeroed or trimmed, and passes every call through', async () => {
    const inner = new RecordingExport();
    const { exp, counts, lifecycle } = counting(inner);
    await callEverything(exp);
    expect(inner.calls).toEqual(EVERYTHING);
    expect(counts).toEqual({ read: [4], write: [5], zero: [4096, 1024] });
    expect(lifecycle).toEqual(['attach 7', 'detach 7 disc']);
    expect(exp.writev).toBeUndefined();
  });

  it('counts a vectored write once, by its total length, when the export has writev', async () => {
    const inner = new VectoredRecordingExport();
    const { exp, counts } = counting(inner);
    await exp.writev?.(0, [Buffer.alloc(3), Buffer.alloc(5)], false);
    expect(counts.write).toEqual([8]);
    expect(inner.calls.map((c) => c.name)).toEqual(['writev']);
  });

  it('counts nothing for a call that failed', async () => {
    const inner = new RecordingExport();
    const { exp, counts } = counting(inner);
    inner.failNext = { name: 'write', error: new ExportError('EIO', 'broken') };
    await expect(exp.write(0, Buffer.alloc(9), false)).rejects.toThrow('broken');
    inner.failNext = { name: 'read', error: new ExportError('EIO', 'broken') };
    await expect(exp.read(0, 9)).rejects.toThrow('broken');
    expect(counts).toEqual({ read: [], write: [], zero: [] });
  });
});
